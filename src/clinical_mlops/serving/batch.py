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
- **Chunks.** Requests are scored :data:`~clinical_mlops.serving.predictor.MAX_BATCH` at a
  time, each chunk one ledger transaction, in file order.
- **Output.** Results are written to a temporary file beside the output and renamed into
  place once all are in, so the output is never half written. If scoring fails part way
  (the ledger cannot be written, say), the rows already scored are durable in the ledger:
  their results are still written, and the error says how many lines were not scored.

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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from clinical_mlops.errors import InputInvalid, ServingError
from clinical_mlops.serving.predictor import MAX_BATCH, PredictionRequest, Predictor
from clinical_mlops.workspace import Workspace

__all__ = ["BatchSummary", "read_requests", "score_file"]

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


def read_requests(path: Path) -> tuple[list[PredictionRequest], list[int]]:
    """Return the requests of a JSON Lines file and their line numbers (blank lines skipped).

    Raises ``InputInvalid`` naming every bad line. A request without ``request_id`` gets
    one here, so every line can be traced to its ledger entry through the output.
    """
    requests, numbers, problems = _parse(path)
    if problems:
        raise InputInvalid(problems)
    return requests, numbers


def _parse(path: Path) -> tuple[list[PredictionRequest], list[int], list[tuple[str, str]]]:
    from clinical_mlops.serving.routers.predictions import PredictItem

    problems: list[tuple[str, str]] = []
    out: list[PredictionRequest] = []
    numbers: list[int] = []
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise InputInvalid([(str(path), f"cannot be read: {exc.strerror or exc}")]) from None
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
                if len(problems) >= _MAX_PROBLEMS:
                    break
                continue
            out.append(
                PredictionRequest(
                    subject_id=item.subject_id,
                    purpose=item.purpose,
                    setting=item.setting,
                    features=item.features,
                    request_id=item.request_id or f"req_{uuid.uuid4().hex}",
                    site=item.site,
                    hours_since_admission=item.hours_since_admission,
                )
            )
            numbers.append(n)
    if not out and not problems:
        raise InputInvalid([(str(path), "holds no requests (one JSON object per line)")])
    return out, numbers, problems


def _lines(handle: Any, path: Path) -> Iterator[str]:
    try:
        yield from handle
    except UnicodeDecodeError:
        raise InputInvalid([(str(path), "is not UTF-8 text")]) from None


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

    ``progress`` is called with (rows done, rows in all) after each chunk.
    """
    started = time.perf_counter()
    requests, numbers, problems = _parse(source)
    results: list[dict[str, Any]] = []
    failure: Exception | None = None
    with Predictor.open(workspace, task=task, site=site) as predictor:
        try:
            if requests:
                predictor.check_requests(requests, where="line")
        except InputInvalid as exc:
            problems += [
                (_LINE.sub(lambda m: f"line {numbers[int(m[1])]}", at), why)
                for at, why in exc.problems
            ]
        if problems:  # every problem of the file, in line order; nothing was scored
            raise InputInvalid(sorted(problems, key=lambda p: _line_of(p[0])))
        scoring_started = time.perf_counter()
        for start in range(0, len(requests), MAX_BATCH):
            chunk = requests[start : start + MAX_BATCH]
            try:
                done = predictor.predict_many(chunk, requester=requester, explain=explain)
            except Exception as exc:  # the chunks before it are durable: write their results
                failure = exc
                break
            results += [r.to_json() for r in done]
            if progress:
                progress(len(results), len(requests))
        scoring_seconds = time.perf_counter() - scoring_started
    _write(output, zip(numbers, results, strict=False))
    if failure is not None:
        raise ServingError(
            f"scoring stopped after {len(results)} of {len(requests)} requests: {failure}. "
            f"The requests before line {numbers[len(results)]} are scored, in the ledger and "
            f"in {output}; score the rest again, from line {numbers[len(results)]}, once the "
            "cause is fixed"
        ) from failure
    statuses = [r["status"] for r in results]
    return BatchSummary(
        rows=len(requests),
        by_status={s: statuses.count(s) for s in ("scored", "shadow", "fallback", "refused")},
        escalated=sum(bool(r.get("escalated")) for r in results),
        seconds=time.perf_counter() - started,
        scoring_seconds=scoring_seconds,
        output=str(output),
    )


def _line_of(path: str) -> int:
    found = re.match(r"line (\d+)", path)
    return int(found[1]) if found else 0


def _write(output: Path, results: Iterable[tuple[int, dict[str, Any]]]) -> None:
    """Write (line, result) pairs to ``output`` at once: a temporary file, renamed."""
    tmp = output.with_name(f".{output.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as out:
            for line, result in results:
                out.write(json.dumps({"line": line, **result}, allow_nan=False) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
