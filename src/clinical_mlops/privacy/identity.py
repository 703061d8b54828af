"""The identity vault: the only place where a patient identifier meets its pseudonym.

It lives in its own database (``identity.db`` or ``CLINICAL_MLOPS_IDENTITY_URL``),
apart from the ledger and the metadata, and holds five tables:

- ``subjects``: identifier -> random pseudonym (``psn_`` + 128 random bits; never
  a hash of the identifier, so it cannot be recomputed from a guessed identifier);
- ``data_keys``: each subject's AES-256 data keys, stored wrapped by the key
  provider's wrap key;
- ``consents``: consent scope (purposes) and validity per pseudonym;
- ``encounters``: an EHR encounter id (per subject) -> random pseudonym (``enc_``);
- ``erasures``: the pseudonyms erased, numbered in the order they were erased (no
  identifier; the pseudonym is already public in the ledger's ``erasure`` entry).

Erasing a subject deletes the first four (SQLite with ``secure_delete`` and a
truncating WAL checkpoint, so the identifier's bytes are overwritten) and adds the
pseudonym to ``erasures``, after which the pseudonym links to nothing and the
ledger payloads sealed under the subject's data keys cannot be opened by anyone.

Running processes: each vault keeps unwrapped data keys in memory, so it looks at
``erasures`` at most every ``erasure_ttl`` seconds (:data:`ERASURE_TTL`, 2 s, or
``CLINICAL_MLOPS_ERASURE_TTL``) — one indexed query, never one per row — before it
hands out a key, drops the erased subjects' keys and refuses them from then on with
:class:`~clinical_mlops.errors.SubjectErased`. A key that is not in memory is read
from the database, where an erased subject's keys no longer exist. So within
``erasure_ttl`` of an erasure committing, no process opens or seals anything of that
subject any more; that bound is the guarantee, not "at once".
"""

from __future__ import annotations

import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from clinical_mlops.database import (
    driver_execute,
    open_engine,
    probe_writable,
    write_transaction,
)
from clinical_mlops.errors import KeyNotFound, PrivacyError, SubjectErased, SubjectNotFound
from clinical_mlops.hashing import canonical_json_scalars
from clinical_mlops.privacy.crypto import new_data_key
from clinical_mlops.privacy.keys import KeyProvider

__all__ = ["ERASURE_TTL", "SYSTEM_OWNER", "IdentityVault", "chunks", "new_pseudonym"]

SYSTEM_OWNER = "_system"
_LOCK = "clinical_mlops_identity"

metadata = sa.MetaData()
subjects = sa.Table(
    "subjects",
    metadata,
    sa.Column("pseudonym", sa.String(40), primary_key=True),
    sa.Column("identifier", sa.Text, nullable=False, unique=True),
    sa.Column("created", sa.String(40), nullable=False),
)
data_keys = sa.Table(
    "data_keys",
    metadata,
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(40), nullable=False, index=True),
    sa.Column("kek_id", sa.String(64), nullable=False),
    sa.Column("wrapped", sa.LargeBinary, nullable=False),
    sa.Column("created", sa.String(40), nullable=False),
)
consents = sa.Table(
    "consents",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pseudonym", sa.String(40), nullable=False, index=True),
    sa.Column("purposes", sa.Text, nullable=False),
    sa.Column("valid_from", sa.String(40), nullable=False),
    sa.Column("valid_until", sa.String(40), nullable=True),
    sa.Column("recorded_at", sa.String(40), nullable=False),
    sa.Column("recorded_by", sa.Text, nullable=False),
)
# A patient's encounters (an EHR's visit ids), pseudonymised like the patient: random, deleted
# with the patient's mapping at erasure.
encounters = sa.Table(
    "encounters",
    metadata,
    sa.Column("pseudonym", sa.String(40), primary_key=True),
    sa.Column("owner", sa.String(40), nullable=False, index=True),
    sa.Column("identifier", sa.Text, nullable=False),
    sa.Column("created", sa.String(40), nullable=False),
    sa.UniqueConstraint("owner", "identifier", name="uq_encounters_owner_identifier"),
)
erasures = sa.Table(
    "erasures",
    metadata,
    # Erasures are serialised by the vault's write lock, so their numbers grow in commit
    # order: a process that has seen number n has seen every erasure before it.
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pseudonym", sa.String(40), nullable=False, unique=True),
    sa.Column("erased", sa.String(40), nullable=False),
)

