"""The escalation queue and the case view with its one-step decision (R-H1, R-H2).

Patient identifiers: the queue shows pseudonyms to everyone; the case view shows
the identifier behind the pseudonym to clinicians only (they act on the patient);
reviewers see the pseudonym.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form
from fastapi.responses import HTMLResponse, RedirectResponse

from clinical_mlops.application.governance import case_queue, decide_case, open_case
from clinical_mlops.console.deps import Viewer, page, posted, render
from clinical_mlops.errors import InputInvalid, ReleaseNotFound
from clinical_mlops.governance.oversight import OVERRIDE_ACTIONS
from clinical_mlops.governance.queue import ESCALATION_REASONS, identifier_of
from clinical_mlops.tasks.spec import TaskSpec
from clinical_mlops.vocabulary import OVERRIDE_REASONS

router = APIRouter()
#: cases listed at most (newest first); filters narrow the list
QUEUE_PAGE = 100


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
    )
    return render(
        viewer,
        "queue.html",
        title="Escalation queue",
        items=found.cases,
        total=found.total,
        reasons=ESCALATION_REASONS,
        filters={
            "state": state,
            "reason": reason,
            "site": site,
            "release": release,
            "min_age_hours": min_age_hours,
        },
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
) -> HTMLResponse:
    c = viewer.console
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
    )


@router.post("/cases/{seq}/decision")
def decision(
    seq: int,
    viewer: Annotated[Viewer, Depends(posted("/cases/{seq}/decision"))],
    choice: Annotated[str, Form()] = "",
    comment: Annotated[str, Form()] = "",
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
    return RedirectResponse(viewer.url(f"/cases/{case_seq}?recorded={made.seq}"), status_code=303)
