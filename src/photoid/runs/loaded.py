"""A trained run folder, loaded back: its configuration, labels, finished folds and preprocessing.

A run folder describes itself (`config.json`, `classes.txt`, `original_ids.txt`, `fold_K/best.weights.h5`), and
the records it was trained from say how each photo was stored (`records.json`: `dim_pre`, `layout`).
Identification and export rebuild every fold model from the folder alone and prepare a photo file exactly as the
records and the reader did, so a photo gets the same probabilities on its own as in the run's batch predictions.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import tensorflow as tf

from photoid.runs.config import REPO_ROOT, Config
from photoid.core import fs
from photoid.core.errors import PhotoidError
from photoid.records.reader import preprocess_image_bytes
from photoid.records.writer import check_layout_size, prepare_image_bytes
from photoid.records.folder import MANIFEST_NAME, MIRRORED_VIEWPOINT, RecordsDir, records_layout
from photoid.runs.folder import BEST_WEIGHTS, RunDir


@dataclass(frozen=True)
class Preprocessing:
    """How a photo file becomes one model input: the records' preparation, then the reader's chain.

    `records_dim_pre`/`layout`/`rotate_wide`/`mirror_right` are the records' settings (what `prepare_image_bytes`
    stored; whale records mirror right views); `dim_pre`/`dim` are the run's (what the reader resized to before and
    after the TTA transform). A photo's viewpoint is only known when its caller says it (None: not mirrored).
    """

    dim: int
    dim_pre: int
    records_dim_pre: int
    layout: str
    rotate_wide: bool = False
    inverted: bool = False  # the run's image_inverted
    mirror_right: bool = False

    @property
    def key(self) -> tuple[int, str, bool, bool]:
        """What decides the prepared bytes (with the photo's viewpoint): photos are prepared once per key."""
        return self.records_dim_pre, self.layout, self.rotate_wide, self.mirror_right

    def mirrors(self, viewpoint: str | None) -> bool:
        """Whether the records stored a photo of this viewpoint mirrored."""
        return self.mirror_right and viewpoint == MIRRORED_VIEWPOINT

    def file_bytes(self, path: str | os.PathLike, viewpoint: str | None = None) -> bytes:
        """The image bytes the records would hold for this photo (PhotoidError if it cannot be decoded)."""
        jpeg = prepare_image_bytes(path, self.records_dim_pre, self.layout, mirror=self.mirrors(viewpoint),
                                   rotate_wide=self.rotate_wide)
        if self.layout == "original":
            # Kept files reach TensorFlow's decoder undecoded so far: a damaged one is refused here, as one
            # photo's problem, rather than failing a whole batch later.
            try:
                tf.io.decode_jpeg(jpeg, channels=3)
            except tf.errors.OpError:
                raise PhotoidError(f"{path}: cannot be decoded as a JPEG (its compressed data is damaged)") from None
        return jpeg

    def model_input(self, jpeg: bytes, tta: int) -> np.ndarray:
        """float32 (dim, dim, 3) in [0, 1]: what the reader gives the model for these bytes and TTA transform."""
        return _compiled_preprocess(self.dim, self.dim_pre, tta, self.inverted)(tf.constant(jpeg), _SCALE).numpy()


def prepare_photos(paths, preprocessings, viewpoints=None) -> tuple[dict, dict[str, str]]:
    """Each readable photo's prepared JPEG per preparation setting, and why the others cannot be read.

    Photos are prepared once per distinct `Preprocessing.key` among `preprocessings`, however many models share
    that setting. `viewpoints` (one per path; None, or None for a photo: unknown) says which photos are right
    views, mirrored for runs whose records mirrored them. Returns ({key: {path: bytes}}, {path: reason}).
    """
    from photoid.core.images import check_image_file, check_photo_file

    settings = {p.key: p for p in preprocessings}
    # Compact records were prepared by Pillow, from any photo format; the other layouts read JPEGs only.
    check = check_photo_file if all(p.layout == "compact" for p in settings.values()) else check_image_file
    viewpoints = check_viewpoints(paths, viewpoints)
    prepared: dict[tuple, dict[str, bytes]] = {}
    errors: dict[str, str] = {}
    for path in paths:
        reason = check(path)
        if reason is None:
            try:
                for key, preprocessing in settings.items():
                    prepared.setdefault(key, {})[path] = preprocessing.file_bytes(path, viewpoints.get(path))
            except PhotoidError as err:
                reason = str(err).removeprefix(f"{path}: ")
        if reason is not None:
            errors[path] = reason
    return prepared, errors


def check_viewpoints(paths, viewpoints) -> dict[str, str | None]:
    """{path: viewpoint} of `viewpoints` given one per path (None: every photo's is unknown)."""
    if viewpoints is None:
        return {}
    viewpoints = list(viewpoints)
    if len(viewpoints) != len(paths):
        raise PhotoidError(f"{len(viewpoints)} viewpoints given for {len(paths)} photos")
    given: dict[str, str | None] = {}
    for path, viewpoint in zip(paths, viewpoints):
        viewpoint = viewpoint or None  # "" (an empty table cell) is unknown too
        if given.setdefault(path, viewpoint) != viewpoint:
            raise PhotoidError(f"{path}: given twice, with viewpoints {given[path]!r} and {viewpoint!r}")
    return given


def check_viewpoint_applies(viewpoint: str | None, preprocessings, runs: str) -> None:
    """Refuse a viewpoint for models whose records kept every view as it was: it would change nothing, and a
    researcher passing it expects it to (Turtle Recall and generic records never mirror)."""
    if viewpoint is not None and not any(p.mirror_right for p in preprocessings):
        raise PhotoidError(f"--viewpoint {viewpoint}: {runs} trained on records that store every view as it is "
                           "(only whale records mirror right views), so a photo's viewpoint changes nothing; "
                           "leave --viewpoint out")


@functools.lru_cache(maxsize=None)
def _compiled_preprocess(dim: int, dim_pre: int, tta: int, inverted: bool):
    # Traced once per setting instead of running op by op: the same ops as the reader's graph, faster per photo.
    # The scale comes in as an argument: a constant would be folded into a multiplication (see finish_image), and
    # the inputs would then differ from the records' by a float step.
    return tf.function(lambda jpeg, scale: preprocess_image_bytes(jpeg, dim, dim_pre, tta, inverted, scale),
                       input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.float32)])


