"""What monitoring reads: inference, outcome and override records as aligned arrays.

The same shapes come from the audit ledger (:func:`read_ledger_records`, one
release at a time) and from simulations (:mod:`clinical_mlops.monitoring.scenarios`),
so the detectors never know which. Times are seconds since the Unix epoch (UTC).

Bad input is handled by documented rules in :func:`link_outcomes`, never by a crash.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

__all__ = [
    "CaseRecords",
    "InferenceRecords",
    "LinkedOutcomes",
    "OutcomeRecords",
    "OverrideRecords",
    "epoch",
    "iso",
    "link_outcomes",
    "read_ledger_records",
    "service_periods",
]


def epoch(value: datetime | str) -> float:
    """Return seconds since the epoch of an aware datetime or an ISO-8601 UTC string."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("times must be timezone-aware (UTC)")
    return value.timestamp()


def iso(seconds: float) -> str:
    """Return an epoch time as the ISO-8601 UTC string the ledger and alerts use."""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class InferenceRecords:
    """One release's scored predictions in time order.

    ``seq`` identifies each prediction (its ledger seq), ``shown`` says whether a
    clinician saw it (shadow and silent modes: no), ``inputs`` holds one column per
    model input with missing values as NaN/None, ``subjects`` the pseudonyms
    (for case escalation; empty in simulations), ``escalated`` whether the
    Predictor routed the prediction to human review as it scored it and ``sites``
    the site each was scored at (its context's ``site``; None when the record names
    none; empty in simulations).
    """

    release: str
    model_version: str
    seq: np.ndarray
    time: np.ndarray
    probability: np.ndarray
    shown: np.ndarray
    inputs: pd.DataFrame
    subjects: tuple[str | None, ...] = ()
    escalated: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    sites: tuple[str | None, ...] = ()

    @classmethod
    def build(
        cls,
        *,
        release: str,
        model_version: str,
        seq: Sequence[int] | np.ndarray,
        time: Sequence[float] | np.ndarray,
        probability: Sequence[float] | np.ndarray,
        inputs: pd.DataFrame,
        shown: Sequence[bool] | np.ndarray | None = None,
        subjects: Sequence[str | None] = (),
        escalated: Sequence[bool] | np.ndarray | None = None,
        sites: Sequence[str | None] = (),
    ) -> InferenceRecords:
        """Return records sorted by time (stable: equal times keep their order)."""
        t = np.asarray(time, dtype=float)
        order = np.argsort(t, kind="stable")
        n = len(t)
        shown_arr = np.ones(n, dtype=bool) if shown is None else np.asarray(shown, dtype=bool)
        routed = np.zeros(n, dtype=bool) if escalated is None else np.asarray(escalated, dtype=bool)
        subj = tuple(subjects)
        at = tuple(sites)
        return cls(
            release=release,
            model_version=model_version,
            seq=np.asarray(seq, dtype=np.int64)[order],
            time=t[order],
            probability=np.asarray(probability, dtype=float)[order],
            shown=shown_arr[order],
            inputs=inputs.iloc[order].reset_index(drop=True),
            subjects=tuple(subj[i] for i in order) if subj else (),
            escalated=routed[order],
            sites=tuple(at[i] for i in order) if at else (),
        )

    def __len__(self) -> int:
        return len(self.seq)


@dataclass(frozen=True)
class OutcomeRecords:
    """Observed outcomes as they arrived: the prediction each names, the value, the arrival time."""

    seq: np.ndarray
    outcome: np.ndarray
    time: np.ndarray

    @classmethod
    def build(
        cls, *, seq: Iterable[int], outcome: Iterable[Any], time: Iterable[float]
    ) -> OutcomeRecords:
        return cls(
            seq=np.asarray(list(seq), dtype=np.int64),
            outcome=np.asarray(list(outcome), dtype=float),
            time=np.asarray(list(time), dtype=float),
        )

    @classmethod
    def empty(cls) -> OutcomeRecords:
        return cls.build(seq=[], outcome=[], time=[])


