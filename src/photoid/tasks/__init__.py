"""The registry: the data layouts photoid knows, and the training augmentations recipes name.

A task is the one place that knows a data layout (Turtle Recall, Where's Whale-do, photoid's generic folder): how its
folder is recognised and read, labelled, split, recorded and scored. Each lives in its own folder
(`photoid/turtles/`, `photoid/whales/`, `photoid/generic/`) whose `task.py` defines `TASK` (a `photoid.tasks.base.Task`).
The shared machinery (records, training, inference, catalogue, page) never imports a task's folder: it asks this
registry for the run's task (`get_task(cfg.task)`) or the folder's (`detect_task(data_dir)`). The registry names
each task's module, as `photoid.cli` names each command's, and imports it when it is first asked for; so a new
layout is one new folder and one line in `TASK_MODULES` (the manual's design page has the checklist).

The task modules are light (no TensorFlow; pandas only inside methods): `photoid.runs.config` validates `task` with
`TASK_MODULES` before anything heavy is imported.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Callable

from photoid.core.errors import PhotoidError
from photoid.tasks.base import Task

# name -> the module defining TASK; the order is the order `detect_task` tries them in
TASK_MODULES: dict[str, str] = {
    "turtles": "photoid.turtles.task",
    "whales": "photoid.whales.task",
    "generic": "photoid.generic.task",
}

# a recipe's `augment` -> the module whose AUGMENTATIONS[name] augments one training image (photoid.records.reader)
AUGMENTATION_MODULES: dict[str, str] = {
    "original": "photoid.turtles.augment",
    "whaledo": "photoid.whales.augment",
    "whaledo_triangle": "photoid.whales.augment",
}


def get_task(name: str) -> Task:
    if name not in TASK_MODULES:
        raise PhotoidError(f"unknown task {name!r}; known tasks: {', '.join(TASK_MODULES)}")
    return importlib.import_module(TASK_MODULES[name]).TASK


def all_tasks() -> list[Task]:
    """Every task, in `TASK_MODULES` order."""
    return [get_task(name) for name in TASK_MODULES]


def __getattr__(name: str):
    if name == "TASKS":  # name -> Task, for callers that iterate the tasks
        return {task.name: task for task in all_tasks()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_augmentation(name: str) -> Callable:
    """The training augmentation a recipe names: `fn(image, seed, *, aug_number, aug_percentage, aug_draw)` on one
    uint8 image, every draw keyed by the stateless `seed`."""
    if name not in AUGMENTATION_MODULES:
        raise ValueError(f"unknown augment {name!r}; known: {', '.join(AUGMENTATION_MODULES)}")
    return importlib.import_module(AUGMENTATION_MODULES[name]).AUGMENTATIONS[name]


def detect_task(data_dir: str | os.PathLike) -> Task:
    """The task whose folder layout `data_dir` has (the first that recognises it, in `TASK_MODULES` order)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise PhotoidError(f"data folder {root} does not exist or is not a folder")
    for task in all_tasks():
        if task.detect(root):
            return task
    raise PhotoidError(
        f"{root} is not a folder photoid knows: expected train.csv and images/ (Turtle Recall), metadata.csv with "
        "image_id,path,viewpoint (Where's Whale-do) or metadata.csv with image_id,path,identity (generic); "
        "or name the task with --task")
