"""Known tasks by name. Adding a task = its module under ``vdd_ros/tasks/`` + one line in ``_ENTRIES``.

Entries are "module:attribute" strings imported on first use, so listing names or loading
one task never imports the others (or their plotting and simulation dependencies).
"""

from __future__ import annotations

import importlib

from vdd_ros.tasks.base import Task

_ENTRIES: dict[str, str | Task] = {
    "avoiding": "vdd_ros.tasks.avoiding.task:AvoidingTask",
    "pushing": "vdd_ros.tasks.pushing.task:PushingTask",
}


class UnknownTaskError(KeyError, ValueError):
    """No task of that name; the message lists the known ones.

    A KeyError for lookups, a ValueError for callers that treat it as a bad setting.
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def task_names() -> list[str]:
    """Registered task names, sorted."""
    return sorted(_ENTRIES)


def register(task: Task) -> Task:
    """Add ``task`` under ``task.name`` (for tasks defined outside this package, e.g. in tests)."""
    task.validate()
    if task.name in _ENTRIES:
        raise ValueError(f"a task named {task.name!r} is already registered")
    _ENTRIES[task.name] = task
    return task


def get_task(name: str | Task) -> Task:
    """The registered task called ``name``; a ``Task`` passes through, so callers can take either."""
    if isinstance(name, Task):
        return name
    entry = _ENTRIES.get(name)
    if entry is None:
        raise UnknownTaskError(f"unknown task {name!r}; known tasks: {', '.join(task_names())}")
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)()
        entry.validate()
        if entry.name != name:
            raise ValueError(f"registry entry {name!r} builds a task named {entry.name!r}")
        _ENTRIES[name] = entry
    return entry