#: seconds within which every running process learns of an erasure (default)
ERASURE_TTL = 2.0
#: the longest ``erasure_ttl`` accepted: beyond it erasure would not be "without undue delay"
_ERASURE_TTL_MAX = 60.0
_ERASED = (
    "the subject was erased (R-A4): their data keys are destroyed, so nothing of theirs "
    "can be read, shown or recorded any more"
)


_LATEST_KEYS = (
    "SELECT owner, key_id, wrapped, created FROM data_keys WHERE owner IN ({marks}) AND kek_id = ?"
)


def chunks(items: list[str], size: int = 500) -> Iterator[list[str]]:
    """Yield ``items`` in slices small enough for any database's bound-parameter limit."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def new_pseudonym() -> str:
    """Return a fresh random pseudonym (``psn_`` + 32 hex digits, 128 random bits)."""
    return "psn_" + secrets.token_hex(16)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _erasure_ttl(value: float | None) -> float:
    """Return the erasure refresh bound: ``value``, else ``CLINICAL_MLOPS_ERASURE_TTL``, else 2 s."""
    where = "erasure_ttl"
    if value is None:
        text = os.environ.get("CLINICAL_MLOPS_ERASURE_TTL")
        if text is None or not text.strip():
            return ERASURE_TTL
        where = "CLINICAL_MLOPS_ERASURE_TTL"
        try:
            value = float(text)
        except ValueError:
            value = math.nan
    if not (isinstance(value, int | float) and 0 <= value <= _ERASURE_TTL_MAX):
        raise PrivacyError(
            f"{where} must be a number of seconds from 0 to {_ERASURE_TTL_MAX:g} (how long a "
            f"running process may take to learn of an erasure), got {value!r}"
        )
    return float(value)


def _dek_aad(key_id: str, owner: str) -> bytes:
    return canonical_json_scalars(
        {"kind": "clinical-mlops/data-key/v1", "key_id": key_id, "owner": owner}
    )


@dataclass(frozen=True)
class ErasureResult:
    """What an erasure destroyed (counts only; the identifier is not echoed)."""

    pseudonym: str
    data_keys: int
    consents: int
    audit_seq: int | None = None


class IdentityVault:
    """Pseudonyms, data keys and consent records for one workspace."""

    def __init__(self, engine: Engine, *, url: str, erasure_ttl: float | None = None):
        self.engine = engine
        self.url = url
        #: seconds within which this vault learns of an erasure made by any process
        self.erasure_ttl = _erasure_ttl(erasure_ttl)
        # Unwrapped data keys (id -> owner, key), oldest first, at most KEYS_KEPT: a service
        # that sees millions of patients keeps neither the memory nor the plaintext keys of
        # all of them.
        self._dek_cache: dict[str, tuple[str, bytes]] = {}
        self._active: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        # Subjects erased since this vault first looked (earlier ones were never in memory),
        # the number of the last erasure seen (None: not looked yet) and when it looked.
        self._erased: set[str] = set()
        self._erasure_seq: int | None = None
        self._erasures_at = -math.inf
        self._refresh_lock = threading.Lock()

    @classmethod
    def open(
        cls, url: str, *, create: bool = True, erasure_ttl: float | None = None
    ) -> IdentityVault:
        """Return the vault at ``url``, creating its tables when ``create``.

        ``erasure_ttl`` (seconds, default ``CLINICAL_MLOPS_ERASURE_TTL`` or 2) bounds how
        long this process may take to learn of an erasure made by another one.
        """
        ttl = _erasure_ttl(erasure_ttl)  # checked first: a refusal leaves nothing open
        engine = open_engine(url, what="identity vault", create=create, secure_delete=True)
        if create:
            with write_transaction(engine, lock_name=_LOCK) as conn:
                metadata.create_all(conn)
        return cls(engine, url=url, erasure_ttl=ttl)

    def close(self) -> None:
        self.engine.dispose()

    def probe(self) -> str | None:
        """Return None when the vault can be written now, else the reason (no path or URL)."""
        return probe_writable(self.engine, table="subjects", column="pseudonym")

    # -- pseudonyms ------------------------------------------------------------------------
    def pseudonym_for(self, identifier: str, *, create: bool = True) -> str:
        """Return the subject's pseudonym, creating one when ``create`` (else SubjectNotFound)."""
        if not isinstance(identifier, str) or not identifier:
            raise SubjectNotFound("a subject identifier must be a non-empty string")
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(subjects.c.pseudonym).where(subjects.c.identifier == identifier)
            ).scalar()
        if found is not None:
            return str(found)
        if not create:
            raise SubjectNotFound(
                "no pseudonym is recorded for that subject in the identity vault "
                "(unknown, or already erased); nothing was changed"
            )
        with write_transaction(self.engine, lock_name=_LOCK) as conn:
            found = conn.execute(
                sa.select(subjects.c.pseudonym).where(subjects.c.identifier == identifier)
            ).scalar()
            if found is not None:
                return str(found)
            pseudonym = new_pseudonym()
            conn.execute(
                subjects.insert().values(pseudonym=pseudonym, identifier=identifier, created=_now())
            )
        return pseudonym

    def encounter_pseudonym(self, owner: str, identifier: str) -> str:
        """Return the pseudonym of encounter ``identifier`` of the subject ``owner`` (a pseudonym).

        Random (``enc_`` + 128 bits), the same for every request naming the encounter, and
        deleted with the subject's mapping when the subject is erased. The store's unique
        key decides between writers racing to create it.
        """
        if not isinstance(identifier, str) or not identifier:
            raise SubjectNotFound("an encounter identifier must be a non-empty string")
        query = sa.select(encounters.c.pseudonym).where(
            encounters.c.owner == owner, encounters.c.identifier == identifier
        )
        try:
            with self.engine.connect() as conn:
                found = conn.execute(query).scalar()
        except (sa.exc.OperationalError, sa.exc.ProgrammingError):
            found = None  # a vault from before encounters were recorded: made below
        if found is not None:
            return str(found)
        with write_transaction(self.engine, lock_name=_LOCK) as conn:
            encounters.create(conn, checkfirst=True)
            found = conn.execute(query).scalar()
            if found is not None:
                return str(found)
            pseudonym = "enc_" + secrets.token_hex(16)
            conn.execute(
                encounters.insert().values(
                    pseudonym=pseudonym, owner=owner, identifier=identifier, created=_now()
                )
            )
        return pseudonym

    def has_pseudonym(self, pseudonym: str) -> bool:
        """Return True while the pseudonym is still mapped (not erased)."""
        with self.engine.connect() as conn:
            return (
                conn.execute(
                    sa.select(subjects.c.pseudonym).where(subjects.c.pseudonym == pseudonym)
                ).scalar()
                is not None
            )

    # -- data keys -------------------------------------------------------------------------
    def data_key_for(self, owner: str, *, provider: KeyProvider) -> tuple[str, bytes]:
        """Return (data-key id, key) that new payloads of ``owner`` are sealed with.

        The key is wrapped by the provider's *active* wrap key; after a rotation
        the owner gets a fresh data key under the new wrap key, and older data
        keys (under older wrap keys) keep opening older payloads.
        """
        return self.data_keys_for([owner], provider=provider)[owner]

    def data_keys_for(
        self, owners: Iterable[str], *, provider: KeyProvider
    ) -> dict[str, tuple[str, bytes]]:
        """Return owner -> (data-key id, key) for many owners at once (see :meth:`data_key_for`).

        Keys used before cost nothing; the others are read in one query and unwrapped,
        and owners without a key under the active wrap key get one, all written in one
        transaction. An owner that is not (or no longer) in the vault raises
        SubjectNotFound and nothing is created; one erased (by any process, as of the
        last look at most ``erasure_ttl`` ago) raises SubjectErased.
        """
        self._check_erasures()
        kek_id = provider.active_key_id("wrap")
        out: dict[str, tuple[str, bytes]] = {}
        todo: list[str] = []
        with self._lock:
            for owner in dict.fromkeys(owners):
                if owner in self._erased:
                    raise SubjectErased(_ERASED)
                cached = self._active.get((owner, kek_id))
                if cached is not None and cached in self._dek_cache:
                    out[owner] = (cached, self._dek_cache[cached][1])
                else:
                    todo.append(owner)
        if not todo:
            return out
        latest: dict[str, Any] = {}
        known: set[str] = set()
        with self.engine.connect() as conn:
            for part in chunks(todo):
                # On the driver: a first prediction for a patient runs this (see database.driver_execute).
                marks = ", ".join("?" * len(part))
                for owner, key_id, wrapped, created in driver_execute(
                    conn, _LATEST_KEYS.format(marks=marks), [*part, kek_id]
                ).fetchall():
                    best = latest.get(owner)
                    if best is None or created > best[2]:
                        latest[owner] = (key_id, wrapped, created)
            people = [o for o in todo if o not in latest and o != SYSTEM_OWNER]
            for part in chunks(people):
                known.update(
                    conn.execute(
                        sa.select(subjects.c.pseudonym).where(subjects.c.pseudonym.in_(part))
                    ).scalars()
                )
        unknown = [o for o in people if o not in known]
        if unknown:
            if self._erased_in_store(unknown):
                raise SubjectErased(_ERASED)
            raise SubjectNotFound(
                f"pseudonym {unknown[0]} is not in the identity vault (unknown or erased); "
                "no data can be written for it"
            )
        fresh: dict[str, tuple[str, bytes, str]] = {}
        for owner, (key_id, wrapped, _) in latest.items():
            key = provider.unwrap(kek_id, bytes(wrapped), aad=_dek_aad(key_id, owner))
            fresh[owner] = (key_id, key, kek_id)
        created = []
        for owner in (o for o in todo if o not in latest):
            key = new_data_key()
            key_id = "dek_" + secrets.token_hex(12)
            used_kek, wrapped = provider.wrap(key, aad=_dek_aad(key_id, owner))
            created.append(
                {
                    "key_id": key_id,
                    "owner": owner,
                    "kek_id": used_kek,
                    "wrapped": wrapped,
                    "created": _now(),
                }
            )
            fresh[owner] = (key_id, key, used_kek)
        if created:
            with write_transaction(self.engine, lock_name=_LOCK) as conn:
                # Under the write lock that erasures take: a subject erased since it was
                # looked up above gets no new key (the transaction rolls back).
                people = [row["owner"] for row in created if row["owner"] != SYSTEM_OWNER]
                present: set[str] = set()
                for part in chunks(people):
                    present.update(
                        conn.execute(
                            sa.select(subjects.c.pseudonym).where(subjects.c.pseudonym.in_(part))
                        ).scalars()
                    )
                if any(o not in present for o in people):
                    raise SubjectErased(_ERASED)
                conn.execute(data_keys.insert(), created)
        with self._lock:
            # An erasure seen while the keys were read: they are not kept, nor handed out.
            if any(owner in self._erased for owner in fresh):
                raise SubjectErased(_ERASED)
            for owner, (key_id, key, kek) in fresh.items():
                _keep(self._dek_cache, key_id, (owner, key))
                _keep(self._active, (owner, kek), key_id)
                out[owner] = (key_id, key)
        return out

    def data_key(self, key_id: str, *, provider: KeyProvider) -> bytes:
        """Return the unwrapped data key ``key_id``; KeyNotFound if erased or never created.

        A key of a subject erased by any process is refused within ``erasure_ttl``: its
        copy in memory is dropped then, and the database no longer holds it.
        """
        self._check_erasures()
        with self._lock:
            hit = self._dek_cache.get(key_id)
            if hit is not None:
                return hit[1]
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(data_keys.c.owner, data_keys.c.kek_id, data_keys.c.wrapped).where(
                    data_keys.c.key_id == key_id
                )
            ).first()
        if row is None:
            raise KeyNotFound(f"data key {key_id!r} is not in the identity vault ({self.url})")
        owner = str(row.owner)
        key = provider.unwrap(str(row.kek_id), bytes(row.wrapped), aad=_dek_aad(key_id, owner))
        with self._lock:
            # Erased while it was being read: neither kept nor handed out.
            if owner in self._erased:
                raise SubjectErased(_ERASED)
            _keep(self._dek_cache, key_id, (owner, key))
        return key

    # -- erasures made by any process ----------------------------------------------------------
    def refresh_erasures(self) -> set[str]:
        """Return the pseudonyms erased since this vault last looked, their keys dropped from memory.

        Runs by itself at most every ``erasure_ttl`` seconds, before any key is handed
        out; call it to learn of erasures at once. The first look only notes where the
        erasures stand: keys of subjects erased earlier were never in memory.
        """
        with self._refresh_lock:
            return self._poll_erasures()

    def _check_erasures(self) -> None:
        if time.monotonic() - self._erasures_at < self.erasure_ttl:
            return
        with self._refresh_lock:
            if time.monotonic() - self._erasures_at < self.erasure_ttl:
                return  # another thread looked while this one waited
            self._poll_erasures()

    def _poll_erasures(self) -> set[str]:
        started = time.monotonic()
        with self.engine.connect() as conn:
            if self._erasure_seq is None:
                rows: list[Any] = []
                last = int(conn.execute(sa.select(sa.func.max(erasures.c.seq))).scalar() or 0)
            else:
                last = self._erasure_seq
                rows = list(
                    conn.execute(
                        sa.select(erasures.c.seq, erasures.c.pseudonym)
                        .where(erasures.c.seq > last)
                        .order_by(erasures.c.seq)
                    )
                )
        fresh = {str(r.pseudonym) for r in rows}
        with self._lock:
            self._forget(fresh)
            self._erasure_seq = max([last, *(int(r.seq) for r in rows)])
            # The look began at ``started``: erasures committed after it are caught next time.
            self._erasures_at = started
        return fresh

    def _forget(self, owners: set[str]) -> None:
        """Drop the keys of ``owners`` from memory and refuse them from now on (holds _lock)."""
        if not owners:
            return
        self._erased |= owners
        for key_id in [k for k, (owner, _) in self._dek_cache.items() if owner in owners]:
            del self._dek_cache[key_id]
        for slot in [s for s in self._active if s[0] in owners]:
            del self._active[slot]

    def _erased_in_store(self, pseudonyms: list[str]) -> bool:
        """Return True when any of ``pseudonyms`` is recorded as erased."""
        with self.engine.connect() as conn:
            for part in chunks(pseudonyms):
                found = conn.execute(
                    sa.select(erasures.c.pseudonym).where(erasures.c.pseudonym.in_(part)).limit(1)
                ).first()
                if found is not None:
                    return True
        return False

    # -- erasure ---------------------------------------------------------------------------
    def erase(
        self,
        identifier: str,
        *,
        before_commit: Callable[[str, int, int], int] | None = None,
    ) -> ErasureResult:
        """Return what was destroyed after deleting the subject's mapping, data keys and consents.

        ``before_commit(pseudonym, n_data_keys, n_consents)`` runs inside the
        vault transaction, after the deletes and before the commit (the ledger
        records the erasure there); if it raises, nothing is erased. The same
        transaction records the pseudonym in ``erasures``, from which every other
        process learns of it within its ``erasure_ttl``.
        """
        pseudonym = self.pseudonym_for(identifier, create=False)
        audit_seq = None
        with write_transaction(self.engine, lock_name=_LOCK) as conn:
            n_keys = conn.execute(data_keys.delete().where(data_keys.c.owner == pseudonym)).rowcount
            n_cons = conn.execute(
                consents.delete().where(consents.c.pseudonym == pseudonym)
            ).rowcount
            conn.execute(subjects.delete().where(subjects.c.pseudonym == pseudonym))
            encounters.create(conn, checkfirst=True)
            conn.execute(encounters.delete().where(encounters.c.owner == pseudonym))
            conn.execute(erasures.insert().values(pseudonym=pseudonym, erased=_now()))
            if before_commit is not None:
                audit_seq = before_commit(pseudonym, n_keys, n_cons)
        with self._lock:
            self._forget({pseudonym})
        self.scrub()
        return ErasureResult(
            pseudonym=pseudonym, data_keys=n_keys, consents=n_cons, audit_seq=audit_seq
        )

    def scrub(self) -> None:
        """Fold the SQLite write-ahead log into the database and truncate it.

        With ``secure_delete`` on, deleted rows are zeroed in the database pages;
        the WAL still holds older page images until it is checkpointed and
        truncated. (PostgreSQL keeps dead tuples until VACUUM and WAL until
        recycled: see docs/LEDGER.md.)
        """
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").all()
        elif self.engine.dialect.name == "postgresql":
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                for table in ("subjects", "data_keys", "consents", "encounters"):
                    conn.exec_driver_sql(f"VACUUM FULL {table}")


#: unwrapped data keys (and which key is each owner's active one) kept per vault at most
KEYS_KEPT = 100_000


def _keep(cache: dict[Any, Any], key: Any, value: Any) -> None:
    """Store ``value`` in ``cache``, dropping the oldest entries beyond :data:`KEYS_KEPT`."""
    cache.pop(key, None)
    cache[key] = value
    while len(cache) > KEYS_KEPT:
        del cache[next(iter(cache))]
