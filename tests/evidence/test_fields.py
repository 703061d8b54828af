"""No evidence document carries a blank field without an owner, an unsupported value or a placeholder."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from clinical_mlops.evidence import ALL_FORMATS, FORMATS, build_documents
from clinical_mlops.evidence.facts import gather_facts
from clinical_mlops.evidence.fields import (
    OWNER_ROLES,
    PLACEHOLDERS,
    Document,
    Field,
    Pointer,
    field_problems,
)


@pytest.fixture
def documents(world: dict[str, Any]) -> list[Document]:
    return build_documents(gather_facts(world["ws"], world["release"]), ["all"])


def _values(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [*value.keys(), *(v for item in value.values() for v in _values(item))]
    if isinstance(value, list | tuple):
        return [v for item in value for v in _values(item)]
    return [value]


def test_every_registered_format_builds_a_sound_document(documents: list[Document]) -> None:
    assert [d.format for d in documents] == list(FORMATS)
    assert {"chai", "hti1"} <= set(FORMATS) and set(FORMATS) <= set(ALL_FORMATS)
    for doc in documents:
        assert field_problems(doc) == [], doc.format
        assert doc.files, doc.format
        for f in doc.missing():
            assert f.owner in OWNER_ROLES
            assert f.shown() == f"To be completed by {f.owner}"


def test_no_value_is_an_invented_placeholder(documents: list[Document]) -> None:
    for doc in documents:
        for f in doc.fields:
            if f.value is None:
                continue
            for v in _values(f.value):
                if isinstance(v, str):
                    assert v.strip().lower() not in PLACEHOLDERS, (doc.format, f.key, v)
            assert _values(f.value), (doc.format, f.key)


def test_a_blank_field_without_an_owner_fails_the_check(documents: list[Document]) -> None:
    doc = documents[0]
    broken = Field(key="extra/blank", label="A required item", value=None, owner=None)
    problems = field_problems(replace(doc, fields=[*doc.fields, broken]))
    assert problems == [
        f"{doc.format} extra/blank (A required item): blank, and no role is named to complete it"
    ]


@pytest.mark.parametrize(
    ("field", "fragment"),
    [
        (Field(key="k", label="l", value=None, owner="the intern"), "is not one of"),
        (Field.known("k", "l", "TBD", Pointer("spec", "task_spec.json#/name")), "placeholder"),
        (Field.known("k", "l", "N/A", Pointer("spec", "task_spec.json#/name")), "placeholder"),
        (Field.known("k", "l", "", Pointer("spec", "task_spec.json#/name")), "placeholder"),
        (Field.known("k", "l", {"a": ""}, Pointer("spec", "task_spec.json#/name")), "placeholder"),
        (Field.known("k", "l", "0.87"), "without a pointer"),
        (Field.known("k", "l", "0.87", Pointer("hearsay", "somewhere")), "not a valid pointer"),
    ],
)
def test_unsupported_fields_are_named(field: Field, fragment: str) -> None:
    doc = Document(
        format="chai", title="t", release="r@1", as_of="2026-01-01T00:00:00Z", fields=[field]
    )
    problems = field_problems(doc)
    assert len(problems) == 1 and fragment in problems[0]


def test_duplicate_keys_are_named() -> None:
    p = Pointer("spec", "task_spec.json#/name")
    doc = Document(
        format="hti1",
        title="t",
        release="r@1",
        as_of="2026-01-01T00:00:00Z",
        fields=[Field.known("hti1/1", "a", "x", p), Field.known("hti1/1", "b", "y", p)],
    )
    assert field_problems(doc) == ["hti1 hti1/1 (b): duplicate key"]
