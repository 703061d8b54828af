"""The vault's serving-path lookups (run on the database driver) on SQLite and PostgreSQL.

They are checked against the SQLAlchemy-built reads they stand in for (``consents_of``,
``data_key``), across the 500-identifier chunking, with unknown subjects left out, and a
driver error surfaces as SQLAlchemy's own exception type.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from clinical_mlops.database import driver_execute
from clinical_mlops.privacy.consent import consents_of, record_consent, subjects_with_consents
from clinical_mlops.privacy.identity import IdentityVault
from clinical_mlops.privacy.keys import LocalKeyring
from evidence_helpers import BACKENDS, T0, make_stores


@pytest.mark.parametrize("backend", BACKENDS)
def test_lookups_match_the_core_reads(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    stores = make_stores(backend, tmp_path, request)
    vault = IdentityVault.open(stores.identity_url)
    provider = LocalKeyring(stores.keys_dir)
    try:
        people = [f"MRN-{i:04d}" for i in range(620)]  # more than one chunk of 500
        pseudonyms = {p: vault.pseudonym_for(p) for p in people}
        for i, person in enumerate(people[:40]):
            for k in range(i % 3):  # 0, 1 or 2 consent records each
                record_consent(
                    vault,
                    pseudonym=pseudonyms[person],
                    purposes=["direct_care"] if k == 0 else ["direct_care", "research"],
                    valid_from=T0 + timedelta(days=k),
                    valid_until=None,
                    recorded_by="user:registrar",
                )
        asked = [*people, "MRN-unknown", people[3]]  # an unknown and a repeated identifier
        found = subjects_with_consents(vault, identifiers=asked)
        assert set(found) == set(people)
        for person in people:
            pseudonym, records = found[person]
            assert pseudonym == pseudonyms[person]
            assert records == consents_of(vault, pseudonym=pseudonym)
        assert sum(len(r) for _, r in found.values()) == sum(i % 3 for i in range(40)) > 0

        owners = [pseudonyms[p] for p in people]
        keys = vault.data_keys_for(owners, provider=provider)  # created, in one transaction
        fresh = IdentityVault.open(stores.identity_url)  # no cache: read back on the driver
        try:
            again = fresh.data_keys_for(owners, provider=provider)
            assert again == keys
            for key_id, key in list(again.values())[:5]:
                assert fresh.data_key(key_id, provider=provider) == key
        finally:
            fresh.close()

        with vault.engine.connect() as conn, pytest.raises(sa.exc.DBAPIError):
            driver_execute(conn, "SELECT no_such_column FROM subjects WHERE identifier = ?", ["x"])
    finally:
        vault.close()


def test_unwrapped_keys_kept_are_bounded_and_evicted_ones_come_back_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clinical_mlops.privacy import identity

    monkeypatch.setattr(identity, "KEYS_KEPT", 3)
    vault = IdentityVault.open(f"sqlite:///{tmp_path / 'identity.db'}")
    provider = LocalKeyring(tmp_path / "keys")
    try:
        owners = [vault.pseudonym_for(f"MRN-{i}") for i in range(6)]
        first = vault.data_keys_for(owners, provider=provider)
        assert len(vault._dek_cache) <= 3 and len(vault._active) <= 3
        again = {o: vault.data_key_for(o, provider=provider) for o in owners}
        assert again == first  # evicted keys are read back and unwrapped, not made anew
        assert {k: vault.data_key(k, provider=provider) for k, _ in first.values()} == {
            k: v for k, v in first.values()
        }
        assert len(vault._dek_cache) <= 3
    finally:
        vault.engine.dispose()
