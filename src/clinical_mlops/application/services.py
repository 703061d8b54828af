"""The stores of one workspace, opened once each, on first use, and closed together.

Every use case takes a :class:`Services` first. Front ends open one per command or
request scope::

    with Services.open(workspace) as services:
        grant_consent(services, subject="MRN-1", purposes=["direct_care"], actor="dpo")

Each store (metadata engine, ledger, identity vault, registry, alert store) is opened
through :mod:`clinical_mlops.database` the first time it is asked for, so a command that
only reads the registry never opens the ledger, and one that uses the ledger twice opens
it once. The registry, governance and the alert store share the one metadata engine, and
the registry (so governance) records into the one ledger. Closing closes what was opened, newest first; a closed ``Services`` refuses to
open anything again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from clinical_mlops.clock import Clock, SystemClock
from clinical_mlops.workspace import Workspace

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from clinical_mlops.governance.board import Governance
    from clinical_mlops.ledger import Ledger
    from clinical_mlops.monitoring.alerts import AlertStore
    from clinical_mlops.privacy.identity import IdentityVault
    from clinical_mlops.registry.registry import Registry

__all__ = ["Services"]

_T = TypeVar("_T")


class Services:
    """The stores of ``workspace``, each opened on first use; see the module docstring."""

    def __init__(
        self, workspace: Workspace | None, *, clock: Clock | None = None, create: bool = True
    ) -> None:
        self._workspace = workspace
        self.clock: Clock = clock or SystemClock()
        self.create = create
        self._open: dict[str, Any] = {}
        self._closers: list[Callable[[], None]] = []
        self._closed = False

    @classmethod
    def open(
        cls,
        workspace: Workspace | str | Path | None = None,
        clock: Clock | None = None,
        *,
        create: bool = True,
    ) -> Services:
        """Return the services of ``workspace`` (a folder, or the default workspace); opens nothing yet.

        ``create=False`` opens only an existing ledger and identity vault (LedgerNotFound
        otherwise), for commands that must never make an empty one: verification, export.
        """
        ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
        return cls(ws, clock=clock, create=create)

    @property
    def workspace(self) -> Workspace:
        """The workspace whose stores these are."""
        if self._workspace is None:
            raise RuntimeError("these services were made around an open ledger only")
        return self._workspace

    @classmethod
    def using(
        cls,
        workspace: Workspace | None = None,
        *,
        ledger: Ledger | None = None,
        registry: Registry | None = None,
        clock: Clock | None = None,
    ) -> Services:
        """Return services that use a ledger (or registry) already open; the rest open lazily.

        What is given stays open when these services close: its owner closes it.
        Without ``workspace`` only that ledger (and its identity vault) can be used.
        """
        made = cls(workspace, clock=clock or (ledger.clock if ledger is not None else None))
        if ledger is not None:
            made._open["ledger"] = ledger
        if registry is not None:
            made._open["registry"] = registry
        return made

    def _once(self, name: str, opener: Callable[[], _T], closer: Callable[[_T], None]) -> _T:
        if name in self._open:
            return self._open[name]
        if self._closed:
            raise RuntimeError(f"these services are closed; open new ones to use the {name}")
        store = opener()
        self._open[name] = store
        self._closers.append(lambda: closer(store))
        return store

    @property
    def meta_engine(self) -> Engine:
        """The metadata store's engine (registry, governance, alerts, monitoring windows)."""
        from clinical_mlops.database import open_metadata_engine

        return self._once(
            "metadata store",
            lambda: open_metadata_engine(self.workspace.database_url("meta")),
            lambda engine: engine.dispose(),
        )

    @property
    def ledger(self) -> Ledger:
        """The audit ledger (with its key provider, checkpoint log and identity vault)."""
        from clinical_mlops.ledger import Ledger

        return self._once(
            "ledger",
            lambda: Ledger.open(self.workspace, clock=self.clock, create=self.create),
            lambda ledger: ledger.close(),
        )

    @property
    def vault(self) -> IdentityVault:
        """The identity vault: the ledger's own, so both share one connection pool."""
        return self.ledger.vault

    @property
    def registry(self) -> Registry:
        """The release registry: releases, statuses, the active release and rollout per site."""
        from clinical_mlops.registry.registry import Registry

        return self._once(
            "registry",
            # records into these services' ledger when it is already open (one ledger)
            # records into these services' ledger (opened on its first event)
            lambda: Registry(
                self.workspace,
                clock=self.clock,
                ledger_source=lambda: self.ledger,
                engine=self.meta_engine,
            ),
            lambda registry: registry.close(),
        )

    @property
    def governance(self) -> Governance:
        """Who may do what over the registry: people and roles, gates, approvals, lifecycle.

        It records into the registry's ledger, so a run of acts appends through one ledger.
        """
        from clinical_mlops.governance.board import Governance

        return self._once(
            "governance",
            lambda: Governance(self.registry, engine=self.meta_engine),
            lambda governance: governance.close(),
        )

    @property
    def alerts(self) -> AlertStore:
        """The monitoring alert store."""
        from clinical_mlops.monitoring.alerts import AlertStore

        return self._once(
            "alert store",
            lambda: AlertStore(self.workspace, clock=self.clock, engine=self.meta_engine),
            lambda store: store.close(),
        )

    def opened(self) -> list[str]:
        """Return the names of the stores opened so far, in the order they were opened."""
        return list(self._open)

    def close(self) -> None:
        """Close every store opened, newest first; closing twice does nothing."""
        self._closed = True
        closers, self._closers = self._closers, []
        self._open.clear()
        failure: BaseException | None = None
        for close in reversed(closers):
            try:
                close()
            except BaseException as exc:  # close the others, then report the first failure
                failure = failure or exc
        if failure is not None:
            raise failure

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
