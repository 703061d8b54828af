"""ODCS v3 data-contract export: valid against the published JSON Schema, true to the contract."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from open_data_contract_standard.model import OpenDataContractStandard

from clinical_mlops.application.walkthrough import DEMO_PEOPLE, govern_demo_release
from clinical_mlops.registry.registry import Registry
from clinical_mlops.tasks import load_task
from clinical_mlops.workspace import Workspace

SCHEMA = Path(__file__).parents[1] / "standards" / "odcs-json-schema-v3.1.0.json"
Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def released(trained: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    ws = Workspace.open(tmp_path_factory.mktemp("odcs"))
    shutil.copytree(trained[0] / "artifacts", ws.root / "artifacts", dirs_exist_ok=True)
    shown = govern_demo_release(ws, model_version=trained[1])
    return {"ws": ws, "release": shown["version"], "view": shown}


def _export(cli: Cli, ws: Workspace, target: str, out: Path) -> dict[str, Any]:
    code, _, err = cli("export", "odcs", target, "--out", str(out), "--workspace", str(ws.root))
    assert code == 0, err
    return dict(yaml.safe_load(out.read_text(encoding="utf-8")))


def _validate(doc: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]
    # The Bitol document model (extra keys forbidden at the top) reads it back whole.
    model = OpenDataContractStandard.model_validate(doc)
    assert model.apiVersion == doc["apiVersion"] and model.id == doc["id"]


def test_release_contract_is_valid_odcs_and_states_the_release(
    released: dict[str, Any], tmp_path: Path, cli: Cli
) -> None:
    ws, version = released["ws"], released["release"]
    doc = _export(cli, ws, version, tmp_path / "release.odcs.yaml")
    _validate(doc)
    assert doc["apiVersion"] == "v3.1.0" and doc["kind"] == "DataContract"
    assert doc["version"] == version and doc["status"] == "active"
    assert set(doc["description"]) >= {"purpose", "usage", "limitations"}
    spec = load_task("icu_mortality_48h")
    features = next(o for o in doc["schema"] if o["name"] == "features")
    by_name = {p["name"]: p for p in features["properties"]}
    # Exactly the identifier and the approved features, in the spec's order.
    assert list(by_name) == ["stay_id", *(f.name for f in spec.approved_features)]
    assert by_name["stay_id"]["unique"] is True and by_name["stay_id"]["required"] is True
    assert by_name["stay_id"]["classification"] == "restricted"
    lactate = by_name["lactate"]
    assert (lactate["logicalType"], lactate["physicalType"], lactate["required"]) == (
        "number",
        "double",
        False,
    )
    assert lactate["logicalTypeOptions"] == {"minimum": 0.1, "maximum": 30.0}
    rules = {q["id"]: q for q in lactate["quality"]}
    assert "lactate < 0.1 OR lactate > 30" in rules["features-lactate-range"]["query"]
    # The missingness limit is the reference profile's plus the monitored increase.
    with Registry.open(ws) as reg:
        profile = reg.bundle(version).profile()
    expected = (profile.features["lactate"].missing_fraction + 0.10) * 100
    assert rules["features-lactate-missing"]["mustBeLessOrEqualTo"] == pytest.approx(
        expected, abs=0.01
    )
    sex = by_name["sex"]
    assert sex["classification"] == "restricted"  # a protected attribute
    (cats,) = [q for q in sex["quality"] if q["metric"] == "invalidValues"]
    assert cats["arguments"]["validValues"] == ["F", "M"]
    assert by_name["ventilation"]["physicalType"] == "int8"
    # Team: the author and the three approvers, each in their role.
    members = {(m["username"], m["role"]) for m in doc["team"]["members"]}
    people = {p: r for p, (r, _) in DEMO_PEOPLE.items()}
    assert {u for u, r in members if r.endswith("approver")} == {
        p for p, r in people.items() if r in ("clinical", "compliance", "engineering")
    } - {u for u, r in members if r == "author"}
    assert len([m for m in members if m[1] == "author"]) == 1
    (server,) = doc["servers"]
    assert server["type"] == "local" and server["format"] == "parquet"
    assert Path(server["path"]).parent.is_dir()


def test_the_declared_types_are_those_of_the_snapshot_files(
    released: dict[str, Any], tmp_path: Path, cli: Cli
) -> None:
    import pyarrow.parquet as pq

    doc = _export(cli, released["ws"], released["release"], tmp_path / "c.odcs.yaml")
    folder = Path(doc["servers"][0]["path"]).parent
    arrow = {t: t for t in ("double", "int8", "int32", "int64", "string")}
    for obj in doc["schema"]:
        schema = pq.read_schema(folder / obj["physicalName"])
        declared = {p["name"]: p["physicalType"] for p in obj["properties"]}
        # Arrow reads a Parquet UTF-8 column back as string or large_string: both are strings.
        actual = {
            n: str(schema.field(n).type).removeprefix("large_")
            for n in schema.names
            if n in declared
        }
        assert set(declared) <= set(schema.names), set(declared) - set(schema.names)
        assert actual == {n: arrow[t] for n, t in declared.items()}


def test_task_contract_is_a_valid_draft_without_release_facts(
    released: dict[str, Any], tmp_path: Path, cli: Cli
) -> None:
    doc = _export(cli, released["ws"], "icu_mortality_48h", tmp_path / "task.odcs.yaml")
    _validate(doc)
    assert doc["status"] == "draft" and doc["version"] == "1.0.0"
    assert "team" not in doc and "servers" not in doc
    props = doc["schema"][0]["properties"]
    assert not any(q["id"].endswith("-missing") for p in props for q in p.get("quality", []))


def test_an_unknown_target_is_one_clear_line(
    released: dict[str, Any], tmp_path: Path, cli: Cli
) -> None:
    out = tmp_path / "none.odcs.yaml"
    code, stdout, err = cli(
        "export", "odcs", "no-such-release", "--out", str(out), "-w", str(released["ws"].root)
    )
    assert code == 2 and stdout == ""
    assert "'no-such-release' is not registered" in err
    assert "nor is 'no-such-release' a built-in task" in err
    assert not out.exists()
