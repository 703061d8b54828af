"""Erasure test (issue 4, "must show"; R-A4): after erasing a subject no byte in any store
holds the identifier, nothing links the pseudonym back to it, the subject's payloads are
unreadable, the erasure is a ledger event naming only the pseudonym, and the ledger
still verifies."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from clinical_mlops.application.privacy import erase_subject
from clinical_mlops.application.services import Services
from clinical_mlops.errors import ConsentNotGranted, KeyNotFound, SubjectNotFound, WrongKey
from clinical_mlops.ledger import NewEntry
from clinical_mlops.privacy.consent import consent_covers, record_consent, require_consent
from clinical_mlops.privacy.crypto import open_sealed, payload_aad
from clinical_mlops.privacy.identity import IdentityVault
from evidence_helpers import Stores

IDENTIFIER = "MRN-7731-ALICE-EXAMPLE"
OTHER = "MRN-1002-BOB-EXAMPLE"


def _all_bytes(stores: Stores) -> bytes:
    """Every byte of every store: files on disk (SQLite) or every table row (PostgreSQL)."""
    chunks = [p.read_bytes() for p in stores.root.rglob("*") if p.is_file()]
    for url in (stores.ledger_url, stores.identity_url):
        if url.startswith("sqlite"):
            continue
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            for table in sa.inspect(engine).get_table_names():
                for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                    for value in row:
                        chunks.append(value if isinstance(value, bytes) else str(value).encode())
        engine.dispose()
    return b"\n".join(chunks)


def test_erasure_leaves_no_identifier_and_an_unreadable_but_verifiable_ledger(stores: Stores):
    with stores.open(checkpoint_every=20) as ledger:
        alice = ledger.vault.pseudonym_for(IDENTIFIER)
        bob = ledger.vault.pseudonym_for(OTHER)
        assert alice.startswith("psn_") and alice != bob
        assert ledger.vault.pseudonym_for(IDENTIFIER) == alice  # stable while it exists
        assert IDENTIFIER.encode() not in alice.encode()
        record_consent(
            ledger.vault,
            pseudonym=alice,
            purposes=["mortality_risk"],
            valid_from=datetime(2024, 1, 1, tzinfo=UTC),
            valid_until=None,
            recorded_by="dr.a",
        )
        alice_seqs = []
        for i in range(30):
            subject = alice if i % 2 == 0 else bob
            receipt = ledger.append(
                type="outcome",
                actor="ehr",
                subject=subject,
                payload={
                    "prediction_seq": i,
                    "outcome": i % 3,
                    "note": f"{subject} secret clinical note {i}",
                },
            )
            if subject == alice:
                alice_seqs.append(receipt.seq)
        ledger.rotate_key(purpose="wrap", actor="security")  # alice now has two data keys
        alice_seqs.append(
            ledger.append(
                type="outcome",
                actor="ehr",
                subject=alice,
                payload={"prediction_seq": 99, "outcome": 1},
            ).seq
        )
        assert IDENTIFIER.encode() in _all_bytes(stores)  # the vault holds it before erasure
        sealed_before = {s: ledger.entry(s).payload for s in alice_seqs}
        dek_ids = {ledger.entry(s).key_id for s in alice_seqs}
        assert len(dek_ids) == 2

        receipt = erase_subject(
            Services.using(ledger=ledger), identifier=IDENTIFIER, actor="dpo", reason="art. 17 #42"
        )
        assert receipt.pseudonym == alice and receipt.data_keys == 2 and receipt.consents == 1

        # The erasure is an audited event naming the pseudonym, never the identity.
        event = ledger.read(receipt.seq)
        assert event.entry.type == "erasure" and event.entry.subject is None
        assert json.loads(event.entry.public) == {"pseudonym": alice}
        assert event.payload["reason"] == "art. 17 #42"  # type: ignore[index]
        # Payloads read as erased; the ciphertext is still there but nobody can open it.
        for seq in alice_seqs:
            view = ledger.read(seq)
            assert view.status == "erased" and view.payload is None
            assert ledger.entry(seq).payload == sealed_before[seq]
        for dek in dek_ids:
            with pytest.raises(KeyNotFound):
                ledger.vault.data_key(dek, provider=ledger.provider)
        # Bob is untouched.
        assert ledger.read(1).payload["note"].endswith("note 1")  # type: ignore[index]
        # Nothing links the pseudonym back: the mapping is gone and cannot be recreated.
        with pytest.raises(SubjectNotFound):
            ledger.vault.pseudonym_for(IDENTIFIER, create=False)
        assert not ledger.vault.has_pseudonym(alice)
        assert ledger.vault.pseudonym_for(IDENTIFIER) != alice  # a new stay gets a new one
        erase_subject(
            Services.using(ledger=ledger), identifier=IDENTIFIER, actor="dpo", reason="cleanup"
        )
        with pytest.raises(SubjectNotFound):
            ledger.append(
                type="outcome",
                actor="ehr",
                subject=alice,
                payload={"prediction_seq": 0, "outcome": 1},
            )
        report = ledger.verify(thorough=True)
        assert report.ok, report.problems[:3]

    everything = _all_bytes(stores)
    assert IDENTIFIER.encode() not in everything
    assert IDENTIFIER.encode("utf-16-le") not in everything
    assert OTHER.encode() in everything  # the scan does see the vault's contents


def test_a_guessed_key_cannot_open_an_erased_payload(stores: Stores):
    with stores.open() as ledger:
        p = ledger.vault.pseudonym_for(IDENTIFIER)
        seq = ledger.append(
            type="outcome", actor="ehr", subject=p, payload={"prediction_seq": 1, "outcome": 1}
        ).seq
        erase_subject(Services.using(ledger=ledger), identifier=IDENTIFIER, actor="dpo", reason="r")
        entry = ledger.entry(seq)
        assert entry.payload is not None and entry.key_id is not None
        with pytest.raises(WrongKey):
            open_sealed(
                entry.payload,
                key=b"\x00" * 32,
                aad=payload_aad(
                    origin=ledger.origin, seq=seq, entry_type="outcome", key_id=entry.key_id
                ),
            )


def test_unknown_subject_erasure_writes_nothing(stores: Stores):
    with stores.open() as ledger:
        ledger.append(type="training_run", actor="p", payload={})
        size = ledger.size()
        with pytest.raises(SubjectNotFound, match="nothing was changed"):
            erase_subject(
                Services.using(ledger=ledger), identifier="MRN-NOBODY", actor="dpo", reason="r"
            )
        assert ledger.size() == size


def test_failed_audit_append_rolls_the_erasure_back(stores: Stores):
    with stores.open() as ledger:
        p = ledger.vault.pseudonym_for(IDENTIFIER)
        ledger.append(
            type="outcome", actor="ehr", subject=p, payload={"prediction_seq": 1, "outcome": 1}
        )
        with pytest.raises(RuntimeError):
            ledger.vault.erase(
                IDENTIFIER,
                before_commit=lambda *_: (_ for _ in ()).throw(RuntimeError("ledger unavailable")),
            )
        assert ledger.vault.pseudonym_for(IDENTIFIER, create=False) == p
        assert ledger.read(0).status == "ok"


def test_consent_scope_and_validity(tmp_path: Path):
    vault = IdentityVault.open(f"sqlite:///{tmp_path / 'identity.db'}")
    p = vault.pseudonym_for("MRN-1")
    start = datetime(2024, 1, 1, tzinfo=UTC)
    record_consent(
        vault,
        pseudonym=p,
        purposes=["mortality_risk", "quality_audit"],
        valid_from=start,
        valid_until=start + timedelta(days=365),
        recorded_by="dr.a",
    )
    assert consent_covers(
        vault, pseudonym=p, purpose="mortality_risk", at=start + timedelta(days=10)
    )
    assert not consent_covers(vault, pseudonym=p, purpose="research", at=start + timedelta(days=10))
    assert not consent_covers(
        vault, pseudonym=p, purpose="mortality_risk", at=start + timedelta(days=400)
    )
    assert not consent_covers(
        vault, pseudonym=p, purpose="mortality_risk", at=start - timedelta(days=1)
    )
    with pytest.raises(ConsentNotGranted, match="'research'"):
        require_consent(vault, pseudonym=p, purpose="research", at=start)
    with pytest.raises(SubjectNotFound):
        record_consent(
            vault,
            pseudonym="psn_" + "0" * 32,
            purposes=["x"],
            valid_from=start,
            valid_until=None,
            recorded_by="a",
        )
    with pytest.raises(ValueError, match="after valid_from"):
        record_consent(
            vault, pseudonym=p, purposes=["x"], valid_from=start, valid_until=start, recorded_by="a"
        )
    vault.close()


def test_pseudonyms_are_random_not_derived_from_the_identifier(tmp_path: Path):
    a = IdentityVault.open(f"sqlite:///{tmp_path / 'a.db'}")
    b = IdentityVault.open(f"sqlite:///{tmp_path / 'b.db'}")
    assert a.pseudonym_for("MRN-1") != b.pseudonym_for("MRN-1")
    a.close()
    b.close()


def test_batch_with_erased_subject_is_refused(stores: Stores):
    with stores.open() as ledger:
        p = ledger.vault.pseudonym_for(IDENTIFIER)
        erase_subject(Services.using(ledger=ledger), identifier=IDENTIFIER, actor="dpo", reason="r")
        size = ledger.size()
        with pytest.raises(SubjectNotFound):
            ledger.append_batch(
                [
                    NewEntry(
                        type="outcome",
                        actor="ehr",
                        subject=p,
                        payload={"prediction_seq": 1, "outcome": 1},
                    )
                ]
            )
        assert ledger.size() == size
