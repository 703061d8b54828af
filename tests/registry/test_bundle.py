"""Release bundles: any changed byte, a foreign workspace, a wrong key or an expired
signature refuses to load, naming the rule; tar export round-trips."""

from __future__ import annotations

import json
import shutil
import tarfile
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clinical_mlops.clock import FixedClock
from clinical_mlops.errors import BundleExpired, BundleForeign, BundleSignatureInvalid
from clinical_mlops.hashing import canonical_json
from clinical_mlops.registry.bundle import (
    _signing_message,
    build_bundle,
    export_bundle,
    import_bundle,
    load_bundle,
)


@pytest.fixture
def built(fresh_workspace, trained, clock):
    ws = fresh_workspace("b")
    return ws, build_bundle(ws, model_version=trained[1], author="eli", clock=clock)


def test_bundle_holds_every_promised_file_and_no_pickle(built):
    _, b = built
    names = set(b.manifest["files"])
    assert {
        "model.json",
        "preprocess.json",
        "calibrator.json",
        "conformal.json",
        "explanation.json",
        "lineage.json",
        "report.json",
        "report.html",
        "model_card.md",
        "feature_schema.json",
        "snapshot_manifest.json",
        "reference_profile.json",
        "deployment.json",
        "release.json",
    } <= names
    assert not any(n.endswith((".pkl", ".pickle", ".joblib")) for n in names)
    profile = b.read_json("reference_profile.json")
    assert profile["alerts_per_100"]["0.01"] >= profile["alerts_per_100"]["0.99"]
    assert abs(sum(profile["score"]["fractions"]) - 1) < 1e-4
    assert b.threshold == 0.4


@pytest.mark.parametrize(
    "name", ["model.json", "calibrator.json", "report.json", "deployment.json", "MANIFEST.json"]
)
def test_any_changed_byte_refuses_to_load(built, clock, name):
    ws, b = built
    path = b.path / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x20
    path.write_bytes(bytes(data))
    with pytest.raises(
        BundleSignatureInvalid,
        match="refusing to load|changed after signing|not valid JSON|differs from the signed manifest",
    ):
        load_bundle(ws, b.path, clock=clock)


def test_added_or_removed_file_refuses_to_load(built, clock):
    ws, b = built
    (b.path / "extra.json").write_text("{}")
    with pytest.raises(BundleSignatureInvalid, match=r"added: \['extra.json'\]"):
        load_bundle(ws, b.path, clock=clock)
    (b.path / "extra.json").unlink()
    (b.path / "conformal.json").unlink()
    with pytest.raises(BundleSignatureInvalid, match=r"missing: \['conformal.json'\]"):
        load_bundle(ws, b.path, clock=clock)


def test_expired_signature_refuses(built, clock):
    ws, b = built
    late = FixedClock(clock.now() + timedelta(days=731))
    with pytest.raises(BundleExpired, match="signature expired"):
        load_bundle(ws, b.path, clock=late)


def test_wrong_key_signature_refuses(built, clock):
    ws, b = built
    sig = json.loads((b.path / "SIGNATURE.json").read_text())
    sig["key_id"] = "sign-elsewhere"
    sig["signature"] = Ed25519PrivateKey.generate().sign(_signing_message(sig)).hex()
    (b.path / "SIGNATURE.json").write_bytes(canonical_json(sig))
    with pytest.raises(BundleSignatureInvalid, match="does not hold \\(wrong key\\)"):
        load_bundle(ws, b.path, clock=clock)
    sig["key_id"] = b.signature["key_id"]
    (b.path / "SIGNATURE.json").write_bytes(canonical_json(sig))
    with pytest.raises(BundleSignatureInvalid, match="signature does not verify"):
        load_bundle(ws, b.path, clock=clock)


def test_bundle_from_another_workspace_refuses(built, fresh_workspace, clock):
    _, b = built
    other = fresh_workspace("other")
    with pytest.raises(BundleForeign, match="not this workspace"):
        load_bundle(other, b.path, clock=clock)


def test_tar_export_round_trips_and_tampered_archive_refuses(built, clock, tmp_path):
    ws, b = built
    archive = export_bundle(b, tmp_path)
    again = export_bundle(b, tmp_path / "again.tar.gz")
    assert archive.read_bytes() == again.read_bytes()
    shutil.rmtree(b.path)
    restored = import_bundle(ws, archive, clock=clock)
    assert restored.sha256 == b.sha256
    with tarfile.open(archive) as tar:
        members = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers()}
    members["model.json"] = members["model.json"].replace(b"0", b"1", 1)
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        for name, data in members.items():
            import io

            info = tarfile.TarInfo(f"x/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(BundleSignatureInvalid, match="model.json does not match"):
        import_bundle(ws, bad, clock=clock)
