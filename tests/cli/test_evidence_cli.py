"""The evidence-plane commands: exact exit codes and JSON, bad input gives a clear error,
a non-zero exit and writes nothing."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from clinical_mlops.cli import app
from clinical_mlops.cli._common import run_guarded


def has(err: str, text: str) -> bool:
    """Return True when ``text`` is in ``err``, ignoring rich's line wrapping."""
    return "".join(text.split()) in "".join(err.split())


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path):
    monkeypatch.setenv("CLINICAL_MLOPS_ACTOR", "dr.test")
    for key in (
        "CLINICAL_MLOPS_LEDGER_URL",
        "CLINICAL_MLOPS_IDENTITY_URL",
        "CLINICAL_MLOPS_KEY_PROVIDER",
    ):
        monkeypatch.delenv(key, raising=False)
    ws = tmp_path / "ws"

    def run(*args: str, workspace: Path | None = ws) -> tuple[int, str, str]:
        argv = ["clinical-mlops", *args] + (["-w", str(workspace)] if workspace else [])
        monkeypatch.setattr(sys, "argv", argv)
        try:
            code = run_guarded(app)
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return code, out.out, out.err

    run.ws = ws  # type: ignore[attr-defined]
    return run


def test_consent_erase_verify_show_flow(cli):
    code, out, _ = cli("privacy", "consent", "MRN-55", "--purpose", "mortality_risk", "--json")
    assert code == 0
    consent = json.loads(out)
    assert consent["purposes"] == ["mortality_risk"] and consent["seq"] == 0
    assert consent["recorded_by"] == "dr.test"
    code, out, _ = cli("privacy", "erase", "MRN-55", "--reason", "request 9", "--json")
    assert code == 0
    erased = json.loads(out)
    assert erased == {
        "pseudonym": consent["pseudonym"],
        "seq": 1,
        "data_keys_destroyed": 1,
        "consents_deleted": 1,
    }
    code, out, _ = cli("audit", "show", "0", "--json")
    assert code == 0 and json.loads(out)["payload"] == "erased"
    code, out, _ = cli("audit", "verify", "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True and report["entries"] == 2
    assert report["first_bad_seq"] is None and report["checkpoints"] >= 1
    code, _, err = cli("privacy", "erase", "MRN-55")
    assert code == 2 and has(err, "no pseudonym is recorded")
    for path in cli.ws.rglob("*"):
        if path.is_file():
            assert b"MRN-55" not in path.read_bytes(), path


def test_verify_exits_non_zero_and_names_the_first_bad_seq(cli):
    for i in range(3):
        cli("privacy", "consent", f"MRN-{i}", "--purpose", "p")
    import sqlite3

    with sqlite3.connect(cli.ws / "ledger.db") as conn:
        conn.execute("UPDATE ledger_entries SET actor = 'mallory' WHERE seq = 1")
    code, out, _ = cli("audit", "verify", "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False and report["first_bad_seq"] == 1
    code, _, err = cli("audit", "verify")
    assert code == 1 and has(err, "FAILED") and has(err, "first bad seq: 1")


def test_export_bundle_verifies_without_any_database(cli, tmp_path: Path):
    for i in range(4):
        cli("privacy", "consent", f"MRN-{i}", "--purpose", "p")
    code, out, _ = cli("audit", "checkpoint", "--json", "-o", str(tmp_path / "cp.json"))
    assert code == 0 and json.loads(out)["size"] == 4
    bundle = tmp_path / "bundle.json"
    code, out, _ = cli(
        "audit",
        "export",
        "--from",
        "1",
        "--to",
        "3",
        "--since-checkpoint",
        "4",
        "-o",
        str(bundle),
        "--json",
    )
    assert code == 0 and json.loads(out)["entries"] == 2
    data = json.loads(bundle.read_text())
    ((kid, hexkey),) = [(k, v) for k, v in data["public_keys"].items()]
    code, out, _ = cli(
        "audit",
        "verify",
        "--bundle",
        str(bundle),
        "--json",
        "--public-key",
        f"{kid}={hexkey}",
        workspace=None,
    )
    assert code == 0 and json.loads(out)["ok"] is True
    code, out, _ = cli("audit", "verify", "--checkpoint", str(tmp_path / "cp.json"), "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    code, out, _ = cli("audit", "prove", "2", "--size", "4")
    assert code == 0 and json.loads(out)["size"] == 4
    code, out, _ = cli("audit", "prove", "--from", "2", "--to", "4")
    assert code == 0 and len(json.loads(out)["proof"]) >= 1


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b.pop("checkpoint"), "checkpoint must be an object"),
        (lambda b: b["entries"][0].pop("signature"), "entries[0] lacks ['signature']"),
        (
            lambda b: b["inclusion_proofs"][1].__setitem__(0, "zz"),
            "inclusion_proofs[1][0] is not hex",
        ),
        (lambda b: b.__setitem__("format", "v0"), "bundle.format is 'v0'"),
        (lambda b: b["public_keys"].__setitem__("k", "00"), "public_keys.k must be 32 bytes"),
    ],
)
def test_malformed_bundles_name_the_field(cli, tmp_path: Path, mutate, message):
    for i in range(2):
        cli("privacy", "consent", f"MRN-{i}", "--purpose", "p")
    bundle = tmp_path / "bundle.json"
    assert cli("audit", "export", "-o", str(bundle))[0] == 0
    data = json.loads(bundle.read_text())
    mutate(data)
    bundle.write_text(json.dumps(data))
    code, out, err = cli("audit", "verify", "--bundle", str(bundle), workspace=None)
    assert code == 2 and out == "" and has(err, message)