@dataclass(frozen=True)
class OverrideRecords:
    """Clinician feedback on shown predictions: the prediction, the time, the action taken."""

    seq: np.ndarray
    time: np.ndarray
    action: tuple[str, ...]

    @classmethod
    def build(
        cls, *, seq: Iterable[int], time: Iterable[float], action: Iterable[str]
    ) -> OverrideRecords:
        return cls(
            seq=np.asarray(list(seq), dtype=np.int64),
            time=np.asarray(list(time), dtype=float),
            action=tuple(action),
        )

    @classmethod
    def empty(cls) -> OverrideRecords:
        return cls.build(seq=[], time=[], action=[])


@dataclass(frozen=True)
class CaseRecords:
    """The review cases of one release: when each opened and when it was decided (NaN: open).

    A case opens at its first escalation and is decided by its first accept or override
    (``governance.queue``); a referral to senior review keeps it open.
    """

    opened: np.ndarray
    decided: np.ndarray

    @classmethod
    def build(cls, *, opened: Iterable[float], decided: Iterable[float | None]) -> CaseRecords:
        return cls(
            opened=np.asarray(list(opened), dtype=float),
            decided=np.asarray([math.nan if d is None else float(d) for d in decided], dtype=float),
        )

    @classmethod
    def empty(cls) -> CaseRecords:
        return cls.build(opened=[], decided=[])

    def __len__(self) -> int:
        return len(self.opened)


def read_case_records(ledger: Any, *, until: datetime) -> dict[str, CaseRecords]:
    """Return, per release (the release of a case's newest prediction), its review cases.

    Read from the ledger as the queue reads them; a decision after ``until`` is not
    known yet (the case is open), a case opened after it is left out. Cases of erased
    patients cannot be read and are left out, as they leave the queue.
    """
    from clinical_mlops.governance.queue import case_spans

    per: dict[str, tuple[list[float], list[float | None]]] = {}
    end = until.timestamp()
    for release, opened, decided in case_spans(ledger, now=until):
        start = epoch(opened)
        if start >= end:
            continue
        done = None if decided is None else epoch(decided)
        acc = per.setdefault(release, ([], []))
        acc[0].append(start)
        acc[1].append(done if done is not None and done < end else None)
    return {rel: CaseRecords.build(opened=o, decided=d) for rel, (o, d) in per.items()}


@dataclass(frozen=True)
class LinkedOutcomes:
    """Outcomes joined to predictions, sorted by arrival, with the counts of what was set aside.

    ``index`` points into the :class:`InferenceRecords` rows. ``rejected`` holds the
    arrival times of every outcome left out, by reason: ``unknown`` (names no
    prediction of this release), ``duplicate`` (a later copy of an outcome
    already counted), ``conflicting`` (a later outcome that disagrees with the
    one counted), ``invalid`` (not 0/1, or arriving before its prediction).
    """

    index: np.ndarray
    y: np.ndarray
    time: np.ndarray
    rejected: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.index)


def link_outcomes(inferences: InferenceRecords, outcomes: OutcomeRecords) -> LinkedOutcomes:
    """Return the outcomes joined to ``inferences`` under the documented rules.

    * Outcomes are taken in order of arrival, whatever order they were given in
      (a stable sort on arrival time).
    * An outcome naming no prediction of this release is ``unknown``: set aside
      and counted, never guessed at.
    * The first outcome to arrive for a prediction is the one used. A later copy
      with the same value is a ``duplicate``; with another value it is
      ``conflicting``. Both are counted, neither changes the metrics.
    * An outcome that is not 0/1, or that arrives before its prediction was
      made, is ``invalid``.
    """
    order = np.argsort(outcomes.time, kind="stable")
    seq, y, t = outcomes.seq[order], outcomes.outcome[order], outcomes.time[order]
    by_seq = np.argsort(inferences.seq, kind="stable")
    sorted_seq = inferences.seq[by_seq]
    pos = np.searchsorted(sorted_seq, seq)
    pos_clipped = np.minimum(pos, max(len(sorted_seq) - 1, 0))
    known = (
        (pos < len(sorted_seq)) & (sorted_seq[pos_clipped] == seq)
        if len(sorted_seq)
        else np.zeros(len(seq), dtype=bool)
    )
    idx = np.where(known, by_seq[pos_clipped] if len(sorted_seq) else 0, -1)
    reasons: dict[str, list[float]] = {
        "unknown": [],
        "duplicate": [],
        "conflicting": [],
        "invalid": [],
    }
    first: dict[int, float] = {}
    keep_idx, keep_y, keep_t = [], [], []
    for i in range(len(seq)):
        if idx[i] < 0:
            reasons["unknown"].append(t[i])
            continue
        value = y[i]
        if value not in (0.0, 1.0) or t[i] < inferences.time[idx[i]]:
            reasons["invalid"].append(t[i])
            continue
        row = int(idx[i])
        if row in first:
            reasons["duplicate" if first[row] == value else "conflicting"].append(t[i])
            continue
        first[row] = value
        keep_idx.append(row)
        keep_y.append(int(value))
        keep_t.append(t[i])
    return LinkedOutcomes(
        index=np.asarray(keep_idx, dtype=np.int64),
        y=np.asarray(keep_y, dtype=np.int64),
        time=np.asarray(keep_t, dtype=float),
        rejected={k: np.asarray(v, dtype=float) for k, v in reasons.items()},
    )


