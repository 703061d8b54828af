"""Front ends parse, call one use case and format: none writes a store, the ledger or the registry.

Every CLI command, HTTP route and console route is enumerated from the running objects (the
click tree, the routers), and every call it makes — directly or through helpers of its own
front end — is read from its source. A front end that opens a store itself, or calls a
writing function or method of the library below :mod:`clinical_mlops.application`, fails
here with the handler, the call and where it is made.
"""

from __future__ import annotations

import re

import pytest

from .frontends import Handler, all_handlers, calls_of

# The verbs of the library's writing API (functions and store methods).
WRITE_VERB = re.compile(
    r"^_?(append|record|register|build|import|write|erase|grant|withdraw|promote|suspend|"
    r"resume|rollback|retire|approve|reject|decide|open_incident|contain|resolve|acknowledge|"
    r"set_|add_|purge|rotate|checkpoint|create|delete|insert|update|execute|commit|activate|"
    r"place|transition|save|store|claim|ensure|publish|govern|score|pseudonym_for|migrate|"
    r"erase|begin|train|fit)"
)
# Opening a store hands out its writing methods: front ends get stores from the application.
STORE_OPENERS = {
    ("clinical_mlops.ledger.ledger", "Ledger.open"),
    ("clinical_mlops.ledger.ledger", "Ledger"),
    ("clinical_mlops.registry.registry", "Registry.open"),
    ("clinical_mlops.registry.registry", "Registry"),
    ("clinical_mlops.governance.board", "Governance"),
    ("clinical_mlops.privacy.identity", "IdentityVault.open"),
    ("clinical_mlops.monitoring.alerts", "AlertStore.open"),
    ("clinical_mlops.monitoring.alerts", "AlertStore"),
}
# Names a store object goes by in front-end code; a writing method called on one is a write.
STORE_NAMES = {
    "ledger",
    "registry",
    "reg",
    "governance",
    "gov",
    "vault",
    "identity",
    "alerts",
    "store",
    "engine",
}

# Calls the reader cannot tell from a store write by their names alone, each with why it is not.
NOT_STORE_WRITES = {
    ("metrics", "registry", "register"): "a collector on the service's Prometheus registry",
}


def violations(handler: Handler) -> list[str]:
    """Return each direct write of ``handler`` as 'call (in module:function)'."""
    calls = calls_of(handler.function)
    found = []
    for module, qual in sorted(calls.library):
        if module.startswith("clinical_mlops.application"):
            continue
        name = qual.rsplit(".", 1)[-1]
        if (module, qual) in STORE_OPENERS or WRITE_VERB.match(name):
            found.append(f"{module}.{qual} (in {calls.where[(module, qual)]})")
    for chain in sorted(calls.chains):
        receivers, method = chain[:-1], chain[-1]
        if chain in NOT_STORE_WRITES:
            continue
        if STORE_NAMES.intersection(receivers) and WRITE_VERB.match(method):
            found.append(f"{'.'.join(chain)} (in {calls.where[chain]})")
    return found


HANDLERS = all_handlers()


def test_every_front_end_is_enumerated() -> None:
    kinds = {h.kind for h in HANDLERS}
    assert kinds == {"cli", "http", "console"}
    names = {h.name for h in HANDLERS}
    # a sample of each, so that a change in enumeration cannot silently check nothing
    assert {"registry suspend", "audit verify", "privacy consent"} <= names
    assert any(n.endswith("/v1/overrides") for n in names)
    assert any("POST" in n and "/cases/" in n for n in names)


@pytest.mark.parametrize("handler", HANDLERS, ids=lambda h: f"{h.kind}:{h.name}")
def test_front_end_handler_writes_only_through_the_application(handler: Handler) -> None:
    found = violations(handler)
    assert not found, (
        f"{handler.kind} {handler.name!r} writes directly instead of calling one use case of "
        "clinical_mlops.application:\n  " + "\n  ".join(found)
    )


def test_the_check_catches_a_direct_write() -> None:
    """The reader sees a ledger append, a store opened by hand and a library writer."""

    def handler_writing_directly(workspace: object) -> None:
        from clinical_mlops.ledger import Ledger
        from clinical_mlops.ledger.retention import purge_expired

        with Ledger.open(workspace) as ledger:  # type: ignore[arg-type]
            ledger.append([])  # type: ignore[arg-type]
            purge_expired(ledger)  # type: ignore[call-arg]

    found = violations(Handler("cli", "fake", handler_writing_directly))
    assert any("Ledger.open" in f for f in found)
    assert any(f.startswith("ledger.append") for f in found)
    assert any("purge_expired" in f for f in found)
