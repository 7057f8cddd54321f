"""The tasks photoid knows: what a data folder is, how it is read, labelled, split, recorded and scored.

A task is the one place that knows a data layout (Turtle Recall, Where's Whale-do, photoid's generic folder).
Every command asks the run's task (`get_task(cfg.task)`) or the folder's (`detect_task(data_dir)`) instead of
testing the task's name, so a new species layout is one new module here and one line in `TASKS`.

Modules here stay light (no TensorFlow, pandas only inside methods): `photoid.config` validates `task` with
`TASKS` before anything heavy is imported.
"""

from __future__ import annotations

import os
from pathlib import Path

from photoid.errors import PhotoidError
from photoid.tasks.base import Task


def _registry() -> dict[str, Task]:
    from photoid.tasks.generic import GENERIC
    from photoid.tasks.turtles import TURTLES
    from photoid.tasks.whales import WHALES

    return {task.name: task for task in (TURTLES, WHALES, GENERIC)}


TASKS: dict[str, Task] = _registry()


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise PhotoidError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


def detect_task(data_dir: str | os.PathLike) -> Task:
    """The task whose folder layout `data_dir` has (the first that recognises it, in `TASKS` order)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise PhotoidError(f"data folder {root} does not exist or is not a folder")
    for task in TASKS.values():
        if task.detect(root):
            return task
    raise PhotoidError(
        f"{root} is not a folder photoid knows: expected train.csv and images/ (Turtle Recall), metadata.csv with "
        "image_id,path,viewpoint (Where's Whale-do) or metadata.csv with image_id,path,identity (generic); "
        "or name the task with --task")


def task_of_data(records_dir: str, data_dir: str) -> str | None:
    """The task of a run's data when it says: its records' records.json, else its data folder's files; None when
    neither exists (remote records are not read here)."""
    from photoid.recordsdir import RecordsDir, is_remote

    records = None if is_remote(records_dir) else RecordsDir(records_dir)
    if records is not None and records.has_manifest():
        try:
            dataset = records.setting("dataset", None)
        except PhotoidError:  # a damaged records.json: the run's own checks name it
            dataset = None
        return next((task.name for task in TASKS.values() if task.records_dataset == dataset), None)
    root = Path(data_dir)
    if "://" not in data_dir and root.is_dir():
        return next((task.name for task in TASKS.values() if task.detect(root)), None)
    return None
