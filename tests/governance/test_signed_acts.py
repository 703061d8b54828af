"""Acts bound to verified people: on the command line a governed act is proven by a signature
of exactly that act with the person's own registered SSH Ed25519 key.

One key cannot approve as two people; three keys of three people approve a release; a
signature over another act (another release, role, decision or reason) is refused and
nothing is recorded; ``--as`` without proof is refused; one key belongs to one person,
held by the store; the signatures are the SSHSIG of ``ssh-keygen -Y sign``/``verify``, both
ways; the approval's ledger entry carries the identity (key fingerprint as subject).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from clinical_mlops.application.walkthrough import govern_demo_release
from clinical_mlops.cli import app
from clinical_mlops.cli._common import run_guarded
from clinical_mlops.governance.board import Governance
from clinical_mlops.ledger import Ledger
from clinical_mlops.registry.registry import Registry
from clinical_mlops.workspace import Workspace

CLIN, COMP, AUTHOR, ENG = (
    "demo.dr.lena.ortiz",
    "demo.sam.okafor",
    "demo.alex.kim",
    "demo.priya.nair",
)
Cli = Callable[..., tuple[int, str]]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run the command line as a user would: return (exit code, stdout + stderr)."""

    def run(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["clinical-mlops", *args])
        try:
            code = run_guarded(app)
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return code, out.out + " ".join(out.err.split())

    return run


def _key(ws: Workspace, person: str) -> str:
    """The demo person's private key, made in the workspace by the demo."""
    return str(ws.root / "demo-people" / f"{person}_ed25519")


def _fingerprint(public_key: Path) -> str:
    """The key's fingerprint as ssh-keygen prints it."""
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(public_key)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()[1]


def _approvals(ws: Workspace, version: str) -> list[dict[str, Any]]:
    with Ledger.open(ws) as led:
        return [
            {"actor": v.entry.actor, **(v.payload or {})}
            for v in led.read_from(0, types=("approval",))
            if (v.payload or {}).get("release") == version
        ]


def _candidate(cli: Cli, ws: Workspace, model_version: str) -> str:
    """A second release of the task, taken to clinically_reviewed with signed acts."""
    root = str(ws.root)
    code, out = cli(
        "registry", "bundle", model_version, "--threshold", "0.2", "--as", AUTHOR, "--json",
        "-w", root,
    )  # fmt: skip
    assert code == 0, out
    code, out = cli(
        "registry", "register", json.loads(out)["path"], "--as", AUTHOR, "--json", "-w", root
    )
    assert code == 0, out
    v2 = str(json.loads(out)["version"])
    code, out = cli("registry", "risks", v2, "--json", "-w", root)
    assert code == 0, out
    for risk in json.loads(out)["risks"]:
        code, err = cli(
            "registry", "acknowledge", v2, "--risk", risk["id"], "--reason", "accepted",
            "--as", CLIN, "--key", _key(ws, CLIN), "-w", root,
        )  # fmt: skip
        assert code == 0, err
    code, err = cli("registry", "validate", v2, "--as", AUTHOR, "-w", root)
    assert code == 0, err
    for person, why in ((AUTHOR, "gates passed"), (CLIN, "reviewed")):
        code, err = cli(
            "registry", "promote", v2, "--as", person, "--why", why, "--key", _key(ws, person),
            "-w", root,
        )  # fmt: skip
        assert code == 0, err
    return v2


@pytest.fixture
def world(cli: Cli, fresh_workspace: Any, trained: Any) -> tuple[Workspace, str, str]:
    """A workspace with an approved release and a clinically reviewed candidate."""
    ws = fresh_workspace("signed-acts")
    v1 = str(govern_demo_release(ws, model_version=trained[1])["version"])
    return ws, v1, _candidate(cli, ws, trained[1])


