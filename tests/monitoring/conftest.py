"""Monitoring fixtures: the small trained model's test stays scored once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from clinical_mlops.monitoring.scenarios import ScoredStays, scored_test_stays
from clinical_mlops.workspace import Workspace
from registry_helpers import trained  # noqa: F401


@pytest.fixture(scope="session")
def scored(trained: tuple[Path, str]) -> ScoredStays:  # noqa: F811
    """The locked test stays of the session's small model, scored once."""
    return scored_test_stays(Workspace.open(trained[0]), model_version=trained[1])
