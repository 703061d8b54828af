"""The CHAI Applied Model Card of the demo release is valid against the CHAI v0.2 schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from clinical_mlops.evidence.chai import EVIDENCE_FILE, XML_FILE, build_chai, validate_chai
from clinical_mlops.evidence.facts import gather_facts

STANDARDS = (
    Path(__file__).resolve().parents[2] / "src" / "clinical_mlops" / "evidence" / "standards"
)
XMLDSIG_URL = "http://www.w3.org/TR/xmldsig-core/xmldsig-core-schema.xsd"
NS = "{https://mc.chai.org/v0.2/schema.xsd}"


def offline_schema() -> etree.XMLSchema:
    """The CHAI v0.2 schema with its xmldsig import pointed at the local W3C copy; no network."""
    text = (STANDARDS / "chai-mc-v0.2.xsd").read_text(encoding="utf-8")
    assert XMLDSIG_URL in text  # the published schema imports the W3C schema by URL
    local = (STANDARDS / "xmldsig-core-schema.xsd").resolve().as_uri()
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    doc = etree.fromstring(text.replace(XMLDSIG_URL, local).encode("utf-8"), parser)
    return etree.XMLSchema(doc)


@pytest.fixture
def card(world: dict[str, Any]) -> dict[str, Any]:
    doc = build_chai(gather_facts(world["ws"], world["release"]))
    return {"doc": doc, "xml": doc.files[XML_FILE]}


def test_demo_release_card_validates_offline_against_the_chai_schema(card: dict[str, Any]) -> None:
    schema = offline_schema()
    tree = etree.fromstring(card["xml"], etree.XMLParser(no_network=True))
    assert schema.validate(tree), [e.message for e in schema.error_log]
    assert tree.tag == f"{NS}AppliedModelCard"
    assert tree.findtext(f"{NS}BasicInfo/{NS}DeveloperContact") == (
        "To be completed by provider organisation"
    )
    results = tree.findall(
        f"{NS}KeyMetrics/{NS}UsefulnessUsabilityEfficacy/{NS}Results/{NS}MetricResult"
    )
    assert results and all(json.loads(r.findtext(f"{NS}ValueJson")) for r in results)


def test_a_card_without_model_name_is_refused_by_the_same_schema(card: dict[str, Any]) -> None:
    tree = etree.fromstring(card["xml"])
    name = tree.find(f"{NS}BasicInfo/{NS}ModelName")
    name.getparent().remove(name)
    broken = etree.tostring(tree)
    assert not offline_schema().validate(etree.fromstring(broken))
    errors = validate_chai(broken)
    assert errors and any("ModelName" in e or "ModelDeveloper" in e for e in errors)
    assert validate_chai(card["xml"]) == []


def test_every_element_of_the_card_has_pointers_or_an_owner(card: dict[str, Any]) -> None:
    companion = json.loads(card["doc"].files[EVIDENCE_FILE])
    tree = etree.fromstring(card["xml"])

    def path_of(element: Any) -> str:
        parts = []
        while element is not tree:
            parts.append(element.tag.replace(NS, ""))
            element = element.getparent()
        return "/".join(reversed(parts))

    leaves = {path_of(e) for e in tree.iter() if len(e) == 0}
    elements = companion["elements"]
    for path in leaves:
        element = path.removesuffix("/Label").removesuffix("/ValueJson")
        assert element in elements, path
    for entries in elements.values():
        for entry in entries:
            assert entry["pointers"] or entry["to_be_completed_by"], entry