def read_ledger_records(
    ledger: Any,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    opened: dict[int, Any] | None = None,
) -> dict[str, Any]:
    """Return the inference, outcome and override records of every release in a ledger period.

    Returns ``{"inferences": {release: InferenceRecords}, "outcomes": OutcomeRecords,
    "overrides": OverrideRecords, "unreadable": int}``. Entries whose payload is
    erased or purged cannot be read: they are counted in ``unreadable`` and left out.
    Outcomes and overrides are read for the whole ledger up to ``until`` (an
    outcome may arrive long after its prediction); inference records from ``since``.
    A correction (an entry with ``corrects``) replaces the value of the record it
    corrects, which keeps its arrival time: monitoring uses the newest value known by
    ``until``, in the place of the original.

    ``opened`` is a memo of the entries opened by earlier calls (seq -> entry, filled
    here), so a caller reading the same ledger every window (the drift simulation)
    opens each entry once. Only for a ledger in which nobody erases or purges while
    the memo lives: an entry opened before an erasure would still be read.
    """
    from clinical_mlops.ledger.store import entries

    lo = "" if since is None else since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    hi = None if until is None else iso(until.timestamp())
    query = sa.select(
        entries.c.seq, entries.c.type, entries.c.time, entries.c.subject, entries.c.actor
    ).where(entries.c.type.in_(("inference", "outcome", "override", "escalation")))
    if hi is not None:
        query = query.where(entries.c.time < hi)
    with ledger.store.engine.connect() as conn:
        rows = conn.execute(query.order_by(entries.c.seq)).all()
    # The Predictor writes a prediction's escalation right after it, in the same batch
    # (same time, subject and actor): that is the prediction routed to review as scored.
    meta = {int(r.seq): r for r in rows}
    routed_at_scoring = {
        int(r.seq) - 1
        for r in rows
        if r.type == "escalation"
        and (prev := meta.get(int(r.seq) - 1)) is not None
        and prev.type == "inference"
        and (prev.time, prev.subject, prev.actor) == (r.time, r.subject, r.actor)
    }
    rows = [r for r in rows if r.type != "escalation"]
    per_release: dict[str, dict[str, list[Any]]] = {}
    out_seq: list[int] = []
    out_y: list[float] = []
    out_t: list[float] = []
    ov_seq: list[int] = []
    ov_t: list[float] = []
    ov_a: list[str] = []
    # entry seq -> position of the record it is (or corrects) in the lists above
    out_slot: dict[int, int] = {}
    ov_slot: dict[int, int] = {}
    unreadable = 0
    for seq, kind, when, _, _ in rows:
        if kind == "inference" and str(when) < lo:
            continue
        view = opened.get(int(seq)) if opened is not None else None
        if view is None:
            view = ledger.read(int(seq))
            if opened is not None:
                opened[int(seq)] = view
        if view.status != "ok" or view.payload is None:
            unreadable += 1
            continue
        p = view.payload
        t = epoch(str(when))
        if kind == "inference":
            rel = str(p.get("release") or p.get("model_version"))
            acc = per_release.setdefault(
                rel,
                {
                    "seq": [],
                    "time": [],
                    "p": [],
                    "shown": [],
                    "inputs": [],
                    "subject": [],
                    "mv": [],
                    "escalated": [],
                    "site": [],
                },
            )
            acc["seq"].append(int(seq))
            acc["time"].append(t)
            acc["p"].append(float(p["probability"]))
            acc["shown"].append(bool(p.get("shown_to_clinician", True)))
            acc["inputs"].append(p.get("inputs", {}))
            acc["subject"].append(view.entry.subject)
            acc["mv"].append(str(p["model_version"]))
            acc["escalated"].append(int(seq) in routed_at_scoring)
            site = (p.get("context") or {}).get("site")
            acc["site"].append(None if site is None else str(site))
        elif kind == "outcome":
            raw = p.get("outcome")
            try:
                value = float(raw)
            except (TypeError, ValueError):
                value = float("nan")
            at = out_slot.get(p["corrects"]) if p.get("corrects") is not None else None
            if at is None:
                at = len(out_seq)
                out_seq.append(int(p["prediction_seq"]))
                out_y.append(value)
                out_t.append(t)
            out_y[at] = value
            out_slot[int(seq)] = at
        else:
            action = str(p.get("action", "override"))
            at = ov_slot.get(p["corrects"]) if p.get("corrects") is not None else None
            if at is None:
                at = len(ov_seq)
                ov_seq.append(int(p["prediction_seq"]))
                ov_t.append(t)
                ov_a.append(action)
            ov_a[at] = action
            ov_slot[int(seq)] = at
    inferences = {
        rel: InferenceRecords.build(
            release=rel,
            model_version=acc["mv"][-1],
            seq=acc["seq"],
            time=acc["time"],
            probability=acc["p"],
            shown=acc["shown"],
            inputs=pd.DataFrame.from_records(acc["inputs"]),
            subjects=acc["subject"],
            escalated=acc["escalated"],
            sites=acc["site"],
        )
        for rel, acc in per_release.items()
    }
    return {
        "inferences": inferences,
        "outcomes": OutcomeRecords.build(seq=out_seq, outcome=out_y, time=out_t),
        "overrides": OverrideRecords.build(seq=ov_seq, time=ov_t, action=ov_a),
        "unreadable": unreadable,
    }


