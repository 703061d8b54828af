"""Batch scoring of a file of requests through the Predictor, audited.

``clinical-mlops score REQUESTS.jsonl --out RESULTS.jsonl`` reads one prediction request
per line (the shape of ``POST /v1/predict``'s single item) and writes one result per line,
in input order, each with its ``line`` number. Every request passes the same guards and
gets its own ledger entry as over HTTP; nothing about a request is skipped for speed.

- **Checked first, all of it.** Every line is parsed and checked (JSON, fields, inputs
  against the spec, purpose, request ids unique in the file) before any is scored: a bad
  file is refused whole, naming each line and field, with nothing scored. Refusals that
  depend on the patient (unknown, no consent, outside intended use) are results, each
  with its ledger entry, as over HTTP.
- **Chunks.** A second pass scores :data:`~clinical_mlops.serving.predictor.MAX_BATCH`
  requests at a time, each chunk one ledger transaction, in file order; memory stays
  bounded whatever the file's size.
- **Output.** Results go to a temporary file beside the output, renamed into place at the
  end, so the output is never half written. If scoring fails part way (the ledger cannot
  be written, say), the rows already scored are durable in the ledger: their results are
  still written, and running the same command again finishes the file.
- **Resuming.** A run keeps a small record beside the output (``.OUT.run.json``: the
  file's SHA-256, the ledger's origin and size when scoring began, the prefix of the
  request ids it gave lines without one) until it finishes, and holds a lock
  (``.OUT.lock``) so that one run at a time writes an output. Run again after a crash,
  a kill or a failure, the same command reads every result entry written since then
  (one streamed pass, :meth:`~clinical_mlops.ledger.Ledger.read_from`), finds the
  requests of the file already recorded, by request id, *before* checking or scoring
  anything, and writes their results from their ledger records
  (:meth:`~clinical_mlops.serving.predictor.Predictor.recorded_result`, marked
  ``"resumed": true``) instead of scoring them again: no request gets a second record,
  the output is complete and in input order, the summary says how many were resumed,
  and temporary files left by the interrupted run are removed. Lines without a
  ``request_id`` get ``<prefix>-<line>``, the prefix kept in the record, so they are
  recognised too as long as the file is unchanged. Without a record (a finished run, or
  another output) a run is new: ids already served are refused as duplicates.

One process scores: the ledger's write transaction (sealing, chaining, inserting each
record) is serialised across processes, and on the 2-core machine of docs/BENCHMARKS.md
two worker processes scored no faster than one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from clinical_mlops.clock import utc_iso
from clinical_mlops.errors import InputInvalid, ServingError
from clinical_mlops.ledger import Ledger
from clinical_mlops.serving.predictor import (
    MAX_BATCH,
    RESULT_ENTRY_TYPES,
    PredictionRequest,
    PredictionResult,
    Predictor,
)
from clinical_mlops.serving.schemas import PredictItem
from clinical_mlops.workspace import Workspace

__all__ = ["BatchSummary", "score_file"]

_LINE = re.compile(r"^line\[(\d+)\]")
_MAX_PROBLEMS = 100
RUN_FORMAT = "clinical-mlops/score-run/v1"
#: recorded results further apart than this (in seqs) are read back by separate queries
_READ_GAP = 4096


@dataclass(frozen=True)
class BatchSummary:
    """What a batch run did."""

    rows: int
    by_status: dict[str, int]
    escalated: int
    seconds: float
    scoring_seconds: float
    output: str
    #: requests recorded by an earlier run of the file: written from the ledger, not scored
    resumed: int = 0
    #: temporary files of an interrupted run that were removed
    removed_temporary: int = 0

    def to_json(self) -> dict[str, Any]:
        scored_now = self.rows - self.resumed
        rate = round(scored_now / self.scoring_seconds, 1) if self.scoring_seconds else None
        return {
            "rows": self.rows,
            "by_status": self.by_status,
            "escalated": self.escalated,
            "resumed": self.resumed,
            "scored_now": scored_now,
            "removed_temporary": self.removed_temporary,
            "seconds": round(self.seconds, 3),
            "scoring_seconds": round(self.scoring_seconds, 3),
            "rows_per_second": rate,
            "output": self.output,
        }


def _chunks(
    path: Path, id_prefix: str
) -> Iterator[tuple[list[int], list[PredictionRequest], list[tuple[str, str]]]]:
    """Yield (line numbers, requests, problems) for up to MAX_BATCH lines at a time.

    A line without a ``request_id`` gets ``<id_prefix>-<line number>``.
    """
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise InputInvalid([(str(path), f"cannot be read: {exc.strerror or exc}")]) from None
    numbers: list[int] = []
    requests: list[PredictionRequest] = []
    problems: list[tuple[str, str]] = []
    with handle:
        for n, text in enumerate(_lines(handle, path), start=1):
            if not text.strip():
                continue
            try:
                item = PredictItem.model_validate_json(text)
            except ValidationError as exc:
                for err in exc.errors()[:5]:
                    where = ".".join(str(p) for p in err["loc"])
                    problems.append((f"line {n}" + (f".{where}" if where else ""), err["msg"]))
            else:
                numbers.append(n)
                requests.append(item.to_request(default_id=f"{id_prefix}-{n}"))
            if len(requests) == MAX_BATCH or len(problems) >= MAX_BATCH:
                yield numbers, requests, problems
                numbers, requests, problems = [], [], []
    if requests or problems:
        yield numbers, requests, problems


def _lines(handle: Any, path: Path) -> Iterator[str]:
    try:
        yield from handle
    except UnicodeDecodeError:
        raise InputInvalid([(str(path), "is not UTF-8 text")]) from None


def _check_file(
    predictor: Predictor, source: Path, id_prefix: str, recorded: dict[str, int]
) -> int:
    """Check every line of ``source`` (first pass); return how many requests it holds.

    Requests already recorded (``recorded``: request id -> seq) were checked and served by
    an earlier run of the file: they are parsed, and their ids compared with the other
    lines', but they are not checked against the store again.
    """
    problems: list[tuple[str, str]] = []
    first_line: dict[str, int] = {}  # request ids sent, across chunks
    total = 0
    for numbers, requests, bad in _chunks(source, id_prefix):
        problems += bad
        total += len(requests)
        todo_lines, todo = [], []
        for n, r in zip(numbers, requests, strict=True):
            rid = r.request_id or ""
            # within a chunk the Predictor's check finds a repeated id, unless one is recorded
            if rid in first_line and (first_line[rid] < numbers[0] or rid in recorded):
                problems.append(
                    (f"line {n}.request_id", f"{rid!r} is used on line {first_line[rid]}")
                )
            first_line.setdefault(rid, n)
            if rid not in recorded:
                todo_lines.append(n)
                todo.append(r)
        if todo:
            try:
                predictor.check_requests(todo, where="line")
            except InputInvalid as exc:
                problems += [(_file_line(at, todo_lines), why) for at, why in exc.problems]
        if len(problems) >= _MAX_PROBLEMS:
            break
    if problems:  # every problem found, in line order; nothing was scored
        raise InputInvalid(sorted(problems, key=lambda p: _line_of(p[0]))[:_MAX_PROBLEMS])
    if not total:
        raise InputInvalid([(str(source), "holds no requests (one JSON object per line)")])
    return total


def recorded_requests(ledger: Ledger, *, since: int) -> dict[str, int]:
    """Return request id -> seq of every request whose result was recorded from seq ``since`` on.

    One streamed pass over the ledger from ``since`` (each result entry's payload is
    opened to read its request id), so the cost is that of the entries written since
    then, whatever the ledger's size. A request recorded twice keeps its first seq.
    """
    found: dict[str, int] = {}
    for view in ledger.read_from(since, types=RESULT_ENTRY_TYPES):
        rid = (view.payload or {}).get("request_id")
        if isinstance(rid, str):
            found.setdefault(rid, view.entry.seq)
    return found


def score_file(
    workspace: Workspace,
    source: Path,
    output: Path,
    *,
    requester: str,
    explain: bool = True,
    task: str | None = None,
    site: str = "*",
    progress: Callable[[int, int], None] | None = None,
    drift_alerts: Callable[[str], bool] | None = None,
) -> BatchSummary:
    """Score every request of ``source`` and write the results to ``output`` (JSON Lines).

    Two passes over the file, so memory stays bounded whatever its size: the first checks
    every line, the second scores chunk by chunk, writing results as they come.
    ``progress`` is called with (rows done, rows in all) after each chunk. A run that
    stopped part way (killed, or failed) is resumed by calling again with the same
    ``source`` and ``output``: requests it recorded are written from the ledger, not
    scored twice (see the module docstring). ``drift_alerts``: see :meth:`Predictor.open`.
    """
    started = time.perf_counter()
    run = _Run(output)
    run.acquire()
    try:
        digest = _file_sha256(source)
        with Predictor.open(
            workspace, task=task, site=site, drift_alerts=drift_alerts
        ) as predictor:
            ledger = predictor.ledger
            state = run.load(origin=ledger.origin)
            same_file = state is not None and state.get("source_sha256") == digest
            id_prefix = f"req_{secrets.token_hex(8)}"
            if state is not None and same_file:
                id_prefix = str(state["id_prefix"])
            recorded = {} if state is None else recorded_requests(ledger, since=state["from_seq"])
            total = _check_file(predictor, source, id_prefix, recorded)
            if not same_file:
                run.save(
                    {
                        "format": RUN_FORMAT,
                        "source": str(source),
                        "source_sha256": digest,
                        "origin": ledger.origin,
                        # entries of an earlier, unfinished run of another file stay in range
                        "from_seq": ledger.size() if state is None else state["from_seq"],
                        "id_prefix": id_prefix,
                        "requester": requester,
                        "task": task,
                        "site": site,
                        "started": utc_iso(predictor.clock.now()),
                    }
                )
            removed = run.remove_leftovers()
            summary = _score(
                predictor,
                source,
                output,
                id_prefix=id_prefix,
                recorded=recorded,
                total=total,
                requester=requester,
                explain=explain,
                progress=progress,
            )
        run.finish()
    finally:
        run.release()
    return BatchSummary(
        rows=total,
        by_status=summary["by_status"],
        escalated=summary["escalated"],
        seconds=time.perf_counter() - started,
        scoring_seconds=summary["seconds"],
        output=str(output),
        resumed=summary["resumed"],
        removed_temporary=removed,
    )


def _score(
    predictor: Predictor,
    source: Path,
    output: Path,
    *,
    id_prefix: str,
    recorded: dict[str, int],
    total: int,
    requester: str,
    explain: bool,
    progress: Callable[[int, int], None] | None,
) -> dict[str, Any]:
    """Score the file's requests not yet recorded, chunk by chunk; write every result in order."""
    by_status = dict.fromkeys(("scored", "shadow", "fallback", "refused"), 0)
    escalated = done = resumed = 0
    started = time.perf_counter()
    with _Output(output) as out:
        for numbers, requests, _ in _chunks(source, id_prefix):
            fresh = [r for r in requests if r.request_id not in recorded]
            try:
                scored = iter(
                    predictor.predict_many(fresh, requester=requester, explain=explain)
                    if fresh
                    else []
                )
            except Exception as exc:  # the chunks before it are durable; keep their results
                out.close()
                raise ServingError(
                    f"scoring stopped after {done} of {total} requests: {exc}. The "
                    f"requests before line {numbers[0]} are recorded in the ledger and their "
                    f"results are in {output}; once the cause is fixed, run the same command "
                    "again: it resumes, and no request is scored twice"
                ) from exc
            earlier = _recorded_results(
                predictor, [recorded[r.request_id] for r in requests if r.request_id in recorded]
            )
            for n, r in zip(numbers, requests, strict=True):
                seq = recorded.get(r.request_id or "")
                result = next(scored) if seq is None else earlier[seq]
                out.write(n, result.to_json() | ({"resumed": True} if seq is not None else {}))
                by_status[result.status] += 1
                escalated += result.escalated
                resumed += seq is not None
            done += len(requests)
            if progress:
                progress(done, total)
    return {
        "by_status": by_status,
        "escalated": escalated,
        "resumed": resumed,
        "seconds": time.perf_counter() - started,
    }