def test_not_json_bundle_and_missing_file(cli, tmp_path: Path):
    junk = tmp_path / "junk.json"
    junk.write_bytes(b"\x00\x01not json")
    code, _, err = cli("audit", "verify", "--bundle", str(junk), workspace=None)
    assert code == 2 and has(err, "not a JSON audit bundle")
    code, _, err = cli("audit", "verify", "--bundle", str(tmp_path / "nope.json"), workspace=None)
    assert code == 2 and has(err, "no such bundle file")


def test_corrupted_database_and_missing_ledger_write_nothing(cli):
    code, _, err = cli("audit", "verify", "--json")
    assert code == 2 and has(err, "no ledger database") and has(err, "nothing was created")
    assert not (cli.ws / "ledger.db").exists() and not (cli.ws / "keys").exists()
    cli.ws.mkdir(exist_ok=True)
    (cli.ws / "ledger.db").write_bytes(b"this is not sqlite" * 300)
    before = sorted(p.name for p in cli.ws.iterdir())
    for args in (("audit", "verify"), ("audit", "show", "0"), ("audit", "checkpoint")):
        code, _out, err = cli(*args)
        assert code == 2 and has(err, "ledger.db is not a readable SQLite database")
    assert sorted(p.name for p in cli.ws.iterdir()) == before


def test_wrong_key_and_missing_key_id(cli):
    cli("privacy", "consent", "MRN-1", "--purpose", "p")
    keys = cli.ws / "keys"
    index = json.loads((keys / "keyring.json").read_text())
    wrap_id = index["active"]["wrap"]
    key_file = keys / f"{wrap_id}.key"
    original = key_file.read_bytes()
    key_file.write_bytes(bytes(b ^ 1 for b in original))
    code, _, err = cli("audit", "show", "0")
    assert code == 2 and has(err, f"key '{wrap_id}' does not open")
    key_file.unlink()
    code, _, err = cli("audit", "show", "0")
    assert code == 2 and has(err, "is missing") and has(err, wrap_id)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, original)
    os.close(fd)
    os.chmod(key_file, 0o644)
    code, _, err = cli("audit", "show", "0")
    assert code == 2 and has(err, "chmod 600")
    os.chmod(key_file, 0o600)
    assert cli("audit", "show", "0")[0] == 0


def test_keys_list_and_rotate(cli):
    code, out, _ = cli("keys", "list", "--json")
    assert code == 0 and json.loads(out) == {"keys": []}  # listing creates nothing
    code, out, _ = cli("keys", "rotate", "--purpose", "wrap", "--json")
    rotated = json.loads(out)
    assert code == 0 and rotated["purpose"] == "wrap"
    code, out, _ = cli("keys", "list", "--json")
    keys = json.loads(out)["keys"]
    active = [k["key_id"] for k in keys if k["active"]]
    assert rotated["new_key_id"] in active and rotated["old_key_id"] not in active
    assert all("material" not in k for k in keys)
    code, _, err = cli("keys", "rotate", "--purpose", "banana")
    assert code == 2 and has(err, "wrap or sign")


def test_purge_command(cli):
    cli("privacy", "consent", "MRN-1", "--purpose", "p")
    code, out, _ = cli("audit", "purge", "--retention", "consent_recorded=0.0000001", "--json")
    assert code == 0 and json.loads(out)["purged"] == 1
    code, out, _ = cli("audit", "verify", "--json")
    assert code == 0 and json.loads(out)["ok"]
    code, _, err = cli("audit", "purge", "--retention", "erasure=10")
    assert code == 2 and has(err, "never purged")


def test_audit_migrate_indexes_unique_keys_once(cli):
    assert cli("privacy", "consent", "MRN-56", "--purpose", "mortality_risk", "--json")[0] == 0
    code, out, _ = cli("audit", "migrate", "--json")
    assert code == 0
    built = json.loads(out)
    assert built["built_now"] is True and built["entries"] == 1
    assert (built["duplicate_entries"], built["duplicates"]) == (0, [])
    code, _, err = cli("audit", "migrate")
    assert code == 0 and has(err, "already built: claims index v1 built")
    assert has(err, "over 1 entries: 0 keys claimed")