def test_one_key_cannot_approve_as_two_people_three_keys_of_three_people_can(
    cli: Cli, world: tuple[Workspace, str, str]
) -> None:
    ws, _, v2 = world
    root = str(ws.root)
    code, err = cli(
        "registry", "approve", v2, "--role", "engineering", "--as", ENG, "--why", "code ok",
        "--key", _key(ws, ENG), "-w", root,
    )  # fmt: skip
    assert code == 0, err
    # The engineer's key, offered as the clinician: refused, and nothing is recorded for them.
    code, err = cli(
        "registry", "approve", v2, "--role", "clinical", "--as", CLIN, "--why", "sound",
        "--key", _key(ws, ENG), "-w", root,
    )  # fmt: skip
    assert code == 2
    assert f"registered to {ENG!r}, not {CLIN!r}" in err
    assert [a["actor"] for a in _approvals(ws, v2)] == [ENG]
    code, err = cli("registry", "promote", v2, "--as", COMP, "--key", _key(ws, COMP), "-w", root)
    assert code == 2 and "gate approvals failed" in err
    # Three keys of three people approve it.
    for person, role in ((CLIN, "clinical"), (COMP, "compliance")):
        code, err = cli(
            "registry", "approve", v2, "--role", role, "--as", person, "--why", "ok",
            "--key", _key(ws, person), "-w", root,
        )  # fmt: skip
        assert code == 0, err
    code, err = cli(
        "registry", "promote", v2, "--as", COMP, "--why", "pilot", "--key", _key(ws, COMP),
        "-w", root,
    )  # fmt: skip
    assert code == 0, err
    with Registry.open(ws) as reg:
        assert reg.get(v2).status == "approved_limited"
    # Each approval carries the identity that proved it: the person's key fingerprint.
    recorded = {a["actor"]: a["identity"] for a in _approvals(ws, v2)}
    assert set(recorded) == {ENG, CLIN, COMP}
    for person, identity in recorded.items():
        public = Path(_key(ws, person)).with_suffix(".pub")
        assert identity == {
            "person": person,
            "method": "ssh-signature",
            "subject": _fingerprint(public),
        }
    assert len({i["subject"] for i in recorded.values()}) == 3


def test_a_signature_over_another_act_is_refused_and_nothing_recorded(
    cli: Cli, world: tuple[Workspace, str, str], tmp_path: Path
) -> None:
    ws, v1, v2 = world
    root = str(ws.root)
    code, statement = cli(
        "registry", "approve", v2, "--role", "clinical", "--as", CLIN, "--why", "sound",
        "--print-statement", "-w", root,
    )  # fmt: skip
    assert code == 0, statement
    path = tmp_path / "approve.json"
    path.write_text(statement)
    # Signed by ssh-keygen itself, as a person with a hardware key would.
    subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-n", "clinical-mlops", "-f", _key(ws, CLIN), str(path)],
        check=True,
        capture_output=True,
    )
    sig = str(path) + ".sig"
    with Ledger.open(ws) as led:
        before = led.size()
    for other in (
        ("approve", v1, "--role", "clinical", "--why", "sound"),  # another release
        ("approve", v2, "--role", "compliance", "--why", "sound"),  # another role
        ("reject", v2, "--role", "clinical", "--why", "sound"),  # another decision
        ("approve", v2, "--role", "clinical", "--why", "something else"),  # another reason
    ):
        code, err = cli("registry", *other, "--as", CLIN, "--signature", sig, "-w", root)
        assert code == 2, (other, err)
        assert "the signature is over another act" in err, (other, err)
        assert "nothing was recorded" in err
    assert _approvals(ws, v2) == []
    with Ledger.open(ws) as led:
        added = [v.entry.type for v in led.read_from(before)]
    assert added == ["governance_refused"] * 4
    # The act it was made for is accepted, once.
    code, err = cli(
        "registry", "approve", v2, "--role", "clinical", "--as", CLIN, "--why", "sound",
        "--signature", sig, "-w", root,
    )  # fmt: skip
    assert code == 0, err
    code, err = cli(
        "registry", "approve", v2, "--role", "clinical", "--as", CLIN, "--why", "sound",
        "--signature", sig, "-w", root,
    )  # fmt: skip
    assert code == 2 and "already presented" in err
    assert [a["actor"] for a in _approvals(ws, v2)] == [CLIN]


@pytest.mark.parametrize(
    "act",
    [
        ("registry", "approve", "{v2}", "--role", "clinical", "--why", "ok"),
        ("registry", "suspend", "{v1}", "--why", "drift"),
        ("registry", "promote", "{v2}", "--why", "go"),
    ],
)
def test_as_without_proof_is_refused(
    cli: Cli, world: tuple[Workspace, str, str], act: tuple[str, ...]
) -> None:
    ws, v1, v2 = world
    with Ledger.open(ws) as led:
        before = led.size()
    args = [a.format(v1=v1, v2=v2) for a in act]
    code, err = cli(*args, "--as", CLIN, "-w", str(ws.root))
    assert code == 2
    assert f"needs proof that {CLIN!r} makes it" in err
    assert "--key" in err and "--signature" in err
    with Ledger.open(ws) as led:
        assert led.size() == before
    with Registry.open(ws) as reg:
        assert reg.get(v1).status == "approved"
        assert reg.get(v2).status == "clinically_reviewed"


