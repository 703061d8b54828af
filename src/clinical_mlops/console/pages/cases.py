"""The escalation queue and the case view with its one-step decision (R-H1, R-H2).

Patient identifiers: the queue shows pseudonyms to everyone; the case view shows
the identifier behind the pseudonym to clinicians only (they act on the patient);
reviewers see the pseudonym.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query
from fastapi.responses import HTMLResponse, RedirectResponse

from clinical_mlops.application.governance import case_queue, decide_case, next_case, open_case
from clinical_mlops.console.deps import Viewer, page, posted, render
from clinical_mlops.errors import InputInvalid, ReleaseNotFound
from clinical_mlops.evaluation.phrases import CONTRIBUTION_REFERENCE
from clinical_mlops.governance.oversight import OVERRIDE_ACTIONS
from clinical_mlops.governance.queue import (
    DEFAULT_SORT,
    ESCALATION_REASONS,
    QUEUE_SORTS,
    identifier_of,
)
from clinical_mlops.tasks.spec import TaskSpec
from clinical_mlops.vocabulary import OVERRIDE_REASONS

router = APIRouter()
#: cases listed at most (in the chosen order); filters narrow the list
QUEUE_PAGE = 100
#: the queue's orders as the page offers them (the keys are ``governance.queue.QUEUE_SORTS``)
SORT_LABELS: dict[str, str] = {
    "risk": "Highest risk",
    "waiting": "Longest waiting",
    "reason": "By reason",
    "newest": "Newest",
}
assert set(SORT_LABELS) == set(QUEUE_SORTS)


def _query(**params: str) -> str:
    """Return ``?a=b&...`` of the non-empty ``params`` (empty string when there is none)."""
    kept = {k: v for k, v in params.items() if v}
    return "?" + urlencode(kept) if kept else ""


def _optional_float(value: str | None, where: str) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        out = float(value)
    except ValueError:
        raise InputInvalid([(where, f"{value!r} is not a number of hours")]) from None
    if out < 0:
        raise InputInvalid([(where, "expected a number of hours >= 0")])
    return out


@router.get("/queue", response_class=HTMLResponse)
def queue(
    viewer: Annotated[Viewer, Depends(page("/queue"))],
    state: str = "open",
    reason: str = "",
    site: str = "",
    release: str = "",
    min_age_hours: str = "",
    sort: str = DEFAULT_SORT,
    none_waiting: str = "",
) -> HTMLResponse:
    if state not in ("open", "decided", "all"):
        raise InputInvalid([("state", "expected open, decided or all")])
    if reason and reason not in ESCALATION_REASONS:
        raise InputInvalid([("reason", f"expected one of {', '.join(ESCALATION_REASONS)}")])
    c = viewer.console
    found = case_queue(
        c.ledger,
        now=c.clock.now(),
        state=state,  # type: ignore[arg-type]
        reason=reason or None,
        site=site.strip() or None,
        release=release.strip() or None,
        min_age_hours=_optional_float(min_age_hours, "min_age_hours"),
        limit=QUEUE_PAGE,
        sort=sort,
    )
    filters = {
        "state": state,
        "reason": reason,
        "site": site,
        "release": release,
        "min_age_hours": min_age_hours,
    }
    return render(
        viewer,
        "queue.html",
        title="Escalation queue",
        items=found.cases,
        total=found.total,
        reasons=ESCALATION_REASONS,
        filters=filters,
        sort=sort,
        sorts=[
            (key, label, "/queue" + _query(**filters, sort=key))
            for key, label in SORT_LABELS.items()
        ],
        sort_words=QUEUE_SORTS[sort],
        next_query=_query(sort=sort, reason=reason, site=site, release=release),
        case_query=_query(sort="" if sort == DEFAULT_SORT else sort),
        none_waiting=bool(none_waiting),
    )


@router.get("/queue/next")
def queue_next(
    viewer: Annotated[Viewer, Depends(page("/queue/next"))],
    sort: str = DEFAULT_SORT,
    reason: str = "",
    site: str = "",
    release: str = "",
    skip: Annotated[list[int] | None, Query()] = None,
) -> RedirectResponse:
    """Open the next case of the queue in its order; back to the queue, saying so, when none waits."""
    if reason and reason not in ESCALATION_REASONS:
        raise InputInvalid([("reason", f"expected one of {', '.join(ESCALATION_REASONS)}")])
    c = viewer.console
    found = next_case(
        c.ledger,
        now=c.clock.now(),
        sort=sort,
        reason=reason or None,
        site=site.strip() or None,
        release=release.strip() or None,
        skip=skip or [],
    )
    if found is None:
        where = "/queue" + _query(sort=sort, reason=reason, site=site, release=release)
        joiner = "&" if "?" in where else "?"
        return RedirectResponse(viewer.url(f"{where}{joiner}none_waiting=1"), status_code=303)
    return RedirectResponse(
        viewer.url(f"/cases/{found.prediction_seq}" + _query(sort=sort)), status_code=303
    )


def _spec(viewer: Viewer, release: str | None) -> TaskSpec | None:
    """Return the task spec of ``release`` (None when the release is unknown)."""
    from pathlib import Path

    from clinical_mlops.tasks.spec import load_sealed_task

    if not release:
        return None
    try:
        rel = viewer.console.registry.get(release)
        # A task defined in a YAML file is not installed: its spec is sealed in the bundle.
        return load_sealed_task(rel.task, Path(rel.path) / "task_spec.json")
    except ReleaseNotFound:
        return None


def _inputs(spec: TaskSpec | None, inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the inputs with labels and display values, in the task's feature order."""
    from clinical_mlops.evaluation.phrases import format_value

    if spec is None:
        return []
    rows = []
    for feature in spec.features:
        if feature.name not in inputs:
            continue
        value = inputs[feature.name]
        rows.append(
            {
                "name": feature.name,
                "label": feature.label,
                "value": None if value is None else format_value(feature, value),
                "missing": value is None,
            }
        )
    return rows


