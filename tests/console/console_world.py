"""Console fixtures: one governed world per session, copied per module; sign-in helpers;
a console served by uvicorn on a free loopback port; one headless Chromium per session.

The world (all on a fixed clock, so times and ages are the same on every run):

* T0 ........ release ``icu_mortality_48h@1`` approved (demo people), pilot at demo-icu-north
* T0+1..5 h . 60 consented patients scored at demo-icu-north in four batches; most are
              escalated (the small test model is often unsure, and the release queues
              unsure predictions: ``REVIEW_UNSURE``)
* T0+6 h .... release ``@2`` (same model, threshold 0.35) registered, gates 1-3 passed,
              validated and clinically reviewed: waiting for gate 4
* T0+6 h .... one monitoring alert (PSI on ventilation) with its series
* T0+7 h .... the console's clock
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from clinical_mlops.application.governance import acknowledge_risk, release_risks
from clinical_mlops.application.walkthrough import govern_demo_release
from clinical_mlops.clock import FixedClock, utc_iso
from clinical_mlops.console import standalone_app
from clinical_mlops.console.users import UserDirectory
from clinical_mlops.features.snapshot import locked_test_stays, open_snapshot
from clinical_mlops.governance.board import Governance
from clinical_mlops.governance.policy import run_gates
from clinical_mlops.ledger import Ledger
from clinical_mlops.monitoring.alerts import AlertSignal, AlertStore
from clinical_mlops.privacy.consent import record_consent
from clinical_mlops.registry.bundle import build_bundle
from clinical_mlops.registry.registry import Registry
from clinical_mlops.serving.predictor import PredictionRequest, Predictor
from clinical_mlops.tasks import load_task
from clinical_mlops.workspace import Workspace
from identities import console
from registry_helpers import REVIEW_UNSURE

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette warns that httpx is deprecated for TestClient
    from fastapi.testclient import TestClient

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=7)
SITE = "demo-icu-north"
PASSWORD = "a long test password"
CLINICIAN, REVIEWER, COMPLIANCE, ENGINEER, AUDITOR = (
    "dr.ada.clin",
    "demo.dr.lena.ortiz",
    "demo.sam.okafor",
    "demo.priya.nair",
    "audrey.auditor",
)
USERS: dict[str, list[str]] = {
    CLINICIAN: ["clinician"],
    REVIEWER: ["reviewer"],
    COMPLIANCE: ["compliance"],
    ENGINEER: ["ml_engineer"],
    AUDITOR: ["auditor"],
}
USER_OF_ROLE = {roles[0]: name for name, roles in USERS.items()}
N_PATIENTS = 60


def _rows(ws: Workspace, snapshot_id: str, n: int) -> list[dict[str, Any]]:
    names = list(load_task("icu_mortality_48h").feature_names)
    test = locked_test_stays(open_snapshot(ws, snapshot_id))
    out = []
    for rec in test[names].head(n).to_dict(orient="records"):
        out.append(
            {
                k: (None if v != v else (v.item() if hasattr(v, "item") else v))
                for k, v in rec.items()
            }
        )
    return out


def build_world(root: Path, trained_root: Path, model_version: str) -> dict[str, Any]:
    """Return the facts of a freshly built console world in ``root`` (see the module doc)."""
    ws = Workspace.open(root)
    shutil.copytree(trained_root / "artifacts", ws.root / "artifacts", dirs_exist_ok=True)
    clock = FixedClock(T0)
    shown = govern_demo_release(
        ws, model_version=model_version, clock=clock, escalation=REVIEW_UNSURE
    )
    v1 = shown["version"]
    rows = _rows(ws, shown["lineage"]["snapshot"]["id"], N_PATIENTS)
    with Ledger.open(ws, clock=clock) as led:
        for i in range(N_PATIENTS):
            record_consent(
                led.vault,
                pseudonym=led.vault.pseudonym_for(f"MRN-{i:04d}"),
                purposes=["direct_care"],
                valid_from=datetime(2020, 1, 1, tzinfo=UTC),
                valid_until=None,
                recorded_by="test",
            )
    results = []
    with Predictor.open(ws, site=SITE, clock=clock) as p:
        for k, hours in enumerate((1.0, 2.5, 4.0, 5.5)):
            clock.set(T0 + timedelta(hours=hours))
            batch = range(k * 15, (k + 1) * 15)
            results += p.predict_many(
                [
                    PredictionRequest(
                        subject_id=f"MRN-{i:04d}",
                        purpose="direct_care",
                        setting="icu",
                        features=rows[i],
                        request_id=f"req-{i:04d}",
                    )
                    for i in batch
                ],
                requester="system:ehr-interface",
            )
    clock.set(T0 + timedelta(hours=6))
    with Registry.open(ws, clock=clock) as reg, Governance(reg) as gov:
        bundle = build_bundle(
            ws,
            model_version=model_version,
            author="demo.alex.kim",
            threshold=0.35,
            escalation=REVIEW_UNSURE,
            clock=clock,
        )
        v2 = gov.register(bundle, actor="demo.alex.kim", why="lower threshold").version
        for risk in release_risks(gov, v2):
            acknowledge_risk(
                gov,
                v2,
                risk=risk["id"],
                actor=REVIEWER,
                reason="accepted for the pilot",
                identity=console(REVIEWER),
            )
        run_gates(gov, v2, actor="demo.alex.kim")
        gov.promote(
            v2, actor="demo.alex.kim", why="gates 1-3 passed", identity=console("demo.alex.kim")
        )
        gov.promote(
            v2, actor=REVIEWER, why="report and model card read", identity=console(REVIEWER)
        )
    with AlertStore.open(ws, clock=clock) as store:
        values = [0.04, 0.06, 0.05, 0.09, 0.14, 0.23, 0.31, 0.34]
        points = tuple(
            (utc_iso(T0 + timedelta(hours=4, minutes=15 * j)), v) for j, v in enumerate(values[:-1])
        )
        store.raise_alert(
            AlertSignal(
                rule="input_psi",
                kind="data",
                severity="warning",
                owner_role="ml_engineer",
                action="open_review",
                at=utc_iso(T0 + timedelta(hours=4, minutes=15 * (len(values) - 1))),
                summary="Ventilation flag distribution shifted: PSI 0.34 above 0.20",
                quantity="psi:ventilation",
                value=values[-1],
                threshold=0.2,
                release=v1,
                model_version=model_version,
                subgroup=None,
                series=points,
            ),
            actor="system:monitor",
        )
        for rule, kind, severity, owner, action, summary, quantity, value, limit in (
            (
                "auroc_degradation",
                "concept",
                "critical",
                "reviewer",
                "suspend",
                "AUROC on linked outcomes fell 6.4 % below the validated value",
                "auroc_drop",
                0.064,
                0.05,
            ),
            (
                "override_rate_high",
                "workflow",
                "info",
                "reviewer",
                "open_review",
                "Clinicians overrode 31 % of shown predictions this week",
                "override_rate",
                0.31,
                0.25,
            ),
        ):
            store.raise_alert(
                AlertSignal(
                    rule=rule,
                    kind=kind,
                    severity=severity,
                    owner_role=owner,
                    action=action,
                    at=utc_iso(T0 + timedelta(hours=5)),
                    summary=summary,
                    quantity=quantity,
                    value=value,
                    threshold=limit,
                    release=v1,
                    model_version=model_version,
                    series=((utc_iso(T0 + timedelta(hours=4)), limit * 0.8),),
                ),
                actor="system:monitor",
            )
    users = UserDirectory.open(ws)
    for name, roles in USERS.items():
        users.add(name, roles=roles, password=PASSWORD)
    escalated = [r.audit_seq for r in results if r.escalated]
    calm = [r.audit_seq for r in results if r.status == "scored" and not r.escalated]
    return {
        "root": ws.root,
        "v1": v1,
        "v2": v2,
        "model_version": model_version,
        "escalated": escalated,
        "not_escalated": calm,
    }


def copy_world(template: dict[str, Any], dest: Path) -> dict[str, Any]:
    """Return the facts of a copy of the world in ``dest`` (a folder that does not exist)."""
    shutil.copytree(template["root"], dest)
    return template | {"root": dest, "ws": Workspace.open(dest)}


# -- TestClient helpers ---------------------------------------------------------------------------


def console_client(
    ws: Workspace,
    *,
    clock: FixedClock | None = None,
    base_url: str = "http://testserver",
    **kw: Any,
) -> TestClient:
    """Return a TestClient on a console of ``ws`` mounted at /console (clock at NOW)."""
    app = standalone_app(ws, clock=clock or FixedClock(NOW), **kw)
    return TestClient(app, base_url=base_url)


def sign_in(client: TestClient, name: str, password: str = PASSWORD) -> Any:
    """Sign ``name`` in on ``client`` (fresh cookies); return the final response."""
    client.cookies.clear()
    page = client.get("/console/login")
    nonce = re.search(r'name="login_nonce" value="([^"]+)"', page.text)
    assert nonce, page.text
    return client.post(
        "/console/login",
        data={"name": name, "password": password, "login_nonce": nonce.group(1)},
        follow_redirects=False,
    )


def form_token(html: str, action: str | None = None) -> str:
    """Return the one-time token of the (first, or the one posting to ``action``) form."""
    pattern = r'name="csrf_token" value="([^"]+)"'
    if action is not None:
        pattern = rf'action="{re.escape(action)}"[^>]*>\s*<input type="hidden" {pattern[:-1]}'
    found = re.search(pattern, html)
    assert found, f"no form token for {action} in page"
    return found.group(1)


def fingerprint_of(html: str) -> str:
    """Return the release fingerprint a decision form carries."""
    found = re.search(r'name="fingerprint" value="([0-9a-f]{64})"', html)
    assert found, "no fingerprint in page"
    return found.group(1)


def ledger_size(ws: Workspace) -> int:
    with Ledger.open(ws) as led:
        return led.size()


# -- a real server and a real browser -------------------------------------------------------------


class LiveConsole:
    """The console served by uvicorn in a thread on a free 127.0.0.1 port."""

    def __init__(self, ws: Workspace, *, clock: FixedClock, sock: socket.socket | None = None):
        import uvicorn

        self.app = standalone_app(ws, clock=clock)
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
        self.sock = sock
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, ws="none", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> LiveConsole:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the console server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        from clinical_mlops.console import close_console

        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
        close_console(self.app.state.inner)


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]


def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: ``$CLINICAL_MLOPS_SCREENSHOTS`` (e.g. docs/images) or a temp folder."""
    chosen = os.environ.get("CLINICAL_MLOPS_SCREENSHOTS")
    path = Path(chosen) if chosen else tmp_path_factory.mktemp("screens")
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_screen(page: Any, folder: Path, name: str) -> Path:
    """Save a screenshot of the viewport as ``console-<name>.png`` and check it is a PNG."""
    path = folder / f"console-{name}.png"
    page.screenshot(path=str(path), full_page=False)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


__all__ = [
    "AUDITOR",
    "CLINICIAN",
    "COMPLIANCE",
    "ENGINEER",
    "NOW",
    "PASSWORD",
    "REVIEWER",
    "USERS",
    "USER_OF_ROLE",
    "LiveConsole",
    "build_world",
    "console_client",
    "copy_world",
    "fingerprint_of",
    "form_token",
    "ledger_size",
    "save_screen",
    "screenshot_dir",
    "sign_in",
]
