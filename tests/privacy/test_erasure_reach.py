"""Erasure reaches processes already running (R-A4): a vault that holds a subject's data
keys in memory drops and refuses them once the subject is erased by another process,
within its ``erasure_ttl``; and a key read or made while the erasure commits is never
kept or handed out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
import sqlalchemy as sa

from clinical_mlops import errors
from clinical_mlops.application.privacy import erase_subject
from clinical_mlops.application.services import Services
from clinical_mlops.clock import SystemClock
from clinical_mlops.errors import KeyNotFound, PrivacyError, SubjectNotFound
from clinical_mlops.ledger import Ledger
from clinical_mlops.ledger.store import entries
from clinical_mlops.privacy.identity import IdentityVault, data_keys
from clinical_mlops.privacy.keys import LocalKeyring
from evidence_helpers import Stores

ALICE = "MRN-3141-ALICE"
BOB = "MRN-2718-BOB"


def _erase_in_another_process(stores: Stores, identifier: str) -> dict[str, Any]:
    """Return the receipt of ``clinical-mlops privacy erase`` run as its own process."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "clinical_mlops",
            "privacy",
            "erase",
            identifier,
            "--reason",
            "art. 17 request",
            "--json",
            "-w",
            str(stores.root),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | stores.env() | {"PYTHONWARNINGS": "ignore"},
    )
    assert out.returncode == 0, out.stderr
    receipt: dict[str, Any] = json.loads(out.stdout)
    return receipt


def _note(ledger: Ledger, subject: str, n: int) -> int:
    return ledger.append(
        type="outcome",
        actor="ehr",
        subject=subject,
        payload={"prediction_seq": n, "outcome": 1},
    ).seq


def _entries_after(ledger: Ledger, seq: int) -> list[Any]:
    with ledger.store.engine.connect() as conn:
        return list(conn.execute(sa.select(entries).where(entries.c.seq > seq)))


