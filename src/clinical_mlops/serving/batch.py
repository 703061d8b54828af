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
  still written, and the error names the line to start again from.

One process scores: the ledger's write transaction (sealing, chaining, inserting each
record) is serialised across processes, and on the 2-core machine of docs/BENCHMARKS.md
two worker processes scored no faster than one.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from clinical_mlops.errors import InputInvalid, ServingError
from clinical_mlops.ledger.claims import new_request_ids
from clinical_mlops.serving.predictor import MAX_BATCH, PredictionRequest, Predictor
from clinical_mlops.workspace import Workspace

__all__ = ["BatchSummary", "score_file"]

_LINE = re.compile(r"^line\[(\d+)\]")
_MAX_PROBLEMS = 100


@dataclass(frozen=True)
class BatchSummary:
    """What a batch run did."""

    rows: int
    by_status: dict[str, int]
    escalated: int
    seconds: float
    scoring_seconds: float
    output: str

    def to_json(self) -> dict[str, Any]:
        rate = round(self.rows / self.scoring_seconds, 1) if self.scoring_seconds else None
        return {
            "rows": self.rows,
            "by_status": self.by_status,
            "escalated": self.escalated,
            "seconds": round(self.seconds, 3),
            "scoring_seconds": round(self.scoring_seconds, 3),
            "rows_per_second": rate,
            "output": self.output,
        }


def _chunks(
    path: Path,
) -> Iterator[tuple[list[int], list[PredictionRequest], list[tuple[str, str]]]]:
    """Yield (line numbers, requests, problems) for up to MAX_BATCH lines at a time."""
    from clinical_mlops.serving.routers.predictions import PredictItem

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
                requests.append(
                    PredictionRequest(
                        subject_id=item.subject_id,
                        purpose=item.purpose,
                        setting=item.setting,
                        features=item.features,
                        request_id=item.request_id or new_request_ids(1)[0],
                        site=item.site,
                        hours_since_admission=item.hours_since_admission,
                    )
                )
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


def _check_file(predictor: Predictor, source: Path) -> int:
    """Check every line of ``source`` (first pass); return how many requests it holds."""
    problems: list[tuple[str, str]] = []
    first_line: dict[str, int] = {}  # request ids sent, across chunks
    total = 0
    for numbers, requests, bad in _chunks(source):
        problems += bad
        total += len(requests)
        for n, r in zip(numbers, requests, strict=True):
            rid = r.request_id or ""
            if rid in first_line and first_line[rid] < numbers[0]:  # in an earlier chunk
                problems.append(
                    (f"line {n}.request_id", f"{rid!r} is used on line {first_line[rid]}")
                )
            first_line.setdefault(rid, n)
        if requests:
            try:
                predictor.check_requests(requests, where="line")
            except InputInvalid as exc:
                problems += [(_file_line(at, numbers), why) for at, why in exc.problems]
        if len(problems) >= _MAX_PROBLEMS:
            break
    if problems:  # every problem found, in line order; nothing was scored
        raise InputInvalid(sorted(problems, key=lambda p: _line_of(p[0]))[:_MAX_PROBLEMS])
    if not total:
        raise InputInvalid([(str(source), "holds no requests (one JSON object per line)")])
    return total


def score_file(
    workspace: Workspace,
    source: Path,
    output: Path,
    *,
    requester: str,
    explain: bool = True,
    task: str = "icu_mortality_48h",
    site: str = "*",
    progress: Callable[[int, int], None] | None = None,
) -> BatchSummary:
    """Score every request of ``source`` and write the results to ``output`` (JSON Lines).

    Two passes over the file, so memory stays bounded whatever its size: the first checks
    every line, the second scores chunk by chunk, writing results as they come.
    ``progress`` is called with (rows done, rows in all) after each chunk.
    """
    started = time.perf_counter()
    by_status = dict.fromkeys(("scored", "shadow", "fallback", "refused"), 0)
    escalated = done = 0
    with Predictor.open(workspace, task=task, site=site) as predictor:
        total = _check_file(predictor, source)
        scoring_started = time.perf_counter()
        with _Output(output) as out:
            for numbers, requests, _ in _chunks(source):
                try:
                    results = predictor.predict_many(requests, requester=requester, explain=explain)
                except Exception as exc:  # the chunks before it are durable; keep their results
                    out.close()
                    raise ServingError(
                        f"scoring stopped after {done} of {total} requests: {exc}. The "
                        f"requests before line {numbers[0]} are scored, in the ledger and in "
                        f"{output}; score the rest again, from line {numbers[0]}, once the "
                        "cause is fixed"
                    ) from exc
                for n, r in zip(numbers, results, strict=True):
                    out.write(n, r.to_json())
                    by_status[r.status] += 1
                    escalated += r.escalated
                done += len(results)
                if progress:
                    progress(done, total)
        scoring_seconds = time.perf_counter() - scoring_started
    return BatchSummary(
        rows=total,
        by_status=by_status,
        escalated=escalated,
        seconds=time.perf_counter() - started,
        scoring_seconds=scoring_seconds,
        output=str(output),
    )


def _file_line(at: str, numbers: list[int]) -> str:
    """Return a problem path ``line[i].field`` with the file's line number of request i."""
    found = _LINE.match(at)
    return f"line {numbers[int(found[1])]}{at[found.end() :]}" if found else at


def _line_of(path: str) -> int:
    found = re.match(r"line (\d+)", path)
    return int(found[1]) if found else 0


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
