"""Where raw sources come from: the synthetic generators (cached in the workspace) or a folder.

``source="synthetic"`` generates a raw source once per (seed, scale) and keeps it
under ``sources/`` in the workspace — ICU stays (:mod:`~clinical_mlops.data.synthetic`)
or general-ward admissions (:mod:`~clinical_mlops.data.ward`), whichever the task
spec's ``cohort.setting`` names; ``source="raw"`` opens a folder already in the
raw-event contract (see :mod:`clinical_mlops.data.raw`); ``source="mimic-iv"`` extracts
a MIMIC-IV v2.2 folder (:mod:`~clinical_mlops.data.mimic_iv`, cached in the workspace).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from clinical_mlops.data.mimic_iv import mimic_iv_source
from clinical_mlops.data.raw import RawSource, read_source
from clinical_mlops.data.synthetic import SyntheticConfig, generate_source
from clinical_mlops.data.ward import WardConfig, generate_ward_source
from clinical_mlops.errors import SourceInvalid
from clinical_mlops.hashing import sha256_json
from clinical_mlops.workspace import Workspace

__all__ = ["SourceKind", "open_source", "synthetic_source", "ward_source"]

SourceKind = Literal["synthetic", "raw", "mimic-iv"]


def synthetic_source(
    workspace: Workspace,
    config: SyntheticConfig,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> RawSource:
    """Return the synthetic raw source for ``config``, generating it if the workspace lacks it."""
    key = sha256_json(config.as_dict() | {"chunk_stays": config.chunk_stays})[:12]
    final = workspace.sources_dir / f"synthetic-seed{config.seed}-scale{config.scale:g}-{key}"
    if not (final / "source.json").exists():
        with workspace.staging_dir(workspace.sources_dir) as stage:
            generate_source(stage, config=config, progress=progress)
            workspace.publish(stage, final)
    return read_source(final)


def ward_source(workspace: Workspace, config: WardConfig) -> RawSource:
    """Return the synthetic ward source for ``config``, generating it if the workspace lacks it."""
    key = sha256_json(config.as_dict())[:12]
    final = workspace.sources_dir / f"ward-seed{config.seed}-scale{config.scale:g}-{key}"
    if not (final / "source.json").exists():
        with workspace.staging_dir(workspace.sources_dir) as stage:
            generate_ward_source(stage, config=config)
            workspace.publish(stage, final)
    return read_source(final)


def open_source(
    workspace: Workspace,
    *,
    kind: SourceKind,
    path: Path | None = None,
    config: SyntheticConfig | None = None,
    setting: Literal["icu", "ward"] = "icu",
    progress: Callable[[int, int], None] | None = None,
    status: Callable[[str], None] | None = None,
) -> RawSource:
    """Return the raw source the user asked for (synthetic: for the task's ``setting``).

    ``status(text)`` receives the MIMIC-IV reader's progress lines.
    """
    if kind == "synthetic":
        config = config or SyntheticConfig()
        if setting == "ward":
            return ward_source(workspace, WardConfig(seed=config.seed, scale=config.scale))
        return synthetic_source(workspace, config, progress=progress)
    if kind == "raw":
        if path is None:
            raise SourceInvalid(
                "--path is required with --source raw (a folder of raw-contract tables)"
            )
        return read_source(path)
    if kind == "mimic-iv":
        if path is None:
            raise SourceInvalid(
                "--path is required with --source mimic-iv (the folder holding MIMIC-IV v2.2's "
                "hosp/ and icu/ folders)"
            )
        if setting != "icu":
            raise SourceInvalid(
                "--source mimic-iv extracts ICU stays and the ICU task's variables; a task whose "
                "cohort.setting is 'ward' cannot use it"
            )
        return mimic_iv_source(workspace, path, progress=status)
    raise SourceInvalid(f"unknown source {kind!r}; expected synthetic, raw or mimic-iv")
