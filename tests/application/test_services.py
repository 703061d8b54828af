"""Services: each store of a workspace opened once, on first use, and closed together."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from clinical_mlops.application.services import Services
from clinical_mlops.errors import LedgerNotFound
from clinical_mlops.ledger import Ledger
from clinical_mlops.monitoring.alerts import AlertStore
from clinical_mlops.registry.registry import Registry
from clinical_mlops.workspace import Workspace


def test_each_store_is_opened_once_and_only_when_asked_for(workspace: Workspace) -> None:
    with Services.open(workspace) as services:
        assert services.opened() == []
        assert not (workspace.root / "ledger.db").exists()  # nothing opened, nothing made
        registry = services.registry
        assert services.opened() == ["metadata store", "registry"]
        assert services.registry is registry
        ledger = services.ledger
        assert services.ledger is ledger and services.vault is ledger.vault
        assert services.alerts is services.alerts
        assert services.meta_engine is services.meta_engine
        assert services.opened() == ["metadata store", "registry", "ledger", "alert store"]
        assert isinstance(registry, Registry) and isinstance(services.alerts, AlertStore)
        assert isinstance(ledger, Ledger)
        # one metadata engine for the registry, governance and alerts; one ledger for all
        engine = services.meta_engine
        assert registry.engine is engine and services.alerts.engine is engine
        assert services.governance.engine is engine
        assert registry.ledger is ledger and services.governance.ledger is ledger
        services.governance.grant_roles("dana", roles=["compliance"], actor="dana", why="bootstrap")
        # The grant is in the ledger the services opened, read through the same handle.
        assert ledger.read(ledger.size() - 1).entry.type == "role_granted"


def test_closing_closes_every_store_opened_and_refuses_more(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[str] = []
    for cls, name in ((Ledger, "ledger"), (Registry, "registry"), (AlertStore, "alert store")):
        original = cls.close

        def close(self: object, _original: object = original, _name: str = name) -> None:
            closed.append(_name)
            _original(self)  # type: ignore[operator]

        monkeypatch.setattr(cls, "close", close)
    services = Services.open(workspace)
    with services:
        _ = services.ledger, services.registry, services.alerts
        engine = services.meta_engine
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
        assert engine.pool.checkedin() == 1
    assert closed == ["alert store", "registry", "ledger"]  # newest first
    assert engine.pool.checkedin() == 0  # the metadata engine was disposed
    assert services.opened() == []
    with pytest.raises(RuntimeError, match="closed"):
        _ = services.registry
    services.close()  # closing twice does nothing more
    assert closed == ["alert store", "registry", "ledger"]


def test_services_without_create_never_make_an_empty_ledger(workspace: Workspace) -> None:
    with Services.open(workspace, create=False) as services, pytest.raises(LedgerNotFound):
        _ = services.ledger
    assert not (workspace.root / "ledger.db").exists()


def test_services_around_an_open_ledger_leave_it_open(workspace: Workspace) -> None:
    with Ledger.open(workspace) as ledger:
        with Services.using(workspace, ledger=ledger) as services:
            assert services.ledger is ledger
        before = ledger.size()
        payload = {"person": "p", "roles": ["clinical"], "why": "ward lead"}
        ledger.append(type="role_granted", actor="x", payload=payload)  # still open
        assert ledger.size() == before + 1