def test_an_erasure_by_another_process_reaches_a_running_ledger(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLINICAL_MLOPS_ERASURE_TTL", "0")  # look before every use
    with stores.open(clock=SystemClock()) as ledger:
        alice = ledger.vault.pseudonym_for(ALICE)
        bob = ledger.vault.pseudonym_for(BOB)
        seqs = [_note(ledger, alice, 1), _note(ledger, bob, 2), _note(ledger, alice, 3)]
        assert ledger.read(seqs[0]).payload == {"prediction_seq": 1, "outcome": 1}
        alice_keys = {ledger.entry(s).key_id for s in (seqs[0], seqs[2])}

        receipt = _erase_in_another_process(stores, ALICE)
        assert receipt["pseudonym"] == alice

        # This process held alice's key in memory; it no longer opens her payloads ...
        for seq in (seqs[0], seqs[2]):
            view = ledger.read(seq)
            assert view.status == "erased" and view.payload is None
        for key_id in alice_keys:
            with pytest.raises(KeyNotFound):
                ledger.vault.data_key(key_id, provider=ledger.provider)
        # ... nor seals anything new under her name, with a named refusal that names no one.
        with pytest.raises(SubjectNotFound) as refused:
            _note(ledger, alice, 4)
        assert isinstance(refused.value, errors.SubjectErased)
        assert isinstance(refused.value, KeyNotFound)
        assert alice not in str(refused.value) and ALICE not in str(refused.value)
        assert "erased" in str(refused.value)
        # Bob is untouched.
        assert ledger.read(seqs[1]).payload == {"prediction_seq": 2, "outcome": 1}
        after_bob = _note(ledger, bob, 5)
        # Nothing was sealed for alice after her erasure; only bob's entry follows it.
        later = _entries_after(ledger, receipt["seq"])
        assert [(e.seq, e.subject) for e in later] == [(after_bob, bob)]
        assert not alice_keys & {e.key_id for e in later}
        assert ledger.verify().ok


def test_a_vault_learns_of_erasures_at_most_every_erasure_ttl(stores: Stores) -> None:
    """Within the bound a process still uses what it holds (one query per ``erasure_ttl``,
    none per row); a look at the erasures drops it."""
    with stores.open() as ledger, stores.open() as other:
        ledger.vault.erasure_ttl = 60.0
        alice = ledger.vault.pseudonym_for(ALICE)
        seq = _note(ledger, alice, 1)
        erase_subject(Services.using(ledger=other), identifier=ALICE, actor="dpo", reason="art. 17")
        assert ledger.read(seq).status == "ok"  # inside the bound: the documented window
        assert ledger.vault.refresh_erasures() == {alice}
        assert ledger.read(seq).status == "erased"
        with pytest.raises(errors.SubjectErased):
            _note(ledger, alice, 2)
        assert ledger.vault.refresh_erasures() == set()  # each erasure is learnt once


class _ErasingProvider:
    """A key provider that erases a subject (as another process would) in the middle of a
    wrap or unwrap: the moment between reading the vault and keeping a key."""

    def __init__(self, inner: LocalKeyring, *, on: str, erase: Any):
        self._inner = inner
        self._on = on
        self._erase = erase

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _maybe_erase(self, name: str) -> None:
        if name == self._on and self._erase is not None:
            erase, self._erase = self._erase, None
            erase()

    def wrap(self, plaintext: bytes, *, aad: bytes) -> tuple[str, bytes]:
        self._maybe_erase("wrap")
        return self._inner.wrap(plaintext, aad=aad)

    def unwrap(self, key_id: str, wrapped: bytes, *, aad: bytes) -> bytes:
        self._maybe_erase("unwrap")
        return self._inner.unwrap(key_id, wrapped, aad=aad)


def test_no_new_data_key_for_a_subject_erased_while_it_was_made(stores: Stores) -> None:
    with stores.open() as other:
        alice = other.vault.pseudonym_for(ALICE)
        vault = IdentityVault.open(stores.identity_url)
        try:
            provider = _ErasingProvider(
                LocalKeyring(stores.keys_dir),
                on="wrap",
                erase=lambda: erase_subject(
                    Services.using(ledger=other), identifier=ALICE, actor="dpo", reason="r"
                ),
            )
            with pytest.raises(errors.SubjectErased):
                vault.data_keys_for([alice], provider=provider)  # type: ignore[arg-type]
            with vault.engine.connect() as conn:
                left = conn.execute(
                    sa.select(sa.func.count()).where(data_keys.c.owner == alice)
                ).scalar()
            assert left == 0
        finally:
            vault.close()


def test_a_key_read_while_its_subject_is_erased_is_not_kept(stores: Stores) -> None:
    with stores.open() as other:
        alice = other.vault.pseudonym_for(ALICE)
        key_id = other.entry(_note(other, alice, 1)).key_id
        assert key_id is not None
        keyring = LocalKeyring(stores.keys_dir)

        # The erasure commits between reading the wrapped key and keeping it, and a look
        # at the erasures happens meanwhile (another thread): the key is refused.
        vault = IdentityVault.open(stores.identity_url, erasure_ttl=60.0)
        try:

            def erase_and_look() -> None:
                erase_subject(
                    Services.using(ledger=other), identifier=ALICE, actor="dpo", reason="r"
                )
                assert vault.refresh_erasures() == {alice}

            provider = _ErasingProvider(keyring, on="unwrap", erase=erase_and_look)
            with pytest.raises(errors.SubjectErased):
                vault.data_key(key_id, provider=provider)  # type: ignore[arg-type]
            with pytest.raises(KeyNotFound):
                vault.data_key(key_id, provider=keyring)
        finally:
            vault.close()


def test_a_key_read_just_before_an_erasure_is_dropped_at_the_next_look(stores: Stores) -> None:
    with stores.open() as other:
        alice = other.vault.pseudonym_for(ALICE)
        key_id = other.entry(_note(other, alice, 1)).key_id
        assert key_id is not None
        keyring = LocalKeyring(stores.keys_dir)
        vault = IdentityVault.open(stores.identity_url, erasure_ttl=60.0)
        try:
            provider = _ErasingProvider(
                keyring,
                on="unwrap",
                erase=lambda: erase_subject(
                    Services.using(ledger=other), identifier=ALICE, actor="dpo", reason="r"
                ),
            )
            # In flight when the erasure committed: inside the bound, handed out once.
            vault.data_key(key_id, provider=provider)  # type: ignore[arg-type]
            assert vault.refresh_erasures() == {alice}
            with pytest.raises(KeyNotFound):
                vault.data_key(key_id, provider=keyring)
        finally:
            vault.close()


@pytest.mark.parametrize("value", ["soon", "-1", "61", "nan", "inf"])
def test_erasure_ttl_from_the_environment_must_be_a_bound_in_seconds(
    stores: Stores, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CLINICAL_MLOPS_ERASURE_TTL", value)
    with pytest.raises(PrivacyError, match="CLINICAL_MLOPS_ERASURE_TTL must be a number of"):
        IdentityVault.open(stores.identity_url)


def test_erasure_ttl_defaults_to_two_seconds_and_follows_the_environment(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLINICAL_MLOPS_ERASURE_TTL", raising=False)
    vault = IdentityVault.open(stores.identity_url)
    assert vault.erasure_ttl == 2.0
    vault.close()
    monkeypatch.setenv("CLINICAL_MLOPS_ERASURE_TTL", "0.5")
    vault = IdentityVault.open(stores.identity_url)
    assert vault.erasure_ttl == 0.5
    vault.close()
