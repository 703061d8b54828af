"""`tasks check` refuses every spec that training would refuse, in the same words.

Each case is a spec the loader accepts but the pipeline cannot train. It goes through
`tasks check` first, then through what `train` runs (snapshot build and training); check
must fail, and name every problem training names.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import table_task
from clinical_mlops.application.training import build_task_snapshot, train_model
from clinical_mlops.cli import app
from clinical_mlops.errors import TaskSpecInvalid
from clinical_mlops.tasks import load_task
from clinical_mlops.workspace import Workspace
from registry_helpers import FAST

ICU = load_task("icu_mortality_48h")


def _table(**changes: Any) -> Callable[[], dict[str, Any]]:
    return lambda: table_task.spec(**changes)


def _unapproved() -> dict[str, Any]:
    data = table_task.spec(clinical_baseline=None)
    data["features"][4]["status"] = "proposed"
    return data


def _icu(**changes: Any) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        data = ICU.model_dump(mode="json") | {"name": "icu_variant"}
        data.update(changes)
        return data

    return make


def _icu_attribute() -> dict[str, Any]:
    data = _icu()()
    data["protected_attributes"].append(
        {"name": "insurance", "column": "insurance", "groups": {"public": "public"}}
    )
    return data


# (case, spec, source): every spec-related refusal of training, as a spec the loader accepts.
# Cases other than the baseline's own leave clinical_baseline unset: check names that too.
CASES: list[tuple[str, Callable[[], dict[str, Any]], str]] = [
    ("no clinical baseline", _table(clinical_baseline=None), "table"),
    ("built-in baseline without its features", _table(clinical_baseline="lace_like"), "table"),
    ("unapproved feature", _unapproved, "table"),
    (
        "table task named like a built-in task",
        _table(name="readmission_30d", clinical_baseline=None),
        "table",
    ),
    ("feature SQL not shipped", _icu(feature_sql="nosuch.sql"), "raw"),
    ("protected attribute without a column", _icu_attribute, "raw"),
]


@pytest.fixture(scope="module")
def csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dm") / "diabetes.csv"
    table_task.diabetes_table().to_csv(path, index=False)
    return path


def _lines(exc: BaseException) -> list[str]:
    """The problems an error names: each 'field: message' of a spec error, else its text."""
    if isinstance(exc, TaskSpecInvalid):
        return [f"{path}: {message}" for path, message in exc.problems]
    return [str(exc)]


@pytest.mark.parametrize(("case", "make", "source"), CASES, ids=[c[0] for c in CASES])
def test_check_refuses_what_train_refuses_in_the_same_words(
    case: str,
    make: Callable[[], dict[str, Any]],
    source: str,
    csv: Path,
    small_source_dir: Path,
    tmp_path: Path,
) -> None:
    spec_file = table_task.write(tmp_path, make())
    load_task(spec_file)  # the loader accepts it: only training would refuse it

    checked = CliRunner().invoke(app, ["tasks", "check", str(spec_file)])
    assert checked.exit_code != 0, f"{case}: tasks check passed:\n{checked.output}"
    said = " ".join(str(checked.exception).split())

    ws = Workspace.open(tmp_path / "ws")
    with pytest.raises(Exception) as refused:
        snap = build_task_snapshot(
            ws,
            task=load_task(spec_file),
            source=source,
            path=csv if source == "table" else small_source_dir,
        )
        train_model(ws, snap, config=FAST)
    for line in _lines(refused.value):
        assert " ".join(line.split()) in said, f"{case}: train said {line!r}; check said {said!r}"


def test_a_trainable_spec_passes_check_and_names_its_baseline(tmp_path: Path) -> None:
    for name in ("icu_mortality_48h", "readmission_30d"):
        res = CliRunner().invoke(app, ["tasks", "check", name, "--json"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["clinical_baseline"] in ("sofa_like", "lace_like")
    spec_file = table_task.write(tmp_path, table_task.spec())
    res = CliRunner().invoke(app, ["tasks", "check", str(spec_file)])
    assert res.exit_code == 0 and "trainable" in res.stdout
