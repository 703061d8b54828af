"""Every error the library raises, in one tree.

::

    ClinicalMlopsError
    ├── SpecError
    │   └── TaskSpecInvalid            a task spec that does not validate (names the field)
    ├── DataError
    │   ├── SourceInvalid              raw tables missing, empty or malformed
    │   ├── ContractViolation          hard data-contract failures before training
    │   ├── LeakageDetected            a post-prediction-time event reached a feature
    │   └── UndeclaredFeature          a feature not declared and approved in the spec (R-P1)
    └── WorkspaceError
        └── SnapshotNotFound           no snapshot with that id in the workspace

Every message says what is wrong, where (table, column, rows or spec field) and,
where it helps, what to do next.
"""

from __future__ import annotations

__all__ = [
    "ClinicalMlopsError",
    "ContractViolation",
    "DataError",
    "LeakageDetected",
    "SnapshotNotFound",
    "SourceInvalid",
    "SpecError",
    "TaskSpecInvalid",
    "UndeclaredFeature",
    "WorkspaceError",
]


class ClinicalMlopsError(Exception):
    """Base of every error raised by clinical-mlops."""


class SpecError(ClinicalMlopsError):
    """A task specification problem."""


class TaskSpecInvalid(SpecError):
    """The task spec does not validate; ``problems`` lists (field path, message) pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = [f"task spec {source} is invalid:"]
        lines += [f"  {path}: {message}" for path, message in problems]
        super().__init__("\n".join(lines))


class DataError(ClinicalMlopsError):
    """A problem with the input data."""


class SourceInvalid(DataError):
    """A raw source is missing tables or columns, empty, or unreadable."""


class ContractViolation(DataError):
    """Hard data-contract violations; ``report`` holds the full contract report."""

    def __init__(self, message: str, report: object | None = None):
        self.report = report
        super().__init__(message)


class LeakageDetected(ContractViolation):
    """Information from after the prediction time reached a feature or the label."""


class UndeclaredFeature(DataError):
    """A feature that is not declared and approved in the task spec (R-P1)."""


class WorkspaceError(ClinicalMlopsError):
    """A problem with the workspace layout or its stores."""


class SnapshotNotFound(WorkspaceError):
    """No snapshot with the given id exists in the workspace."""
