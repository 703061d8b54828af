"""Checkpoints that leave the building: signed notes, a live witness, ``audit verify --witness``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clinical_mlops.application.witness import init_witness, ledger_vkey
from clinical_mlops.errors import WitnessRefused
from clinical_mlops.ledger import Ledger
from clinical_mlops.ledger.note import Note, NoteBody, key_hash, parse_vkey, raw_public
from clinical_mlops.ledger.witness import Witness, WitnessClient
from clinical_mlops.workspace import Workspace

CLI = [sys.executable, "-m", "clinical_mlops"]
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}


def test_signed_note_verifies_the_specs_published_example():
    # c2sp.org/signed-note, "Example": a vkey and the note it verifies.
    verifier = parse_vkey("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k")
    note = Note.parse(
        "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6Tf"
        "Xppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
    )
    assert note.verified_by(verifier) is not None
    assert (
        verifier.vkey() == "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
    )


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Workspace, Path, str, str]]:
    """A workspace ledger with a live witness process pinned to its key."""
    ws = Workspace.locate(tmp_path / "ws")
    with Ledger.open(ws) as ledger:
        for i in range(5):
            ledger.append(type="training_run", actor="pipeline", payload={"run_id": f"r{i}"})
        vkey = ledger_vkey(ledger)
    state = tmp_path / "witness"
    witness_vkey = init_witness(state, name="audit.example/w1", logs=[vkey])
    port = _port()
    proc = subprocess.Popen(
        [*CLI, "witness", "serve", "--state", str(state), "--port", str(port)],
        env=ENV,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{url}/{'0' * 64}/checkpoint", timeout=1)
            except urllib.error.HTTPError:
                break
            except OSError:
                time.sleep(0.1)
        yield ws, state, url, witness_vkey
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        assert proc.stderr is not None
        proc.stderr.close()


def _checkpoint(ws: Workspace, url: str) -> dict:
    (ws.root / "ledger-witnesses.json").write_text(f'{{"witnesses": ["{url}"]}}')
    with Ledger.open(ws) as ledger:
        cp = ledger.checkpoint(witness="no")
        outcomes = ledger.offer_to_witnesses()
        return {"cp": cp, "note": ledger.checkpoint_note(cp), "outcomes": outcomes}


def test_live_witness_cosigns_and_refuses_inconsistent_checkpoints(world, tmp_path):
    ws, state, url, witness_vkey = world
    first = _checkpoint(ws, url)
    assert first["outcomes"][0]["status"] == "cosigned", first["outcomes"]
    held = Witness(state).latest(first["cp"].note_origin)
    assert held is not None and Note.parse(held).text == Note.parse(first["note"]).text
    client = WitnessClient(url)
    size = first["cp"].size
    with Ledger.open(ws) as ledger:
        key_id, signer = ledger.provider.signer()
        public = ledger.provider.public_keys()[key_id]
        origin = first["cp"].note_origin

        def signed(body: NoteBody, key=signer, pub=public) -> str:
            sig = key.sign(body.text().encode())
            kid = key_hash(origin, 0x01, raw_public(pub))
            return Note(body.text(), ((origin, kid + sig),)).format()

        old_body = NoteBody.parse(Note.parse(first["note"]).text)
        fork = NoteBody(origin, size, bytes(32), old_body.extensions)
        smaller = NoteBody(
            origin,
            size - 1,
            ledger.consistency_proof(1, size - 1)["new_root"]
            and bytes.fromhex(ledger.consistency_proof(1, size - 1)["new_root"]),
            old_body.extensions,
        )
        grown = NoteBody(origin, size + 3, bytes(range(32)), old_body.extensions)
        stranger = Ed25519PrivateKey.generate()
        cases = [
            ("fork", size, [], signed(fork), 422, "forked"),
            ("smaller", size, [], signed(smaller), 400, "larger than"),
            ("bad proof", size, [bytes(32)] * 2, signed(grown), 422, "does not verify"),
            ("other key", size, [], signed(grown, stranger, stranger.public_key()), 403, "pinned"),
            ("stale", 1, [], signed(grown), 409, ""),
        ]
    for what, old, proof, note, status, _says in cases:
        with pytest.raises(WitnessRefused) as refused:
            client.add_checkpoint(old, proof, note)
        assert refused.value.status == status, (what, refused.value)
        if status == 409:
            assert refused.value.latest_size == size
        assert Witness(state).latest(origin) == held, f"{what} changed the witness's state"
    reasons = [r["reason"] for r in Witness(state).refusals()]
    assert len(reasons) == len(cases)
    for (what, *_, expected), reason in zip(cases, reasons, strict=True):
        assert expected in reason, (what, reason)


def _verify(ws: Workspace, url: str, vkey: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *CLI,
            "audit",
            "verify",
            "--workspace",
            str(ws.root),
            "--witness",
            url,
            "--witness-key",
            vkey,
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_audit_verify_with_witness_catches_a_rollback_of_database_and_log(world, tmp_path):
    ws, _state, url, witness_vkey = world
    _checkpoint(ws, url)
    saved = tmp_path / "saved"
    saved.mkdir()
    for name in ("ledger.db", "ledger-checkpoints.jsonl"):
        shutil.copy(ws.root / name, saved / name)
    with Ledger.open(ws) as ledger:
        for i in range(4):
            ledger.append(type="training_run", actor="pipeline", payload={"run_id": f"s{i}"})
    later = _checkpoint(ws, url)
    assert later["outcomes"][0]["status"] == "cosigned"
    ok = _verify(ws, url, witness_vkey)
    assert ok.returncode == 0, ok.stderr
    for name in ("ledger.db", "ledger-checkpoints.jsonl"):
        for extra in ("-wal", "-shm"):
            (ws.root / f"{name}{extra}").unlink(missing_ok=True)
        shutil.copy(saved / name, ws.root / name)
    plain = subprocess.run(
        [*CLI, "audit", "verify", "--workspace", str(ws.root)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert plain.returncode == 0, "the rolled-back pair is self-consistent without a witness"
    caught = _verify(ws, url, witness_vkey)
    assert caught.returncode == 1
    assert "[witness]" in caught.stderr and "rolled back together" in caught.stderr


def test_audit_verify_with_witness_catches_a_tail_cut(world, tmp_path):
    import sqlite3

    ws, _state, url, witness_vkey = world
    first = _checkpoint(ws, url)
    size = first["cp"].size
    with sqlite3.connect(ws.root / "ledger.db") as db:
        db.execute("DELETE FROM ledger_entries WHERE seq >= ?", (size - 2,))
        db.execute("DELETE FROM ledger_checkpoints WHERE size > ?", (size - 2,))
        db.execute("DELETE FROM ledger_chunks")
    log = ws.root / "ledger-checkpoints.jsonl"
    log.write_text(
        "".join(
            line + "\n" for line in log.read_text().splitlines() if f'"size": {size},' not in line
        )
    )
    caught = _verify(ws, url, witness_vkey)
    assert caught.returncode == 1
    assert f"cosigned a checkpoint of {size} entries" in caught.stderr
    wrong_key = _verify(ws, url, Witness(_state).vkey.replace("audit.example/w1", "w2", 1))
    assert wrong_key.returncode != 0