@router.get("/cases/{seq}", response_class=HTMLResponse)
def case_view(
    seq: int,
    viewer: Annotated[Viewer, Depends(page("/cases/{seq}"))],
    recorded: int | None = None,
    sort: str = DEFAULT_SORT,
) -> HTMLResponse:
    c = viewer.console
    if sort not in QUEUE_SORTS:
        raise InputInvalid([("sort", f"expected one of {', '.join(QUEUE_SORTS)}")])
    item = open_case(c.ledger, seq, now=c.clock.now())
    spec = _spec(viewer, item.release)
    identifier = identifier_of(c.ledger, item.pseudonym) if viewer.user.has("clinician") else None
    return render(
        viewer,
        "case.html",
        title=f"Case {item.prediction_seq}",
        case=item,
        identifier=identifier,
        inputs=_inputs(spec, item.inputs),
        outcome=spec.words().risk_words if spec else "the task's outcome",
        reasons=OVERRIDE_REASONS,
        actions=OVERRIDE_ACTIONS,
        recorded=recorded,
        sort=sort,
        next_query=_query(sort=sort, skip=str(item.prediction_seq)),
        contribution_reference=CONTRIBUTION_REFERENCE,
    )


@router.post("/cases/{seq}/decision")
def decision(
    seq: int,
    viewer: Annotated[Viewer, Depends(posted("/cases/{seq}/decision"))],
    choice: Annotated[str, Form()] = "",
    comment: Annotated[str, Form()] = "",
    sort: Annotated[str, Form()] = DEFAULT_SORT,
) -> RedirectResponse:
    action, _, reason_code = choice.partition(":")
    made = decide_case(
        viewer.console.ledger,
        seq,
        action=action,
        actor=viewer.user.actor,
        reason_code=reason_code or None,
        comment=comment,
        source="console",
    )
    case_seq = made.record.get("case_seq", seq)
    # the queue's order travels with the clinician, so "Next case" continues it
    kept = f"&sort={sort}" if sort in QUEUE_SORTS and sort != DEFAULT_SORT else ""
    return RedirectResponse(
        viewer.url(f"/cases/{case_seq}?recorded={made.seq}{kept}"), status_code=303
    )
