"""Which task a build means when it names none: the one the workspace's snapshots are for."""

from __future__ import annotations

from clinical_mlops.errors import SpecError
from clinical_mlops.workspace import Workspace

__all__ = ["snapshot_task"]


def snapshot_task(workspace: Workspace, task: str | None) -> str:
    """Return ``task``, or the one task every snapshot in the workspace was built for.

    No built-in task is ever assumed: a workspace without snapshots, or with snapshots
    of several tasks, raises ``SpecError`` listing the choices, and the task must be named.
    """
    if task:
        return task
    from clinical_mlops.features.snapshot import list_snapshots, open_snapshot
    from clinical_mlops.tasks import builtin_tasks

    tasks = sorted({open_snapshot(workspace, i).task_name for i in list_snapshots(workspace)})
    if len(tasks) == 1:
        return tasks[0]
    if tasks:
        raise SpecError(
            f"workspace {workspace.root} holds snapshots of {len(tasks)} tasks "
            f"({', '.join(tasks)}); name the task"
        )
    raise SpecError(
        f"no snapshot in workspace {workspace.root} names a task yet; name the task: a task "
        f"spec YAML, or a built-in task ({', '.join(builtin_tasks())})"
    )
