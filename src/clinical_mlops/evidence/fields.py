"""The fields every evidence document is made of: a value, where it comes from, or who owes it.

A :class:`Field` is either *known* — a value with at least one :class:`Pointer` to the
evidence it was read from (a bundle file and its SHA-256 from the signed manifest, a
ledger entry by seq, a registry record, a monitoring window, the task spec, the
workspace) — or *to be completed* by a named role (:data:`OWNER_ROLES`), with its value
``None``. Nothing in between: a document never carries an invented value ("TBD",
"N/A", an empty string), and :func:`field_problems` lists every field that breaks the
rule, so a build or a test can refuse the document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clinical_mlops.vocabulary import Role

__all__ = [
    "OWNER_ROLES",
    "PLACEHOLDERS",
    "POINTER_KINDS",
    "Document",
    "Field",
    "Pointer",
    "field_problems",
]

#: where a value may come from
POINTER_KINDS = frozenset({"bundle", "ledger", "registry", "monitoring", "spec", "workspace"})

#: the roles a document may name as the owner of a field the project cannot know: the
#: registry's governance roles plus the organisation's own
OWNER_ROLES: frozenset[str] = frozenset(
    {r.value for r in Role}
    | {
        "provider organisation",
        "deployer (hospital)",
        "data protection officer",
        "clinical safety officer",
        "regulatory affairs",
    }
)

#: values that stand for "unknown" without saying who must supply it; refused in a
#: document (compared case-insensitively, after stripping)
PLACEHOLDERS = frozenset(
    {"", "tbd", "tba", "todo", "n/a", "na", "none", "null", "unknown", "-", "?", "xxx", "..."}
)


@dataclass(frozen=True)
class Pointer:
    """Where a value comes from, precisely enough for an auditor to find and check it.

    ``kind`` is one of :data:`POINTER_KINDS`; ``ref`` names the place inside it
    (``report.json#/test/auroc``, ``seq 42 (approval)``, ``task_spec.json#/features/0``);
    ``sha256`` is the bundle file's hash from the signed manifest, or the ledger entry's
    leaf hash, when there is one.
    """

    kind: str
    ref: str
    sha256: str | None = None

    def text(self) -> str:
        """Return the pointer as one line a reader can follow."""
        digest = f" (sha256 {self.sha256[:12]}…)" if self.sha256 else ""
        if self.kind == "bundle":
            file, _, path = self.ref.partition("#")
            return f"bundle {file}{digest}" + (f" #{path}" if path else "")
        return f"{self.kind} {self.ref}{digest}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "ref": self.ref, "sha256": self.sha256, "text": self.text()}


@dataclass(frozen=True)
class Field:
    """One item of a document: its value and pointers, or the role who must complete it."""

    key: str
    label: str
    value: Any
    pointers: tuple[Pointer, ...] = ()
    owner: str | None = None
    note: str | None = None

    @classmethod
    def known(
        cls, key: str, label: str, value: Any, *pointers: Pointer, note: str | None = None
    ) -> Field:
        """Return a field whose value was read from the evidence ``pointers`` name."""
        return cls(key=key, label=label, value=value, pointers=tuple(pointers), note=note)

    @classmethod
    def to_complete(cls, key: str, label: str, owner: str, note: str | None = None) -> Field:
        """Return a field the project cannot know: ``owner`` (a role) must complete it."""
        return cls(key=key, label=label, value=None, owner=owner, note=note)

    @property
    def missing(self) -> bool:
        """True when the value is unknown (``None``): someone must complete it."""
        return self.value is None

    def shown(self) -> str:
        """Return the value as text, or ``To be completed by <owner>`` when it is unknown."""
        if self.value is None:
            return f"To be completed by {self.owner or 'an unnamed owner'}"
        if isinstance(self.value, float):
            return f"{self.value:.4g}"
        if isinstance(self.value, list | tuple):
            return "; ".join(str(v) for v in self.value)
        if isinstance(self.value, dict):
            return "; ".join(f"{k}: {v}" for k, v in self.value.items())
        return str(self.value)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "value": self.value,
            "shown": self.shown(),
            "pointers": [p.to_json() for p in self.pointers],
            "owner": self.owner,
            "note": self.note,
        }


@dataclass
class Document:
    """One evidence document of a release: its fields and its rendered files."""

    format: str
    title: str
    release: str
    as_of: str
    fields: list[Field]
    files: dict[str, bytes] = field(default_factory=dict)

    def missing(self) -> list[Field]:
        """Return the fields someone must still complete, in document order."""
        return [f for f in self.fields if f.missing]

    def field(self, key: str) -> Field:
        """Return the field ``key``; KeyError naming it when the document has none."""
        for f in self.fields:
            if f.key == key:
                return f
        raise KeyError(f"{self.format}: no field {key!r}")


def _placeholder(value: Any) -> str | None:
    """Return the placeholder text found in ``value`` (recursively), else None."""
    if isinstance(value, str):
        return value if value.strip().lower() in PLACEHOLDERS else None
    if isinstance(value, dict):
        for k, v in value.items():
            if (found := _placeholder(k) if isinstance(k, str) else None) is not None:
                return found
            if v is not None and (found := _placeholder(v)) is not None:
                return found
        return None
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        for v in value:
            if v is not None and (found := _placeholder(v)) is not None:
                return found
    return None


def field_problems(doc: Document) -> list[str]:
    """Return what is wrong with ``doc``'s fields, one line each (empty: the document is sound).

    A field is wrong when its value is unknown and no owner from :data:`OWNER_ROLES` is
    named, when a known value has no pointer (or a pointer of an unknown kind), when a
    value is a placeholder (``TBD``, ``N/A``, an empty string or list), or when its key
    repeats another field's.
    """
    problems: list[str] = []
    seen: set[str] = set()
    for f in doc.fields:
        where = f"{doc.format} {f.key} ({f.label})"
        if f.key in seen:
            problems.append(f"{where}: duplicate key")
        seen.add(f.key)
        if f.value is None:
            if f.owner is None:
                problems.append(f"{where}: blank, and no role is named to complete it")
            elif f.owner not in OWNER_ROLES:
                problems.append(f"{where}: owner {f.owner!r} is not one of {sorted(OWNER_ROLES)}")
            continue
        if (found := _placeholder(f.value)) is not None:
            problems.append(
                f"{where}: value {found!r} is a placeholder; leave it unknown with an owner"
            )
        if not f.pointers:
            problems.append(f"{where}: a known value without a pointer to its evidence")
        for p in f.pointers:
            if p.kind not in POINTER_KINDS or not p.ref.strip():
                problems.append(f"{where}: pointer {p.kind!r} {p.ref!r} is not a valid pointer")
    return problems