_SCALE = np.float32(255.0)  # a numpy value: a tensor made at import would start TensorFlow before a strategy is set


@dataclass(frozen=True)
class RunInfo:
    """A trained run folder read back (`load_run`, `photoid.open_run`, `photoid.train`): plain data.

    Attributes:
        run_dir: the run folder.
        config: the configuration it was trained with (`config.json`; `photoid train --help` lists the fields).
        classes: the individuals in label order (`classes.txt`): column i of its probabilities is `classes[i]`.
        original_ids: the ids a prediction may name (`original_ids.txt`); the others read the task's new label
            (`new_turtle` for Turtle Recall runs, where only train.csv's 100 ids are named).
        preprocessing: how a photo file becomes a model input, exactly as its records and reader prepared it.
        folds: the folds whose training finished, with their best weights.
        data_dir: the data folder it was trained on, when it can still be found (else None).
    """

    run_dir: Path
    config: Config
    classes: list[str]
    original_ids: list[str]
    preprocessing: Preprocessing
    folds: list[int]  # folds whose training finished, with their best weights
    data_dir: Path | None  # the competition folder it was trained on, when it can still be found

    @property
    def name(self) -> str:
        """The run folder's name (by default the recipe's: `runs/RECIPE`)."""
        return self.run_dir.name

    @property
    def folder(self) -> RunDir:
        """The run folder's owner (`photoid.runs.folder.RunDir`): every file of the run by name."""
        return RunDir(self.run_dir)


def _existing(path: str, candidates_base: list[Path]) -> Path | None:
    """`path` as given (absolute, or from the working folder), else relative to each base folder."""
    given = Path(path)
    for candidate in [given, *(base / given for base in candidates_base if not given.is_absolute())]:
        if candidate.exists():
            return candidate
    return None


