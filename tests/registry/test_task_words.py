"""Every task in its own words: no bedside output of one task speaks of another task's outcome.

Parametrised over every built-in task and one task defined over a prepared table (which
declares no ``presentation`` section, so its words are derived): each is built, trained,
bundled, approved and served, and every bedside output is collected — CDS discovery, the
CDS card, the FHIR RiskAssessment, the model card (served HTML and Markdown), the console
case page and release page. Each is scanned for the distinctive phrases of every *other*
task (its CDS service id and title, risk words, outcome, words for the outcome's occurrences
and the outcome coding's display), and must contain the task's own risk words.
"""

from __future__ import annotations

import re
import secrets
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from clinical_mlops.application.training import train_model
from clinical_mlops.application.walkthrough import govern_demo_release, score_test_set
from clinical_mlops.clock import utc_iso
from clinical_mlops.console import standalone_app
from clinical_mlops.console.users import UserDirectory
from clinical_mlops.data.raw import read_source
from clinical_mlops.data.sources import open_source
from clinical_mlops.data.synthetic import SyntheticConfig
from clinical_mlops.features.snapshot import build_snapshot, build_table_snapshot, locked_test_stays
from clinical_mlops.http.app import create_app
from clinical_mlops.serving import Predictor
from clinical_mlops.serving.auth import AuthConfig
from clinical_mlops.serving.fhir import risk_assessment
from clinical_mlops.tasks import builtin_tasks, load_task
from clinical_mlops.tasks.spec import TaskSpec
from clinical_mlops.workspace import Workspace
from registry_helpers import FAST

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette warns that httpx is deprecated for TestClient
    from fastapi.testclient import TestClient

TABLE_TASK = "byo_outcome_table"
# Synthetic sources large enough for each task's acceptance criteria (data, not code).
SCALE = {"icu_mortality_48h": 0.1, "readmission_30d": 0.2}
PASSWORD = "a long test password"


def table_spec_data() -> dict[str, Any]:
    """A task over a prepared table of ICU features, in words of its own (none declared)."""
    data = load_task("icu_mortality_48h").model_dump(mode="json")
    for key in ("feature_sql", "presentation", "published"):
        data.pop(key, None)
    data.update(
        name=TABLE_TASK,
        title="Adverse outcome flag from a prepared table, predicted at hour 24",
        description="Estimates the probability that the table's outcome flag is set, "
        "from the columns its producer aggregated over the first 24 hours.",
        table={"time_column": "year", "site_column": "site", "drop_columns": ["stay_id", "split"]},
        intended_use={
            "statement": "Decision support for the clinical team reviewing the table's "
            "patients at hour 24, as a prompt for senior review.",
            "users": ["Physicians reviewing the table's patients"],
            "setting": "Units that produce the prepared table",
            "population": "Adults in the prepared table",
        },
        non_intended_uses=["Any decision without clinician review"],
    )
    data["label"].update(
        name="outcome_flag",
        event="column",
        description="1 when the producer of the table set the outcome flag in the window.",
    )
    for f in data["features"]:
        f.update(
            source="static",
            aggregation="static",
            variable=None,
            justification=f"{f['label']} is an input the table's producer aggregated.",
        )
    return data


def build_task(task: str, root: Path, small_source_dir: Path) -> tuple[Workspace, TaskSpec, Any]:
    """Return (workspace, spec, snapshot) of ``task``, its data built from a synthetic source."""
    ws = Workspace.open(root / "ws")
    if task == TABLE_TASK:
        icu = build_snapshot(ws, load_task("icu_mortality_48h"), read_source(small_source_dir))
        t = icu.features().merge(icu.cohort(), on="stay_id")
        t = t.rename(columns={"death_48h": "outcome_flag", "real_year": "year"})
        path = root / "table.csv"
        t.to_csv(path, index=False)
        spec_path = root / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(table_spec_data(), sort_keys=False), encoding="utf-8")
        spec = load_task(spec_path)
        return ws, spec, build_table_snapshot(ws, spec, path)
    spec = load_task(task)
    source = open_source(
        ws,
        kind="synthetic",
        config=SyntheticConfig(seed=11, scale=SCALE[task]),
        setting=spec.cohort.setting,
    )
    return ws, spec, build_snapshot(ws, spec, read_source(source.path))