#: the registry's ledger events that start or end a release's service somewhere
SERVICE_EVENTS = ("deployment", "rollout_change", "status_change")


def service_periods(
    ledger: Any, *, tasks: Mapping[str, str], until: datetime | None = None
) -> dict[str, list[tuple[float, float | None]]]:
    """Return, per release, the periods (epoch start, end or None) it was served at some site.

    Replays the registry's ledger events in order, as the registry applies them to
    its rollout table: a ``deployment`` (promotion to approved, or rollback) makes
    the release serve every site not piloting another and stops the release it
    replaced everywhere; a ``rollout_change`` serves it at one site in place of
    whatever ran there; retirement stops it everywhere. A suspended release stays
    in service (it serves its clinical-baseline fallback). ``tasks`` maps each
    release to its task (sites belong to a task); events of releases not in it are
    skipped. Events after ``until`` are not read.
    """
    from clinical_mlops.ledger.store import entries

    query = sa.select(entries.c.seq, entries.c.type, entries.c.time).where(
        entries.c.type.in_(SERVICE_EVENTS)
    )
    if until is not None:
        query = query.where(entries.c.time <= iso(until.timestamp()))
    with ledger.store.engine.connect() as conn:
        rows = conn.execute(query.order_by(entries.c.seq)).all()
    sites: dict[str, dict[str, str]] = {}  # task -> site -> release
    periods: dict[str, list[tuple[float, float | None]]] = {}
    for seq, kind, when in rows:
        view = ledger.read(int(seq))
        p = view.payload or {}
        release = str(p.get("release"))
        task = tasks.get(release)
        if task is None:
            continue
        at_site = sites.setdefault(task, {})
        before = set(at_site.values())
        if kind == "deployment":
            previous = p.get("previous")
            if previous and previous != release:
                for site in [s for s, r in at_site.items() if r == previous]:
                    del at_site[site]
            at_site["*"] = release
        elif kind == "rollout_change":
            at_site[str(p.get("site"))] = release
        elif p.get("to_status") == "retired":
            for site in [s for s, r in at_site.items() if r == release]:
                del at_site[site]
        after = set(at_site.values())
        t = epoch(str(when))
        for started in sorted(after - before):
            periods.setdefault(started, []).append((t, None))
        for stopped in sorted(before - after):
            begin, _ = periods[stopped][-1]
            periods[stopped][-1] = (begin, t)
    return periods