def _bases(run_dir) -> list[Path]:
    # Relative paths in config.json are relative to where training ran: usually the repository root (the demo,
    # run_training.sh) or the folder holding `runs/` (a local one: a run folder on gs:// says nothing of that).
    return [REPO_ROOT] if fs.is_remote(run_dir) else [REPO_ROOT, Path(run_dir).resolve().parent.parent]


def records_settings(records_dir: str, run_dir: Path) -> tuple[int, str, bool]:
    """(dim_pre, layout, rotate_wide) of the records a run was trained from, read from their records.json.

    A relative local folder not found from here is looked for where training ran (`_bases`)."""
    from photoid.records.reader import open_records

    if not fs.is_remote(records_dir):
        found = _existing(os.path.join(records_dir, MANIFEST_NAME), _bases(run_dir))
        if found is None:
            raise PhotoidError(
                f"cannot find {MANIFEST_NAME} of the records run {run_dir} was trained from (looked for "
                f"{records_dir}/{MANIFEST_NAME}); its dim_pre and layout say how photos are prepared. "
                "Pass the records folder with --records_dir")
        records_dir = str(found.parent)
    return open_records(records_dir).photo_settings()


def _records_mirror_right(records_dir: str, run_dir: Path) -> bool:
    """Whether a run's records mirrored right views, for runs whose preprocessing.json predates the setting: their
    records.json says (whale records always wrote it); records that do not say never mirrored."""
    if fs.is_remote(records_dir):
        return bool(RecordsDir(records_dir).mirror_right())
    found = _existing(os.path.join(records_dir, MANIFEST_NAME), _bases(run_dir))
    return bool(found is not None and RecordsDir(found.parent).mirror_right())


def load_run(run_dir: str | os.PathLike, records_dir: str | None = None) -> RunInfo:
    """Read a run folder: configuration, labels, finished folds and the preprocessing of its records.

    `records_dir` replaces the records folder named in config.json (for a run moved to another machine).
    """
    folder = RunDir(run_dir)
    run_dir = folder.path
    if not run_dir.is_dir():
        raise PhotoidError(f"{run_dir}: run folder not found")
    cfg = folder.config()
    classes, original_ids = folder.classes(), folder.original_ids()
    folds = folder.trained_folds()
    if not folds:
        raise PhotoidError(f"{run_dir}: no fold has finished training (no fold_K/done.json with {BEST_WEIGHTS})")
    settings = folder.trained_preprocessing()
    if settings is not None:
        # How training's records stored photos, kept in the run: records rebuilt since then do not change it.
        records_dim_pre, layout = int(settings["records_dim_pre"]), records_layout(settings)
        rotate_wide = bool(settings.get("rotate_wide", False))
        mirror_right = settings.get("mirror_right")
    else:
        records_dim_pre, layout, rotate_wide = records_settings(records_dir or cfg.records_dir, run_dir)
        mirror_right = None
    if mirror_right is None:
        mirror_right = _records_mirror_right(records_dir or cfg.records_dir, run_dir)
    check_layout_size(layout, records_dim_pre, cfg.dim_pre, records_dir or cfg.records_dir)
    preprocessing = Preprocessing(dim=cfg.dim, dim_pre=cfg.dim_pre, records_dim_pre=records_dim_pre, layout=layout,
                                  rotate_wide=rotate_wide, inverted=cfg.image_inverted,
                                  mirror_right=bool(mirror_right))
    data_dir = _existing(cfg.data_dir, _bases(run_dir))
    return RunInfo(run_dir=run_dir, config=cfg, classes=classes, original_ids=original_ids,
                   preprocessing=preprocessing, folds=folds, data_dir=data_dir)


def check_same_labels(runs: list[RunInfo]) -> None:
    """Only runs with one label order (and one set of original ids) can be averaged class by class."""
    from photoid.runs.folder import check_same_labels as check_folders

    check_folders([run.folder for run in runs])


def choose_folds(run: RunInfo, folds: list[int] | None) -> list[int]:
    """The asked folds (all trained ones when None), refusing any the run does not have."""
    if folds is None:
        return list(run.folds)
    missing = sorted(set(folds) - set(run.folds))
    if missing:
        raise PhotoidError(f"{run.run_dir}: fold(s) {missing} not trained; trained folds: {run.folds}")
    return sorted(set(folds))
