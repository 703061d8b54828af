"""Typed documents: a validation report or reference profile whose keys differ from the
model its writer and readers share is refused where it is loaded, naming file and field."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clinical_mlops.cli import app
from clinical_mlops.cli._common import run_guarded
from clinical_mlops.errors import ClinicalMlopsError
from clinical_mlops.governance.policy import gate_evidence, gate_metrics
from clinical_mlops.hashing import canonical_json, sha256_bytes, sha256_file
from clinical_mlops.monitoring.windows import MonitorReference
from clinical_mlops.privacy.keys import provider_for_workspace
from clinical_mlops.registry.bundle import (
    MANIFEST,
    SIGNATURE,
    Bundle,
    _signing_message,
    build_bundle,
    load_bundle,
)
from clinical_mlops.workspace import Workspace


def _rename(doc: dict[str, Any], path: tuple[str, ...], new: str) -> None:
    """Rename the key at ``path`` (a tuple of keys) to ``new``, keeping its value."""
    *parents, last = path
    node = doc
    for key in parents:
        node = node[key]
    node[new] = node.pop(last)


def _edit_json(file: Path, edit: Callable[[dict[str, Any]], None], *, canonical: bool) -> None:
    doc = json.loads(file.read_text(encoding="utf-8"))
    edit(doc)
    if canonical:
        file.write_bytes(canonical_json(doc))
    else:
        file.write_text(json.dumps(doc, sort_keys=True, indent=2) + "\n", encoding="utf-8")


def _resign(ws: Workspace, bundle: Bundle, clock: Any) -> Bundle:
    """Re-seal a bundle after an edit with this workspace's own signing key.

    Stands for a bundle written by a release whose writer named a key differently: the
    signature is genuine, so only the document check can notice.
    """
    folder = bundle.path
    files = {name: sha256_file(folder / name) for name in bundle.manifest["files"]}
    manifest = canonical_json({"format": bundle.manifest["format"], "files": files})
    (folder / MANIFEST).write_bytes(manifest)
    signature = dict(bundle.signature) | {"manifest_sha256": sha256_bytes(manifest)}
    key_id, private = provider_for_workspace(ws).signer()
    assert key_id == signature["key_id"]
    signature["signature"] = private.sign(_signing_message(signature)).hex()
    (folder / SIGNATURE).write_bytes(canonical_json(signature))
    return load_bundle(ws, folder, clock=clock)


@pytest.fixture
def built(fresh_workspace, trained, clock):
    ws = fresh_workspace("typed")
    return ws, build_bundle(ws, model_version=trained[1], author="eli", clock=clock)


def test_a_report_with_a_renamed_key_is_refused_when_bundled(fresh_workspace, trained, clock):
    ws = fresh_workspace("renamed")
    report = ws.models_dir / trained[1] / "report.json"
    _edit_json(report, lambda d: _rename(d, ("test", "auroc"), "auroc_value"), canonical=False)
    with pytest.raises(ClinicalMlopsError) as refused:
        build_bundle(ws, model_version=trained[1], author="eli", clock=clock)
    message = str(refused.value)
    assert str(report) in message
    assert "test.auroc:" in message and "test.auroc_value:" in message
    assert not any((ws.artifacts_dir / "bundles").glob("icu_mortality_48h-*"))


def test_report_cli_names_the_file_and_the_missing_field(
    fresh_workspace, trained, monkeypatch, capsys
):
    ws = fresh_workspace("cli")
    report = ws.models_dir / trained[1] / "report.json"
    _edit_json(
        report,
        lambda d: _rename(d, ("subgroups", "sex=Male", "auroc"), "AUROC"),
        canonical=False,
    )
    monkeypatch.setattr(sys, "argv", ["clinical-mlops", "report", trained[1], "-w", str(ws.root)])
    try:
        code = run_guarded(app)
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = "".join(capsys.readouterr().err.split())
    assert code == 2
    assert "".join(str(report).split()) in err
    assert "subgroups.sex=Male.auroc:Fieldrequired" in err


def test_a_signed_report_with_a_renamed_key_fails_at_load_not_in_a_gate(built, clock):
    ws, bundle = built
    _edit_json(
        bundle.path / "report.json",
        lambda d: _rename(d, ("baseline", "auroc"), "baseline_auroc"),
        canonical=False,
    )
    bundle = _resign(ws, bundle, clock)
    with pytest.raises(ClinicalMlopsError, match=r"report\.json[\s\S]*baseline\.auroc: Field"):
        gate_metrics(bundle)


def test_a_signed_profile_with_a_renamed_key_is_refused_by_the_monitor(built, clock):
    ws, bundle = built
    profile = bundle.path / "reference_profile.json"
    feature = next(iter(json.loads(profile.read_text(encoding="utf-8"))["features"]))
    _edit_json(
        profile,
        lambda d: _rename(d, ("features", feature, "missing_fraction"), "missing_share"),
        canonical=True,
    )
    bundle = _resign(ws, bundle, clock)
    where = rf"reference_profile\.json[\s\S]*features\.{feature}\.missing_fraction: Field required"
    with pytest.raises(ClinicalMlopsError, match=where):
        MonitorReference.from_bundle(bundle, release="v-renamed")
    with pytest.raises(ClinicalMlopsError, match=where):
        gate_evidence(bundle)


def test_a_signed_profile_missing_its_alert_rates_is_refused_by_the_monitor(built, clock):
    ws, bundle = built
    _edit_json(
        bundle.path / "reference_profile.json",
        lambda d: d.pop("alerts_per_100"),
        canonical=True,
    )
    bundle = _resign(ws, bundle, clock)
    with pytest.raises(ClinicalMlopsError, match=r"alerts_per_100: Field required"):
        MonitorReference.from_bundle(bundle, release="v-missing")


def test_documents_round_trip_to_the_bytes_that_were_signed(built):
    from clinical_mlops.evaluation.report import canonical_json as report_json

    _, bundle = built
    assert (
        report_json(bundle.report().to_json()).encode()
        == (bundle.path / "report.json").read_bytes()
    )
    assert (
        canonical_json(bundle.profile().to_json())
        == (bundle.path / "reference_profile.json").read_bytes()
    )
