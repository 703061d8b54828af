"""Task specifications: the contract between clinicians, data and models.

Each built-in task lives here as YAML (``icu_mortality_48h.yaml``); load one with
:func:`load_task`. A spec declares the cohort, the label, the temporal split,
every feature with its clinical justification, the protected attributes, the
thresholds and the intended use.
"""

from clinical_mlops.tasks.spec import (
    Feature,
    ProtectedAttribute,
    TaskSpec,
    Thresholds,
    builtin_tasks,
    load_task,
    task_from_mapping,
)

__all__ = [
    "Feature",
    "ProtectedAttribute",
    "TaskSpec",
    "Thresholds",
    "builtin_tasks",
    "load_task",
    "task_from_mapping",
]
