"""The ledger: append encrypted, signed entries; make checkpoints; read and prove.

:class:`Ledger` ties together the row store, the key provider (signing key,
wrap keys), the identity vault (per-subject data keys) and the checkpoint log.
Appends are serialised by the store's write lock, so threads and processes
share one valid order; an append returns only after its transaction commits
(WAL + ``synchronous=FULL`` on SQLite, a synchronous commit on PostgreSQL), so
an acknowledged entry is durable.

Group commit: appends that arrive from several threads while a transaction is
being written wait for it, and the next of them writes all that queued up in one
transaction (one commit, one fsync). Each caller still gets back only its own
receipts, and only once the transaction holding them has committed; a failed
transaction fails every append in it, and nothing of it is written.

Unique keys: an inference claims its request id, a decision or an outcome its
prediction (:mod:`clinical_mlops.ledger.claims`), in the same transaction as the
entry. A key already held fails the transaction on the database's primary key, so
nothing of it is written; when the transaction held other threads' appends too, each
is then written alone, so only the append whose key was taken is refused
(:class:`~clinical_mlops.errors.AlreadyRecorded`).

Seals: the last entry of each transaction carries the Ed25519 signature; the
entries before it in the same transaction carry an empty signature and are
*sealed* by it, because its body holds the previous leaf hash, which holds the
body before it, and so on back to the previous sealed entry. Changing any sealed
entry therefore breaks the seal's signature (see :mod:`clinical_mlops.ledger.verify`),
and one signature per transaction instead of one per entry is what lets a batch
of a thousand predictions be audited at the speed of scoring it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, cast

import sqlalchemy as sa

from clinical_mlops.clock import Clock, SystemClock, utc_iso
from clinical_mlops.errors import (
    AlreadyRecorded,
    ClockBehindLedger,
    EntryNotFound,
    EntryPayloadInvalid,
    KeyNotFound,
    KeyProviderUnavailable,
    LedgerCorrupted,
    LedgerNotFound,
    StoreUnavailable,
    WitnessRefused,
    WrongKey,
)
from clinical_mlops.hashing import canonical_json, canonical_json_scalars
from clinical_mlops.ledger.checkpoint_log import CheckpointLog, append_line, configured_witnesses
from clinical_mlops.ledger.claims import (
    CLAIMING_TYPES,
    SCOPES,
    ClaimsIndex,
    IndexBuilder,
    claims_metadata,
    holders,
    insert_claims,
    latest,
    read_index,
    stored_key,
    unique_keys,
)
from clinical_mlops.ledger.entries import (
    Checkpoint,
    StoredEntry,
    body_bytes,
    checkpoint_message,
    entry_signing_message,
    leaf_bytes,
    validate_new_entry,
)
from clinical_mlops.ledger.merkle import (
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_from_leaf_hashes,
)
from clinical_mlops.ledger.store import CHUNK, LedgerStore, StoredTree, entries
from clinical_mlops.ledger.verify import VerifyReport, parse_row, verify_ledger
from clinical_mlops.ledger.witness import WitnessClient
from clinical_mlops.privacy.crypto import open_sealed, payload_aad, seal
from clinical_mlops.privacy.identity import SYSTEM_OWNER, IdentityVault
from clinical_mlops.privacy.keys import KeyProvider, Signer, provider_for_workspace

__all__ = ["EntryView", "Ledger", "NewEntry", "Receipt", "record"]

_log = logging.getLogger(__name__)

PayloadStatus = Literal["ok", "erased", "purged"]


@dataclass(frozen=True)
class NewEntry:
    """One entry to append (see :mod:`clinical_mlops.ledger.entries` for the types)."""

    type: str
    actor: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    subject: str | None = None
    public: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Receipt:
    """What the caller gets back once an entry is durable."""

    seq: int
    time: str
    leaf_hash: str


@dataclass(eq=False)
class _Pending:
    """One caller's prepared items waiting in the group-commit queue, and what became of them."""

    prepared: list[tuple[Any, ...]]
    # (item index, scope, key, stored key) of each unique key the items claim
    claims: list[tuple[int, str, str, bytes]] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    error: BaseException | None = None
    done: bool = False


@dataclass(frozen=True)
class EntryView:
    """An entry with its payload opened (or the reason it cannot be: erased, purged)."""

    entry: StoredEntry
    status: PayloadStatus
    payload: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        out = self.entry.to_json()
        out.pop("payload")
        out["public"] = json.loads(self.entry.public)
        out["payload_status"] = self.status
        out["payload"] = self.payload if self.status == "ok" else self.status
        return out