def test_a_key_belongs_to_one_person_held_by_the_store(
    cli: Cli, world: tuple[Workspace, str, str]
) -> None:
    ws, _, _ = world
    root = str(ws.root)
    eng_public = str(Path(_key(ws, ENG)).with_suffix(".pub"))
    code, err = cli(
        "registry", "person", "key", "add", CLIN, "--public-key", eng_public,
        "--as", COMP, "--key", _key(ws, COMP), "-w", root,
    )  # fmt: skip
    assert code == 2
    assert f"already registered to {ENG!r}" in err
    code, out = cli("registry", "person", "key", "list", "--json", "-w", root)
    assert code == 0, out
    owners = {k["fingerprint"]: k["person"] for k in json.loads(out)["keys"]}
    assert owners[_fingerprint(Path(eng_public))] == ENG
    # The store itself refuses a second owner, whoever writes to it.
    from clinical_mlops.governance import schema as t

    with (
        Registry.open(ws) as reg,
        Governance(reg) as gov,
        pytest.raises(sa.exc.IntegrityError),
        gov.engine.begin() as conn,
    ):
        conn.execute(
            sa.insert(t.person_keys).values(
                fingerprint=_fingerprint(Path(eng_public)),
                person=CLIN,
                public_key="ssh-ed25519 x",
                added="2026-01-01T00:00:00Z",
                added_by=COMP,
            )
        )


def test_a_new_persons_own_key_made_by_ssh_keygen_proves_their_act(
    cli: Cli, world: tuple[Workspace, str, str], tmp_path: Path
) -> None:
    """A key made by ssh-keygen, registered by compliance, proves an act; the library's own
    signatures verify with ``ssh-keygen -Y verify``."""
    ws, _, v2 = world
    root = str(ws.root)
    newcomer = "dr.newcomer"
    key = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", newcomer, "-f", str(key)],
        check=True,
    )
    code, err = cli(
        "registry", "grant", newcomer, "--role", "clinical", "--as", COMP, "-w", root
    )  # fmt: skip
    assert code == 0, err
    code, err = cli(
        "registry", "person", "key", "add", newcomer, "--public-key", f"{key}.pub",
        "--as", COMP, "--key", _key(ws, COMP), "-w", root,
    )  # fmt: skip
    assert code == 0, err
    code, err = cli(
        "registry", "approve", v2, "--role", "clinical", "--as", newcomer, "--why", "sound",
        "--key", str(key), "-w", root,
    )  # fmt: skip
    assert code == 0, err
    (approval,) = _approvals(ws, v2)
    assert approval["identity"]["subject"] == _fingerprint(Path(f"{key}.pub"))

    from clinical_mlops.governance.proof import load_private_key, sign

    message = b"statement of an act\n"
    (tmp_path / "m").write_bytes(message)
    (tmp_path / "m.sig").write_text(sign(message, load_private_key(key)))
    (tmp_path / "allowed").write_text(f"{newcomer} {(tmp_path / 'id_ed25519.pub').read_text()}")
    verified = subprocess.run(
        ["ssh-keygen", "-Y", "verify", "-f", str(tmp_path / "allowed"), "-I", newcomer,
         "-n", "clinical-mlops", "-s", str(tmp_path / "m.sig")],
        input=message,
        capture_output=True,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    assert b'Good "clinical-mlops" signature' in verified.stdout + verified.stderr


def test_a_rollout_changes_what_runs_at_a_site_only_with_proof_of_who_made_it(
    cli: Cli, fresh_workspace: Any, trained: Any
) -> None:
    """``registry rollout --as`` alone, or with another person's key, changes nothing at the
    bedside; with the person's own key the rollout is recorded with the identity it proved."""
    ws = fresh_workspace("signed-rollout")
    v1 = str(govern_demo_release(ws, model_version=trained[1])["version"])
    root = str(ws.root)
    rollout = ("registry", "rollout", v1, "--site", "ward-9", "--mode", "pilot", "--why", "pilot")

    def ward_9() -> Any:
        with Registry.open(ws) as reg:
            return reg.deployment_manifest(reg.get(v1).task)["sites"].get("ward-9")

    with Ledger.open(ws) as led:
        before = led.size()
    code, err = cli(*rollout, "--as", CLIN, "-w", root)
    assert code == 2, err
    assert f"needs proof that {CLIN!r} makes it" in err
    with Ledger.open(ws) as led:
        assert led.size() == before
    code, err = cli(*rollout, "--as", CLIN, "--key", _key(ws, ENG), "-w", root)
    assert code == 2 and f"registered to {ENG!r}, not {CLIN!r}" in err, err
    assert ward_9() is None
    code, err = cli(*rollout, "--as", CLIN, "--key", _key(ws, CLIN), "-w", root)
    assert code == 0, err
    assert ward_9()["release"] == v1 and ward_9()["mode"] == "pilot"
    with Ledger.open(ws) as led:
        (change,) = [
            v.payload
            for v in led.read_from(before, types=("rollout_change",))
            if (v.payload or {}).get("site") == "ward-9"
        ]
    public = Path(_key(ws, CLIN)).with_suffix(".pub")
    assert change["identity"] == {
        "person": CLIN,
        "method": "ssh-signature",
        "subject": _fingerprint(public),
    }
