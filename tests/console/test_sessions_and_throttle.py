"""Console sessions end when their user's password changes or the user is removed (in any
process), and sign-in guessing is slowed per client address and per name, never by locking
a name out."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from datetime import timedelta
from typing import Any

from console_world import (
    CLINICIAN,
    NOW,
    PASSWORD,
    REVIEWER,
    console_client,
    form_token,
    ledger_size,
    sign_in,
)
from typer.testing import CliRunner

from clinical_mlops.cli import app as cli
from clinical_mlops.clock import FixedClock
from clinical_mlops.console.users import UserDirectory

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette warns that httpx is deprecated for TestClient
    from fastapi.testclient import TestClient

NEW_PASSWORD = "another long password"


def _client_at(first: TestClient, address: str) -> TestClient:
    """Return a client of the same console app, connecting from ``address``."""
    return TestClient(first.app, base_url="http://testserver", client=(address, 40000))


def _case_form(client: TestClient, seq: int) -> str:
    page = client.get(f"/console/cases/{seq}")
    assert page.status_code == 200, page.text
    return form_token(page.text, f"/console/cases/{seq}/decision")


def test_a_password_changed_by_another_process_ends_the_open_sessions(
    fresh_world: dict[str, Any],
) -> None:
    ws = fresh_world["ws"]
    laptop = console_client(ws)
    assert sign_in(laptop, CLINICIAN).status_code == 303
    ward = _client_at(laptop, "198.51.100.20")
    assert sign_in(ward, CLINICIAN).status_code == 303
    seq = fresh_world["escalated"][-2]
    token = _case_form(laptop, seq)
    # the password is changed while the console runs, by the CLI in a process of its own
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "clinical_mlops",
            "console",
            "user",
            "add",
            CLINICIAN,
            "--role",
            "clinician",
            "--password-stdin",
            "-w",
            str(ws.root),
        ],
        input=NEW_PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 0, done.stderr
    before = ledger_size(ws)
    r = laptop.post(
        f"/console/cases/{seq}/decision", data={"csrf_token": token, "choice": "accept"}
    )
    assert r.status_code == 401
    assert "was changed since this session began" in r.text and "Nothing was recorded" in r.text
    assert ledger_size(ws) == before
    for client in (laptop, ward):
        r = client.get("/console/queue", follow_redirects=False)
        assert r.status_code == 303 and "password" in r.headers["location"]
    assert sign_in(laptop, CLINICIAN, PASSWORD).status_code == 401
    assert sign_in(laptop, CLINICIAN, NEW_PASSWORD).status_code == 303
    assert laptop.get("/console/queue").status_code == 200
    # another user's session is untouched
    other = console_client(ws)
    assert sign_in(other, REVIEWER).status_code == 303
    UserDirectory.open(ws).add(CLINICIAN, roles=["clinician"], password=PASSWORD)
    assert other.get("/console/releases").status_code == 200
    assert laptop.get("/console/queue", follow_redirects=False).status_code == 303


def test_a_removed_user_added_again_does_not_get_old_sessions_back(
    fresh_world: dict[str, Any],
) -> None:
    ws = fresh_world["ws"]
    client = console_client(ws)
    assert sign_in(client, CLINICIAN).status_code == 303
    assert client.get("/console/queue").status_code == 200
    runner = CliRunner()
    r = runner.invoke(cli, ["console", "user", "remove", CLINICIAN, "-w", str(ws.root)])
    assert r.exit_code == 0, r.output
    assert client.get("/console/queue", follow_redirects=False).status_code == 303
    # the same name and even the same password again: a new credential, the old session stays dead
    UserDirectory.open(ws).add(CLINICIAN, roles=["clinician"], password=PASSWORD)
    r = client.get("/console/queue", follow_redirects=False)
    assert r.status_code == 303 and "password" in r.headers["location"]


def test_console_user_password_keeps_the_roles_and_ends_the_sessions(
    fresh_world: dict[str, Any],
) -> None:
    ws = fresh_world["ws"]
    client = console_client(ws)
    assert sign_in(client, REVIEWER).status_code == 303
    runner = CliRunner()
    r = runner.invoke(
        cli,
        ["console", "user", "password", REVIEWER, "--password-stdin", "-w", str(ws.root)],
        input=NEW_PASSWORD + "\n",
    )
    assert r.exit_code == 0, r.output
    assert NEW_PASSWORD not in r.output
    assert client.get("/console/releases", follow_redirects=False).status_code == 303
    assert UserDirectory.open(ws).authenticate(REVIEWER, NEW_PASSWORD).roles == ("reviewer",)
    r = runner.invoke(
        cli,
        ["console", "user", "password", "nobody.here", "--password-stdin", "-w", str(ws.root)],
        input=NEW_PASSWORD + "\n",
    )
    assert r.exit_code != 0 and "no console user 'nobody.here'" in str(r.exception)


def test_one_address_trying_many_names_is_slowed_with_growing_waits(
    world: dict[str, Any],
) -> None:
    clock = FixedClock(NOW)
    first = console_client(world["ws"], clock=clock)
    guesser = _client_at(first, "203.0.113.7")
    codes = [
        sign_in(guesser, f"guess.{i}", "not the password at all").status_code for i in range(8)
    ]
    assert codes == [401] * 5 + [429] * 3
    # refused unchecked: even a real user's right password from this address waits
    r = sign_in(guesser, CLINICIAN)
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    assert "Too many failed sign-ins from this address; try again in 1 second" in r.text
    waits = []
    for _ in range(4):
        clock.advance(timedelta(seconds=int(r.headers["retry-after"])))
        assert sign_in(guesser, "guess.again", "not the password").status_code == 401
        r = sign_in(guesser, "guess.again", "not the password")
        assert r.status_code == 429
        waits.append(int(r.headers["retry-after"]))
    assert waits == [2, 4, 8, 16]
    # another address is not affected
    assert sign_in(_client_at(first, "203.0.113.8"), CLINICIAN).status_code == 303


def test_a_name_under_attack_still_signs_in_from_a_clean_address(world: dict[str, Any]) -> None:
    clock = FixedClock(NOW)
    first = console_client(world["ws"], clock=clock)
    attackers = [_client_at(first, f"192.0.2.{i}") for i in range(1, 13)]
    codes = [sign_in(a, REVIEWER, "a wrong guess here").status_code for a in attackers]
    assert codes == [401] * 12  # a clean address always gets its password checked
    again = sign_in(attackers[-1], REVIEWER, "another wrong guess")
    assert again.status_code == 429 and again.headers["retry-after"] == str(2 ** (12 - 5))
    # twelve failures for the name: addresses that failed for it wait, even with the password
    r = sign_in(attackers[0], REVIEWER)
    assert r.status_code == 429
    assert "Too many failed sign-ins for this user name from this address" in r.text
    assert int(r.headers["retry-after"]) == 2 ** (12 - 5)
    # the reviewer, from the workstation they always use, is not locked out
    assert sign_in(_client_at(first, "198.51.100.9"), REVIEWER).status_code == 303
    # nor is anybody else, from an address that only attacked the reviewer
    assert sign_in(attackers[1], CLINICIAN).status_code == 303


def test_the_throttle_keeps_bounded_memory_and_forgets_old_failures() -> None:
    from clinical_mlops.console.throttle import LoginThrottle
    from clinical_mlops.errors import SignInThrottled

    clock = FixedClock(NOW)
    throttle = LoginThrottle(clock, capacity=50, forget=3600.0)
    for i in range(500):
        throttle.failed(f"name.{i}", f"10.0.{i // 256}.{i % 256}")
    assert throttle.tracked() == {"addresses": 50, "names": 50, "pairs": 50}
    for _ in range(6):
        throttle.failed("dr.x", "10.9.9.9")
    try:
        throttle.check("dr.y", "10.9.9.9")
    except SignInThrottled as exc:
        assert exc.retry_after == 2
    else:
        raise AssertionError("six failures from one address did not slow it")
    clock.advance(timedelta(seconds=3601))
    throttle.check("dr.y", "10.9.9.9")  # forgotten an hour after the last failure
