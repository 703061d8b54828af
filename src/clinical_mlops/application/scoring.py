"""Offline scoring: a file of prediction requests scored through the governed Predictor.

The same guards as over HTTP (inputs checked against the task spec, intended use,
consent, rollout), one ledger entry per request, and no web framework: a batch job
needs only the library. See :mod:`clinical_mlops.serving.batch` for how a file is
checked whole first, scored in chunks and resumed after an interruption.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from clinical_mlops.serving.batch import BatchSummary
from clinical_mlops.serving.batch import score_file as _score_file
from clinical_mlops.workspace import Workspace

__all__ = ["BatchSummary", "score_file"]


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
) -> BatchSummary:
    """Return what scoring ``source`` (JSON Lines) into ``output`` did, in input order.

    A file with any bad line is refused whole, naming each line and field, with nothing
    scored. Running the same command again after a crash or a failure finishes the file
    without scoring any request twice. ``progress`` gets (rows done, rows in all).
    """
    return _score_file(
        workspace,
        source,
        output,
        requester=requester,
        explain=explain,
        task=task,
        site=site,
        progress=progress,
    )