def _recorded_results(predictor: Predictor, seqs: list[int]) -> dict[int, PredictionResult]:
    """Return seq -> the result recorded there, reading runs of nearby seqs in one query each."""
    out: dict[int, PredictionResult] = {}
    wanted = set(seqs)
    ordered = sorted(wanted)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] - ordered[j] <= _READ_GAP:
            j += 1
        for view in predictor.ledger.read_from(
            ordered[i], end=ordered[j] + 1, types=RESULT_ENTRY_TYPES
        ):
            if view.entry.seq in wanted:
                out[view.entry.seq] = predictor.recorded_result(view)
        i = j + 1
    return out


def _file_sha256(path: Path) -> str:
    """Return the SHA-256 of ``path``'s bytes; InputInvalid naming the file if unreadable."""
    try:
        with path.open("rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError as exc:
        raise InputInvalid([(str(path), f"cannot be read: {exc.strerror or exc}")]) from None


def _file_line(at: str, numbers: list[int]) -> str:
    """Return a problem path ``line[i].field`` with the file's line number of request i."""
    found = _LINE.match(at)
    return f"line {numbers[int(found[1])]}{at[found.end() :]}" if found else at


def _line_of(path: str) -> int:
    found = re.match(r"line (\d+)", path)
    return int(found[1]) if found else 0


class _Run:
    """The resume record and lock of the run writing ``output`` (files beside it).

    ``.OUT.lock`` is held (``flock``) for the whole run, so a second run writing the same
    output is refused rather than interleaved; the kernel releases it when the process
    dies, however it dies. ``.OUT.run.json`` says what was being scored and from which
    ledger seq; it is written (atomically) before the first request is scored and removed
    once the output is complete.
    """

    def __init__(self, output: Path):
        self.output = output
        self.lock_path = output.with_name(f".{output.name}.lock")
        self.path = output.with_name(f".{output.name}.run.json")
        self._fd: int | None = None

    def acquire(self) -> None:
        self.output.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ServingError(
                    f"another score run is writing {self.output} (it holds {self.lock_path}); "
                    "wait for it to finish, or write to another output"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a lock file a finishing run has just removed
                self._fd = fd
                return
            os.close(fd)
        raise ServingError(f"could not lock {self.lock_path}; try again")

    def load(self, *, origin: str) -> dict[str, Any] | None:
        """Return the record of an unfinished run into this ledger, or None."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # written before anything was scored: nothing to resume
        if (
            not isinstance(data, dict)
            or data.get("format") != RUN_FORMAT
            or data.get("origin") != origin
            or not isinstance(data.get("from_seq"), int)
            or not isinstance(data.get("id_prefix"), str)
        ):
            return None
        return data

    def save(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_name(self.path.name + ".new")
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(json.dumps(data, indent=1) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        _sync_dir(self.path.parent)

    def remove_leftovers(self) -> int:
        """Remove temporary outputs of earlier runs (none can be running: the lock is held)."""
        pattern = re.compile(rf"\.{re.escape(self.output.name)}\.[0-9a-f]{{8}}\.tmp")
        removed = 0
        for path in self.output.parent.iterdir():
            if pattern.fullmatch(path.name):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def finish(self) -> None:
        """Forget the run: the output is complete."""
        self.path.unlink(missing_ok=True)
        self.path.with_name(self.path.name + ".new").unlink(missing_ok=True)

    def release(self) -> None:
        """Let go of the lock; with no run recorded (nothing scored), remove its file too."""
        if self._fd is None:
            return
        if not self.path.exists():
            self.lock_path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Output:
    """Results written to a temporary file beside ``path``, renamed into place on close.

    Closed however the block ends, so results already scored (and audited) are never
    lost; the output appears only whole up to its last line, never half-written.
    """

    def __init__(self, path: Path):
        self.path = path
        self._tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        self._file = self._tmp.open("w", encoding="utf-8")

    def write(self, line: int, result: dict[str, Any]) -> None:
        self._file.write(json.dumps({"line": line, **result}, allow_nan=False) + "\n")

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self.path)
        finally:
            self._file.close()
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> _Output:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
