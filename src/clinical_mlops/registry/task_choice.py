"""Which task a command means when it names none: the one the workspace's releases are for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clinical_mlops.errors import ReleaseNotServable

if TYPE_CHECKING:
    from clinical_mlops.registry.registry import Registry

__all__ = ["registered_task", "sole_task"]


def sole_task(registry: Registry) -> str | None:
    """Return the task of every registered release when they share one, else ``None``."""
    tasks = {release.task for release in registry.list()}
    return tasks.pop() if len(tasks) == 1 else None


def registered_task(registry: Registry, task: str | None, *, release: str | None = None) -> str:
    """Return ``task``; or the task of ``release``; or the one task the workspace has releases of.

    No built-in task is ever assumed: a workspace with releases of several tasks, or
    none, raises ``ReleaseNotServable`` listing what there is, and the task must be named.
    """
    if task:
        return task
    if release:
        return registry.get(release).task
    found = sole_task(registry)
    if found is not None:
        return found
    tasks = sorted({r.task for r in registry.list()})
    if not tasks:
        raise ReleaseNotServable(
            f"no active approved release in workspace {registry.workspace.root}: no release is "
            "registered, so there is no task to serve; register and approve a release first"
        )
    raise ReleaseNotServable(
        f"workspace {registry.workspace.root} holds releases of {len(tasks)} tasks "
        f"({', '.join(tasks)}); name the task"
    )