def bedside_outputs(ws: Workspace, spec: TaskSpec, snap: Any) -> dict[str, str]:
    """Serve the task's approved release and return every bedside output, by name."""
    result = train_model(ws, snap, config=FAST)
    shown = govern_demo_release(ws, model_version=result.model_version)
    release = shown["version"]
    site = "demo-icu-north"  # the demo's pilot site (a name, whatever the task's setting)
    out: dict[str, str] = {}
    card = score_test_set(ws, site=site, requester="ehr")
    out["CDS card"] = repr(card["card"])
    seq = card["sample"]["audit_seq"]
    with Predictor.open(ws, task=spec.name, site=site, status_ttl=0.0) as predictor:
        auth = AuthConfig.from_secret(secrets.token_hex(32))
        client = TestClient(create_app(predictor, auth, base_url="https://cds.example"))
        out["CDS discovery"] = client.get("/cds-services").text
        out["model card (served)"] = client.get(f"/v1/models/{release}/card").text
        sample = next(
            r
            for r in predictor.predict_many(
                [_request(ws, spec, snap, i) for i in range(5)], requester="ehr"
            )
            if r.status == "scored"
        )
        out["FHIR RiskAssessment"] = repr(
            risk_assessment(
                sample,
                spec=spec,
                patient_reference="Patient/p1",
                basis=[],
                occurrence=utc_iso(datetime.now(UTC)),
            )
        )
    out["model card (Markdown)"] = (result.folder / "model_card.md").read_text(encoding="utf-8")
    UserDirectory.open(ws).add("dr.ada.clin", roles=["clinician", "reviewer"], password=PASSWORD)
    console = TestClient(standalone_app(ws))
    page = console.get("/console/login")
    nonce = re.search(r'name="login_nonce" value="([^"]+)"', page.text)
    assert nonce, page.text
    console.post(
        "/console/login",
        data={"name": "dr.ada.clin", "password": PASSWORD, "login_nonce": nonce.group(1)},
    )
    case = console.get(f"/console/cases/{seq}")
    assert case.status_code == 200, case.text
    out["console case page"] = case.text
    rel = console.get(f"/console/releases/{release}")
    assert rel.status_code == 200, rel.text
    out["console release page"] = rel.text
    # The baseline score's literature citation is quoted as published (the LACE paper's
    # title names death and readmission); it is a reference, not the model's words.
    cited = result.report.baseline.source
    out = {where: text.replace(cited, "[baseline citation]") for where, text in out.items()}
    return out


def _request(ws: Workspace, spec: TaskSpec, snap: Any, i: int) -> Any:
    from clinical_mlops.application.privacy import grant_consent
    from clinical_mlops.application.services import Services
    from clinical_mlops.serving import PredictionRequest

    row = locked_test_stays(snap)[list(spec.feature_names)].iloc[i].to_dict()
    values = {
        k: (None if v != v else (v.item() if hasattr(v, "item") else v)) for k, v in row.items()
    }
    subject = f"WORDS-{i}"
    with Services.open(ws) as s:
        grant_consent(
            s,
            subject=subject,
            purposes=["direct_care"],
            valid_from=datetime(2000, 1, 1, tzinfo=UTC),
            actor="test",
        )
    return PredictionRequest(
        subject_id=subject, purpose="direct_care", setting=spec.cohort.setting, features=values
    )


# What each task calls itself at the bedside: its CDS service id, risk words and the words for
# its outcome (the built-in tasks' ``presentation`` sections; the table task's derived words).
PHRASES: dict[str, tuple[str, ...]] = {
    "icu_mortality_48h": (
        "48-h mortality risk",
        "icu-mortality-48h",
        "ICU 48-hour mortality risk",
        "death",
        "deaths",
        "survivor",
        "survivors",
    ),
    "readmission_30d": (
        "30-day readmission risk",
        "readmission-30d",
        "readmission",
        "readmissions",
        "patients not readmitted",
    ),
    TABLE_TASK: ("risk of outcome flag", "byo-outcome-table", "patients with the outcome"),
}


def test_the_phrases_are_what_the_specs_declare() -> None:
    assert set(PHRASES) == {*builtin_tasks(), TABLE_TASK}
    for task, spec in (
        *((name, load_task(name)) for name in builtin_tasks()),
        (TABLE_TASK, TaskSpec.model_validate(table_spec_data())),
    ):
        declared = {p.lower() for p in spec.words().phrases()}
        assert {p.lower() for p in PHRASES[task]} <= declared, task


@pytest.mark.parametrize("task", [*builtin_tasks(), TABLE_TASK])
def test_every_bedside_output_speaks_only_of_its_own_task(
    task: str, tmp_path: Path, small_source_dir: Path
) -> None:
    ws, spec, snap = build_task(task, tmp_path, small_source_dir)
    outputs = bedside_outputs(ws, spec, snap)
    own = {p.lower() for p in PHRASES[task]}
    foreign = {
        phrase.lower(): other
        for other, phrases in PHRASES.items()
        if other != task
        for phrase in phrases
        if phrase.lower() not in own
    }
    found = []
    for where, text in outputs.items():
        low = text.lower()
        for phrase, other in sorted(foreign.items()):
            if re.search(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", low):
                found.append(f"{where} says {phrase!r} (task {other})")
    assert found == []
    risk, service_id = PHRASES[task][:2]
    for where in ("CDS card", "console case page"):
        assert risk.lower() in outputs[where].lower(), where
    assert service_id in outputs["CDS discovery"]