class Ledger:
    """An open audit ledger; see the module docstring."""

    def __init__(
        self,
        *,
        store: LedgerStore,
        provider: KeyProvider,
        vault: IdentityVault | str,
        checkpoint_log: CheckpointLog | None,
        clock: Clock | None = None,
        checkpoint_every: int = 1000,
        checkpoint_interval: timedelta = timedelta(hours=1),
        create_vault: bool = True,
        witnesses: Sequence[str] = (),
        witness_log: Path | None = None,
    ):
        self.store = store
        self.provider = provider
        self._vault = vault
        self._create_vault = create_vault
        self.checkpoint_log = checkpoint_log
        self.clock: Clock = clock or SystemClock()
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval = checkpoint_interval
        self._signer: tuple[str, Signer] | None = None
        self._lock = threading.Lock()
        # group commit: appends waiting for the transaction being written
        self._commit = threading.Condition()
        self._queue: list[_Pending] = []
        self._writing = False
        with store.engine.connect() as conn:
            try:
                self._origin: str | None = store.origin(conn)
                self._origin_problem = ""
            except LedgerCorrupted as exc:
                # Verification must still open it (it reports the damage); writes and
                # reads, which need the origin, refuse.
                self._origin, self._origin_problem = None, str(exc)
            latest = store.latest_checkpoint(conn)
            # The ledger as this process last saw it, (size, last leaf hash): every write
            # first checks that the ledger still continues it (see ``_check_continuity``).
            # A tip that cannot be read (verification reports why) sets no such mark.
            self._seen: tuple[int, str] | None
            try:
                size, leaf, _ = store.tip(conn)
                self._seen = (size, leaf)
            except (sa.exc.DBAPIError, ValueError):
                self._seen = None
        # No checkpoint yet: the first append makes one.
        self._last_cp = (latest.size, latest.time) if latest else (0, "1970-01-01T00:00:00Z")
        # (ledger size, leaf hashes of its incomplete last chunk) as this ledger last wrote
        # them: the next write completes that chunk without reading them back
        self._tail: tuple[int, list[str]] = (-1, [])
        self._claims: ClaimsIndex | None = None
        self.witnesses = list(witnesses)
        self.witness_log = witness_log
        # witness -> size of the latest checkpoint it cosigned, as last heard from it
        self._witnessed: dict[str, int] = {}
        self._witness_lock = threading.Lock()

    @property
    def origin(self) -> str:
        """The ledger's random id; LedgerCorrupted when its meta table is damaged."""
        if self._origin is None:
            raise LedgerCorrupted(self._origin_problem)
        return self._origin

    @property
    def vault(self) -> IdentityVault:
        """The identity vault, opened (and created, unless opened with ``create=False``) on first
        use: verification never needs it."""
        if isinstance(self._vault, str):
            with self._lock:  # threads racing here would each open (and leak) a vault
                if isinstance(self._vault, str):
                    self._vault = IdentityVault.open(self._vault, create=self._create_vault)
        return cast(IdentityVault, self._vault)

    @classmethod
    def open(
        cls,
        workspace: Any,
        *,
        clock: Clock | None = None,
        provider: KeyProvider | None = None,
        create: bool = True,
        **options: Any,
    ) -> Ledger:
        """Return the workspace's ledger (its ledger and identity databases, keys, checkpoint log).

        ``create=False`` opens an existing ledger (and identity vault) only and raises
        LedgerNotFound or LedgerCorrupted without writing anything. Even with
        ``create``, a new ledger is never made where the workspace's checkpoint log
        records a ledger with entries: a ledger database that is missing, or empty, while
        its checkpoint log is not, was lost, and LedgerNotFound names both and what to do.
        """
        url = workspace.database_url("ledger")
        log = CheckpointLog(workspace.path("checkpoint_log"))
        store = LedgerStore.open(url, create=create, guard=lambda: _refuse_lost(url, log))
        try:
            with store.engine.connect() as conn:
                empty = store.size(conn) == 0
            if empty:
                _refuse_lost(url, log)
            return cls(
                store=store,
                provider=provider or provider_for_workspace(workspace),
                vault=workspace.database_url("identity"),
                checkpoint_log=log,
                clock=clock,
                create_vault=create,
                witnesses=configured_witnesses(workspace.path("witnesses")),
                witness_log=workspace.path("witness_log"),
                **options,
            )
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        self.store.close()
        if not isinstance(self._vault, str):
            self._vault.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- appending -------------------------------------------------------------------------
    def _current_signer(self) -> tuple[str, Signer]:
        active = self.provider.active_key_id("sign")
        with self._lock:
            if self._signer is None or self._signer[0] != active:
                self._signer = self.provider.signer()
            return self._signer

    def append(
        self,
        *,
        type: str,
        actor: str,
        payload: Mapping[str, Any] | None = None,
        subject: str | None = None,
        public: Mapping[str, Any] | None = None,
    ) -> Receipt:
        """Return the receipt of one durable entry (see :meth:`append_batch`)."""
        item = NewEntry(
            type=type, actor=actor, payload=payload or {}, subject=subject, public=public
        )
        return self.append_batch([item])[0]

    def append_batch(self, items: Sequence[NewEntry]) -> list[Receipt]:
        """Return receipts for ``items``, appended in order in one durable transaction.

        Everything is validated and every data key resolved before the write lock
        is taken; a bad item rejects the whole batch and nothing is written. The
        items stay contiguous and in order even when their transaction also holds
        other threads' appends (group commit, see the module docstring).

        Raises ``AlreadyRecorded`` when an item claims a unique key that an entry
        already holds (``ledger.claims``): the whole batch is refused, nothing written.
        """
        checked = [
            validate_new_entry(
                entry_type=it.type,
                actor=it.actor,
                payload=it.payload,
                subject=it.subject,
                public=it.public,
            )
            for it in items
        ]
        keys = self.vault.data_keys_for(
            [it.subject or SYSTEM_OWNER for it in items], provider=self.provider
        )
        prepared = []
        for it, (schema, plaintext) in zip(items, checked, strict=True):
            key_id, key = keys[it.subject or SYSTEM_OWNER]
            public = canonical_json(dict(it.public)).decode("utf-8") if it.public else "{}"
            prepared.append((it, schema.id, key_id, key, plaintext, public))
        if not prepared:
            return []
        mine = _Pending(prepared, claims=self._claims_of(items))
        if mine.claims:
            self.ensure_claims()
        with self._commit:
            self._queue.append(mine)
            while self._writing and not mine.done:
                self._commit.wait()
            if not mine.done:
                # This thread writes everything queued so far, its own items included.
                self._writing = True
                group, self._queue = self._queue, []
        if not mine.done:
            try:
                self._write_group(group)
            finally:
                with self._commit:
                    for pending in group:
                        pending.done = True
                    self._writing = False
                    self._commit.notify_all()
        if mine.error is not None:
            raise mine.error
        return mine.receipts

    @staticmethod
    def _claims_of(items: Sequence[NewEntry]) -> list[tuple[int, str, str, bytes]]:
        """Return (item index, scope, key, stored key) of every unique key ``items`` claim."""
        out: list[tuple[int, str, str, bytes]] = []
        first: dict[tuple[str, str], int] = {}
        for i, it in enumerate(items):
            for scope, key in unique_keys(it.type, it.payload):
                if (scope, key) in first:
                    raise EntryPayloadInvalid(
                        f"items {first[(scope, key)]} and {i} of this batch both claim "
                        f"{scope} {key!r} ({SCOPES[scope]}); nothing was written"
                    )
                first[(scope, key)] = i
                out.append((i, scope, key, stored_key(scope, key)))
        return out

    def _write_group(self, group: list[_Pending]) -> None:
        """Write ``group`` in one transaction; record on each append what became of it."""
        try:
            self._write(group)
        except sa.exc.IntegrityError as exc:
            if len(group) > 1 and any(p.claims for p in group):
                # One append's key is taken: written alone, only that one is refused.
                for pending in group:
                    self._write_group([pending])
                return
            refused: BaseException = exc
            if len(group) == 1:
                try:
                    refused = self._already_recorded(group[0]) or exc
                except Exception as lookup:  # the database went away since: say that
                    refused = lookup
            for pending in group:
                pending.error = refused
        except BaseException as exc:
            for pending in group:
                pending.error = exc

    def _already_recorded(self, pending: _Pending) -> AlreadyRecorded | None:
        """Return the refusal of ``pending`` naming the first key it claims that is held."""
        if not pending.claims:
            return None
        with self.store.engine.connect() as conn:
            held = holders(conn, [(scope, key) for _, scope, key, _ in pending.claims])
        for index, scope, key, _ in pending.claims:
            seq = held.get((scope, key))
            if seq is not None:
                return AlreadyRecorded(
                    f"{scope} {key!r} is already held by ledger entry {seq} "
                    f"({SCOPES[scope]}); nothing of this batch was written",
                    scope=scope,
                    key=key,
                    seq=seq,
                    index=index,
                )
        return None

    def _write(self, group: list[_Pending]) -> None:
        """Write every queued append of ``group`` in one transaction, sealed by its last entry."""
        sig_key_id, signer = self._current_signer()
        total = sum(len(p.prepared) for p in group)
        # Every entry but the seal has an empty signature, so their leaves end the same way.
        unsigned_tail = b"\n" + canonical_json_scalars([sig_key_id, ""])
        sha256 = hashlib.sha256
        origin = self.origin
        with self.store.writer() as conn:
            size, prev, last = self.store.tip(conn)
            self._check_continuity(conn, size, prev)
            tip, tip_leaf = size, prev
            when = utc_iso(self.clock.now())
            self._check_clock(when, last)
            rows: list[tuple[Any, ...]] = []
            leaves: list[str] = []
            claimed: list[tuple[str, bytes, int]] = []
            seq = size
            seal_seq = size + total - 1
            for pending in group:
                claimed += [(scope, h, seq + i) for i, scope, _, h in pending.claims]
                receipts: list[Receipt] = []
                for it, schema_id, key_id, key, plaintext, public in pending.prepared:
                    blob = seal(
                        plaintext,
                        key=key,
                        aad=payload_aad(origin=origin, seq=seq, entry_type=it.type, key_id=key_id),
                    )
                    payload_hash = sha256(blob).hexdigest()
                    body = body_bytes(
                        {
                            "v": 1,
                            "seq": seq,
                            "time": when,
                            "type": it.type,
                            "schema": schema_id,
                            "actor": it.actor,
                            "subject": it.subject,
                            "key_id": key_id,
                            "payload_hash": payload_hash,
                            "public": public,
                            "prev": prev,
                        }
                    )
                    signature = ""
                    if seq == seal_seq:
                        signature = signer.sign(
                            entry_signing_message(
                                origin=origin, body_hash_hex=sha256(body).hexdigest()
                            )
                        ).hex()
                        leaf = leaf_bytes(body, sig_key_id=sig_key_id, signature=signature)
                    else:
                        leaf = body + unsigned_tail
                    lh = leaf_hash(leaf).hex()
                    # ENTRY_COLUMNS order
                    rows.append(
                        (
                            seq,
                            when,
                            it.type,
                            schema_id,
                            it.actor,
                            it.subject,
                            key_id,
                            payload_hash,
                            blob,
                            public,
                            prev,
                            lh,
                            sig_key_id,
                            signature,
                        )
                    )
                    leaves.append(lh)
                    receipts.append(Receipt(seq=seq, time=when, leaf_hash=lh))
                    prev = lh
                    seq += 1
                pending.receipts = receipts
            if claimed:  # first: a key already held fails the transaction before the entries
                insert_claims(conn, claimed)
            self.store.insert_entries(conn, rows)
            self.store.insert_chunks(conn, self._completed_chunks(conn, size, tip_leaf, leaves))
        # committed: remember the new incomplete chunk's leaves for the next write
        new_size = tip + len(leaves)
        self._seen = (new_size, leaves[-1])
        carried = self._own_tail(tip, tip_leaf)
        start = new_size - new_size % CHUNK
        if start >= tip:
            self._tail = (new_size, leaves[start - tip :])
        elif carried is not None:
            self._tail = (new_size, carried + leaves)
        else:
            self._tail = (-1, [])
        self._maybe_checkpoint(new_size)

    def probe(self) -> str | None:
        """Return None when an append could be written now, else why not (no path or URL).

        For readiness checks: the database takes a write transaction (nothing is
        written), the ledger still holds everything this process saw, and the clock
        is not behind the newest entry.
        """
        problem = self.store.probe()
        if problem is not None:
            return problem
        try:
            with self.store.engine.connect() as conn:
                size, leaf, last = self.store.tip(conn)
                self._check_continuity(conn, size, leaf)
        except StoreUnavailable:
            return "emptied, replaced or rolled back while open"
        except (sa.exc.DBAPIError, ValueError):
            return "cannot be read"
        try:
            self._check_clock(utc_iso(self.clock.now()), last)
        except ClockBehindLedger:
            return "the clock is behind the newest entry"
        return None

    def _check_continuity(self, conn: sa.Connection, size: int, tip_leaf: str) -> None:
        """Raise StoreUnavailable unless the ledger still holds everything this process saw.

        A ledger that is shorter than when this process last wrote or opened it, or
        whose entry at that point is another, was emptied, replaced or rolled back
        under the running process; appending to it would hand out seqs that name
        other records. Growth by other writers is fine.
        """
        if self._seen is None:
            return
        seen_size, seen_leaf = self._seen
        if size == seen_size and tip_leaf == seen_leaf:
            return
        if size > seen_size and (
            seen_size == 0
            or self.store.leaf_hashes(conn, seen_size - 1, seen_size) == [bytes.fromhex(seen_leaf)]
        ):
            return
        where = self.store.display_url
        raise StoreUnavailable(
            f"the ledger {where} holds {size} entries, but this process has seen {seen_size} "
            f"ending in leaf {seen_leaf[:16]}…: it was emptied, replaced or rolled back while "
            "open, so nothing was written. Put the ledger back, or restore it from a backup "
            "(docs/OPERATIONS.md, Restore) and run `clinical-mlops audit verify`"
        )

    @staticmethod
    def _check_clock(now: str, last: str | None) -> None:
        """Raise ClockBehindLedger when the clock reads earlier than the newest entry."""
        if last is not None and now < last:
            raise ClockBehindLedger(
                f"the clock reads {now}, earlier than the newest ledger entry ({last}); entry "
                "times never go backwards, so nothing was written. Correct the system clock "
                f"(NTP); appends resume once it passes {last}"
            )

    def _own_tail(self, size: int, tip_leaf: str) -> list[str] | None:
        """Return the incomplete chunk's leaves as this ledger wrote them, if still the tip.

        They are ours only when no other writer appended since: the same size and the same
        last leaf.
        """
        known_size, known = self._tail
        return known if known_size == size and known and known[-1] == tip_leaf else None

    def _completed_chunks(
        self, conn: sa.Connection, size: int, prev: str, leaves: list[str]
    ) -> list[dict[str, Any]]:
        new_size = size + len(leaves)
        out = []
        for idx in range(size // CHUNK, new_size // CHUNK):
            start, end = idx * CHUNK, (idx + 1) * CHUNK
            if end <= size:
                continue
            old: list[bytes] = []
            if start < size:
                own = self._own_tail(size, prev)
                if own is not None and len(own) == size - start:
                    old = [bytes.fromhex(h) for h in own]
                else:
                    old = self.store.leaf_hashes(conn, start, size)
            fresh = [bytes.fromhex(h) for h in leaves[max(start - size, 0) : end - size]]
            out.append({"idx": idx, "hash": root_from_leaf_hashes(old + fresh).hex()})
        return out

    # -- unique keys -----------------------------------------------------------------------
    def ensure_claims(self) -> ClaimsIndex:
        """Return the ledger's claims index, building it first if the ledger has none.

        A ledger written before unique keys were enforced is indexed once, under the
        write lock (appends wait): every readable inference, fallback, override and
        outcome claims its keys in seq order, the first entry holding a key keeps it,
        and keys held twice are reported in the returned index (and logged), not
        refused: those entries stay as written. Entries whose payload was erased or
        purged cannot be read, so their keys are not claimed (counted as unreadable).
        """
        if self._claims is not None:
            return self._claims
        with self.store.engine.connect() as conn:
            found = read_index(conn)
        if found is None:
            with self.store.writer() as conn:
                found = read_index(conn)
                if found is None:
                    found = self._build_claims(conn)
            if found.duplicate_entries:
                _log.warning("%s", found.report_text())
        self._claims = found
        return found

    def _build_claims(self, conn: sa.Connection) -> ClaimsIndex:
        claims_metadata.create_all(conn)
        size = self.store.size(conn)
        erased = self.erased_pseudonyms()
        builder = IndexBuilder(conn)
        start = 0
        while start < size:
            rows = conn.execute(
                sa.select(
                    entries.c.seq,
                    entries.c.type,
                    entries.c.subject,
                    entries.c.key_id,
                    entries.c.payload,
                )
                .where(
                    entries.c.seq >= start,
                    entries.c.seq < start + 5000,
                    entries.c.type.in_(CLAIMING_TYPES),
                )
                .order_by(entries.c.seq)
            ).all()
            builder.add(
                [(int(r[0]), str(r[1]), self._claim_payload(*r, erased=erased)) for r in rows]
            )
            start += 5000
        return builder.finish(time=utc_iso(self.clock.now()), entries=size)

    def _claim_payload(
        self,
        seq: int,
        entry_type: str,
        subject: str | None,
        key_id: str | None,
        blob: bytes | None,
        *,
        erased: set[str],
    ) -> dict[str, Any] | None:
        """Return an entry's payload, or None when it was purged or its subject erased.

        Any other failure to open it raises: an index that skipped a readable entry could
        let a duplicate through, so it is not built until the cause (a key missing from
        the provider, a damaged payload) is fixed.
        """
        if blob is None:
            return None
        try:
            if key_id is None:
                raise KeyNotFound("the entry has a payload but no data-key id")
            key = self.vault.data_key(key_id, provider=self.provider)
        except KeyNotFound as exc:
            if subject is not None and subject in erased:
                return None
            raise KeyNotFound(
                f"ledger entry {seq} cannot be opened to index its unique keys ({exc}); "
                "nothing was indexed. Restore the key, then start again"
            ) from exc
        try:
            plaintext = open_sealed(
                bytes(blob),
                key=key,
                where=f"ledger entry {seq}",
                aad=payload_aad(origin=self.origin, seq=seq, entry_type=entry_type, key_id=key_id),
            )
        except WrongKey as exc:
            raise WrongKey(
                f"{exc}; its unique keys cannot be indexed and nothing was indexed: run "
                "`clinical-mlops audit verify`"
            ) from exc
        payload = json.loads(plaintext)
        return payload if isinstance(payload, dict) else None

    def holders(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Return (scope, key) -> seq of the entry holding that unique key, for those held."""
        self.ensure_claims()
        with self.store.engine.connect() as conn:
            return holders(conn, pairs)

    def latest_correction(self, seq: int) -> int:
        """Return the seq of the newest correction of entry ``seq`` (``seq`` when uncorrected)."""
        self.ensure_claims()
        with self.store.engine.connect() as conn:
            return latest(conn, seq)

    # -- checkpoints -----------------------------------------------------------------------
    def _maybe_checkpoint(self, size: int) -> None:
        last_size, last_time = self._last_cp
        due_by_count = size - last_size >= self.checkpoint_every
        try:
            elapsed = self.clock.now() - datetime.fromisoformat(last_time.replace("Z", "+00:00"))
        except ValueError:
            elapsed = self.checkpoint_interval
        if due_by_count or elapsed >= self.checkpoint_interval:
            try:
                self.checkpoint(witness="background")
            except (StoreUnavailable, KeyProviderUnavailable, OSError) as exc:
                # The entries are committed and their callers get receipts; a checkpoint that
                # cannot be stored or signed now (disk full, key server away) is retried on
                # the next append.
                _log.warning("ledger checkpoint deferred, retried on the next append: %s", exc)

    def checkpoint(self, *, witness: Literal["wait", "background", "no"] = "wait") -> Checkpoint:
        """Return a signed checkpoint of the ledger as it stands now (made if needed).

        The checkpoint is stored in the database and appended to the checkpoint
        log outside it, then sent to the configured witnesses (``wait``: before
        returning; ``background``: on a thread, so a slow or absent witness never
        holds up the clinical write that triggered it). A witness that refuses or
        cannot be reached is recorded in the witness log and never fails the
        checkpoint. When the newest checkpoint already covers every entry it is
        returned unchanged (and still sent: a witness may have missed it).
        """
        sig_key_id, signer = self._current_signer()
        origin = self.origin
        with self.store.writer() as conn:
            size, leaf = self.store.head(conn)
            self._check_continuity(conn, size, leaf)
            self._seen = (size, leaf)
            latest = self.store.latest_checkpoint(conn)
            if latest is not None and latest.size == size:
                self._last_cp = (latest.size, latest.time)
                existing: Checkpoint | None = latest
            else:
                existing = None
        if existing is not None:
            if witness != "no":
                self._send_to_witnesses(existing, background=witness == "background")
            return existing
        with self.store.writer() as conn:
            size, leaf = self.store.head(conn)
            self._check_continuity(conn, size, leaf)
            self._seen = (size, leaf)
            latest = self.store.latest_checkpoint(conn)
            if latest is not None and latest.size == size:
                return latest
            root = StoredTree(self.store, conn, size).root().hex()
            when = utc_iso(self.clock.now())
            message = checkpoint_message(
                origin=origin, size=size, root=root, time=when, key_id=sig_key_id
            )
            cp = Checkpoint(
                origin=origin,
                size=size,
                root=root,
                time=when,
                key_id=sig_key_id,
                signature=signer.sign(message).hex(),
            )
            self.store.insert_checkpoint(conn, cp)
        if self.checkpoint_log is not None:
            self.checkpoint_log.append(cp)
        self._last_cp = (cp.size, cp.time)
        if witness != "no":
            self._send_to_witnesses(cp, background=witness == "background")
        return cp

    def checkpoint_note(self, cp: Checkpoint) -> str:
        """Return ``cp`` as a C2SP signed note (tlog-checkpoint)."""
        return cp.to_note(self.provider.public_keys()[cp.key_id])

    def _send_to_witnesses(self, cp: Checkpoint, *, background: bool) -> list[dict[str, Any]]:
        """Return one outcome per configured witness after offering it ``cp``."""
        if not self.witnesses:
            return []
        if background:
            threading.Thread(
                target=self._send_to_witnesses,
                args=(cp,),
                kwargs={"background": False},
                name="ledger-witness",
                daemon=True,
            ).start()
            return []
        note = self.checkpoint_note(cp)
        with self._witness_lock:
            return [self._offer(target, cp, note) for target in self.witnesses]

    def _offer(self, target: str, cp: Checkpoint, note: str) -> dict[str, Any]:
        """Return the outcome of offering ``cp`` to one witness, recorded in the witness log."""
        client = WitnessClient(target)
        old = self._witnessed.get(target, 0)
        outcome: dict[str, Any] = {
            "witness": target,
            "size": cp.size,
            "time": utc_iso(self.clock.now()),
        }
        for _ in range(2):  # a stale size is answered with the witness's size: retry once
            try:
                if old > cp.size:
                    raise WitnessRefused(
                        409,
                        f"the witness holds a checkpoint of {old} entries, the ledger "
                        f"{cp.size}: the ledger was cut or rolled back, or the witness "
                        "serves another ledger with this origin",
                        latest_size=old,
                    )
                proof = (
                    [bytes.fromhex(h) for h in self.consistency_proof(old, cp.size)["proof"]]
                    if old
                    else []
                )
                client.add_checkpoint(old, proof, note)
                self._witnessed[target] = cp.size
                outcome.update(status="cosigned")
                break
            except WitnessRefused as exc:
                outcome.update(status="refused", code=exc.status, reason=exc.reason)
                if exc.status != 409 or exc.latest_size is None or exc.latest_size == old:
                    break
                old = exc.latest_size
                if old > cp.size:
                    continue
            except (OSError, ValueError, EntryNotFound, LedgerCorrupted) as exc:
                outcome.update(status="unreachable", reason=str(exc) or type(exc).__name__)
                break
        if outcome["status"] != "cosigned":
            _log.warning(
                "witness %s did not cosign checkpoint %s: %s",
                target,
                cp.size,
                outcome.get("reason"),
            )
        if self.witness_log is not None:
            try:
                append_line(self.witness_log, outcome)
            except OSError as exc:
                _log.warning("witness log %s not written: %s", self.witness_log, exc)
        return outcome

    def offer_to_witnesses(self) -> list[dict[str, Any]]:
        """Return each configured witness's outcome for the newest checkpoint (made if needed)."""
        return self._send_to_witnesses(self.checkpoint(witness="no"), background=False)

    def rotate_key(self, *, purpose: Literal["wrap", "sign"], actor: str) -> Receipt:
        """Return the receipt of the ``key_rotation`` entry after rotating a provider key.

        New writes use the new key; old keys stay available to unwrap and verify.
        The rotation entry is signed with the *new* signing key when ``purpose``
        is ``sign``, so the first entry under a key records its introduction.
        """
        old, new = self.provider.rotate(purpose=purpose)
        return self.append(
            type="key_rotation",
            actor=actor,
            payload={"purpose": purpose},
            public={"purpose": purpose, "old_key_id": old, "new_key_id": new},
        )

    def checkpoints(self) -> list[Checkpoint]:
        """Return every checkpoint stored in the database, oldest first."""
        with self.store.engine.connect() as conn:
            return [
                Checkpoint(
                    origin=r.origin,
                    size=int(r.size),
                    root=r.root,
                    time=r.time,
                    key_id=r.key_id,
                    signature=r.signature,
                )
                for r in self.store.checkpoint_rows(conn)
            ]

    def verify(
        self,
        *,
        trusted: Sequence[Checkpoint] = (),
        witnessed: Sequence[tuple[str, Checkpoint]] = (),
        fail_fast: bool = False,
        thorough: bool = False,
    ) -> VerifyReport:
        """Return the verification report of the whole ledger (see ``ledger.verify``).

        Checkpoints from the checkpoint log outside the database and ``trusted``
        ones (e.g. exported to an auditor) are checked along with the database's.
        """
        logged, problems = self.checkpoint_log.read() if self.checkpoint_log else ([], [])
        with self.store.engine.connect() as conn, conn.begin():
            return verify_ledger(
                self.store,
                conn,
                public_keys=self.provider.public_keys(),
                trusted_checkpoints=[*logged, *trusted],
                witnessed=witnessed,
                extra_problems=problems,
                fail_fast=fail_fast,
                thorough=thorough,
            )

    # -- reading ---------------------------------------------------------------------------
    def size(self) -> int:
        """Return the number of entries."""
        with self.store.engine.connect() as conn:
            return self.store.size(conn)

    def entry(self, seq: int) -> StoredEntry:
        """Return the stored row ``seq``; EntryNotFound if there is none."""
        if not 0 <= seq < 2**63:  # beyond a database integer: the driver would overflow
            raise EntryNotFound(f"no ledger entry with seq {seq} (ledger has {self.size()})")
        with self.store.engine.connect() as conn:
            rows = list(self.store.raw_rows(conn, start=seq, end=seq + 1))
        if not rows:
            raise EntryNotFound(f"no ledger entry with seq {seq} (ledger has {self.size()})")
        try:
            return parse_row(*rows[0])
        except ValueError as exc:
            raise LedgerCorrupted(
                f"ledger entry {seq} is damaged ({exc}); run `clinical-mlops audit verify`"
            ) from None

    def read(self, seq: int) -> EntryView:
        """Return entry ``seq`` with its payload decrypted, or marked erased/purged."""
        return self._opened(self.entry(seq))

    def read_from(
        self, start: int, *, end: int | None = None, types: Collection[str] | None = None
    ) -> Iterator[EntryView]:
        """Yield the entries from seq ``start`` to ``end`` (excluded; None: the last), opened, in order.

        Only entries of ``types``, if given. One streamed query for the whole range instead
        of one per entry, for reading everything written since a known point (a batch run
        resuming, say); payloads are opened or marked erased/purged as by :meth:`read`.
        Raises ``LedgerCorrupted`` for a row that cannot be parsed (``clinical-mlops audit
        verify`` names it).
        """
        wanted = None if types is None else {t.encode() for t in types} | set(types)
        with self.store.engine.connect() as conn:
            for values, classes in self.store.raw_rows(conn, start=max(start, 0), end=end):
                if wanted is not None and values[2] not in wanted:  # the type, text or bytes
                    continue
                try:
                    entry = parse_row(values, classes)
                except ValueError as exc:
                    raise LedgerCorrupted(
                        f"ledger entry {values[0]!r} is damaged ({exc}); "
                        "run `clinical-mlops audit verify`"
                    ) from None
                yield self._opened(entry)

    def _opened(self, entry: StoredEntry) -> EntryView:
        """Return ``entry`` with its payload decrypted, or marked erased/purged."""
        seq = entry.seq
        if entry.payload is None:
            return EntryView(entry=entry, status="purged", payload=None)
        if entry.key_id is None:
            raise KeyNotFound(f"entry {seq} has a payload but no data-key id")
        try:
            key = self.vault.data_key(entry.key_id, provider=self.provider)
        except KeyNotFound:
            if entry.subject is not None and entry.subject in self.erased_pseudonyms():
                return EntryView(entry=entry, status="erased", payload=None)
            raise
        plaintext = open_sealed(
            entry.payload,
            key=key,
            where=f"ledger entry {seq}",
            aad=payload_aad(
                origin=self.origin, seq=seq, entry_type=entry.type, key_id=entry.key_id
            ),
        )
        return EntryView(entry=entry, status="ok", payload=json.loads(plaintext))

    def erased_pseudonyms(self) -> set[str]:
        """Return the pseudonyms named by erasure entries."""
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(entries.c.public).where(entries.c.type == "erasure")
            ).scalars()
            out = set()
            for text in rows:
                try:
                    out.add(str(json.loads(text)["pseudonym"]))
                except (ValueError, KeyError, TypeError):
                    continue
            return out

    # -- proofs ----------------------------------------------------------------------------
    def inclusion_proof(self, seq: int, *, size: int | None = None) -> dict[str, Any]:
        """Return the inclusion proof of entry ``seq`` in the tree of ``size`` entries.

        ``size`` defaults to the latest checkpoint covering ``seq`` (so the proof
        can be checked against a signed root), else the current size.
        """
        with self.store.engine.connect() as conn:
            current = self.store.size(conn)
            if size is None:
                latest = self.store.latest_checkpoint(conn)
                size = latest.size if latest and latest.size > seq else current
            if not 0 <= seq < size <= current:
                raise EntryNotFound(
                    f"cannot prove seq {seq} in a tree of {size} (ledger has {current} entries)"
                )
            tree = StoredTree(self.store, conn, size)
            proof = inclusion_proof(seq, size, tree)
            leaf = self.store.leaf_hashes(conn, seq, seq + 1)[0]
            root = tree.root()
        return {
            "seq": seq,
            "size": size,
            "leaf_hash": leaf.hex(),
            "root": root.hex(),
            "proof": [p.hex() for p in proof],
        }

    def consistency_proof(self, old_size: int, new_size: int) -> dict[str, Any]:
        """Return the proof that the first ``old_size`` entries are a prefix of ``new_size``."""
        with self.store.engine.connect() as conn:
            current = self.store.size(conn)
            if not 0 < old_size <= new_size <= current:
                raise EntryNotFound(
                    f"no consistency proof from {old_size} to {new_size} "
                    f"(ledger has {current} entries)"
                )
            new_tree = StoredTree(self.store, conn, new_size)
            proof = consistency_proof(old_size, new_size, new_tree)
            old_root = StoredTree(self.store, conn, old_size).root()
            new_root = new_tree.root()
        return {
            "old_size": old_size,
            "new_size": new_size,
            "old_root": old_root.hex(),
            "new_root": new_root.hex(),
            "proof": [p.hex() for p in proof],
        }


def _refuse_lost(url: str, log: CheckpointLog) -> None:
    """Raise LedgerNotFound when ``log`` records a ledger with entries (it was lost)."""
    logged, _ = log.read()
    largest = max(logged, key=lambda cp: cp.size, default=None)
    if largest is None or largest.size == 0:
        return
    where = sa.engine.make_url(url).render_as_string(hide_password=True)
    raise LedgerNotFound(
        f"the ledger database {where} is missing or empty, but the checkpoint log "
        f"{log.path} records a ledger of {largest.size} entries (origin {largest.origin}, "
        f"checkpoint of {largest.time}): the ledger was lost or moved, and nothing was "
        "created. Restore the ledger database from a backup together with its checkpoint "
        "log (docs/OPERATIONS.md, Restore), then run `clinical-mlops audit verify`. To start "
        "a new ledger on purpose, move the old checkpoint log aside first"
    )


def record(
    workspace: Any,
    *,
    type: str,
    actor: str,
    payload: Mapping[str, Any],
    subject: str | None = None,
    clock: Clock | None = None,
) -> Receipt:
    """Return the receipt of one entry appended to the workspace's ledger.

    The entry point for pipeline code: opens the workspace's ledger and key
    provider, appends one durable entry and closes them. ``subject`` must be a
    pseudonym from the identity vault (never an identifier). Pipeline types:
    ``snapshot_built`` (payload e.g. snapshot_id, manifest_sha256),
    ``training_run`` (run_id, model_version, snapshot_id, hashes) and
    ``report_written`` (path, sha256); see ``ledger.entries`` for all types.
    """
    with Ledger.open(workspace, clock=clock) as ledger:
        return ledger.append(type=type, actor=actor, payload=payload, subject=subject)
