"""`photoid export`: a run's fold ensemble as one self-contained model file, for use outside photoid.

The model takes float32 images in [0, 1] at the run's `dim` (batch × dim × dim × 3) and returns the mean of the
chosen folds' class probabilities, computed inside one graph: one input, each fold's model as a sub-model named
`fold_K`, an `Average` layer. Beside it:

- `NAME.classes.txt` — class i of the output is line i (in a SavedModel folder: `classes.txt`);
- `NAME.export.json` — the input, how photos are prepared for it, the ids named in submissions (others are
  the task's new label: `new_turtle` or `new_individual`), and the Python modules to import before loading
  (`import_before_loading`): none for plain Keras layers, `photoid.models.layers` for GeM/ArcFace heads, the backbone's
  library for its own layers (with `TF_USE_LEGACY_KERAS=1` set before TensorFlow is imported, under `environment`).

Loading needs nothing else: `tf_keras.models.load_model("model.keras")`; the SavedModel folder also loads with
`tf.saved_model.load(DIR)` (its `serving_default` signature) without any Python code of the model's libraries.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf
import tf_keras

from photoid.core import io as pio
from photoid.core.errors import PhotoidError
from photoid.inference.fold_models import FoldModel, load_fold_models
from photoid.records.writer import LAYOUT_CONTENTS
from photoid.runs.loaded import RunInfo, load_run
from photoid.tasks import get_task

# Modules whose import registers a library's layers, for libraries that register them outside the layer's module.
_REGISTERING_MODULE = {"efficientnet": "efficientnet.tfkeras"}
_KERAS_PACKAGES = ("tf_keras", "keras", "tensorflow")


def build_ensemble_model(fold_models: list[FoldModel], dim: int) -> tf_keras.Model:
    """One model: the image → each fold model (a sub-model `fold_K`) → the mean of their probabilities."""
    if not fold_models:
        raise PhotoidError("no fold models to export")
    image = tf_keras.Input((dim, dim, 3), dtype="float32", name="image")
    # Each fold model is wrapped under its own name: the fold models share the name "model".
    outputs = [tf_keras.Model(m.predict.inputs, m.predict.outputs, name=f"fold_{m.fold}")(image)
               for m in sorted(fold_models, key=lambda m: m.fold)]
    mean = tf_keras.layers.Average(name="fold_mean")(outputs) if len(outputs) > 1 else outputs[0]
    return tf_keras.Model(image, mean, name="fold_ensemble")


def modules_to_import(model: tf_keras.Model) -> list[str]:
    """Python modules that must be imported before loading `model`, for layers Keras does not know itself."""
    modules = set()
    for layer in model.submodules:
        module = type(layer).__module__
        if isinstance(layer, tf_keras.layers.Layer) and not module.startswith(_KERAS_PACKAGES):
            modules.add(_REGISTERING_MODULE.get(module.split(".")[0], module))
    return sorted(modules)


def describe_export(run: RunInfo, folds: list[int], model: tf_keras.Model, classes_file: str) -> dict:
    pre = run.preprocessing
    modules = modules_to_import(model)
    return {
        "format": "photoid fold ensemble",
        "run": str(run.run_dir.resolve()),
        "recipe": run.config.model,
        "backbone": run.config.backbone,
        "head": run.config.head,
        "folds": folds,
        "input": {"shape": [pre.dim, pre.dim, 3], "dtype": "float32", "range": [0.0, 1.0]},
        "output": "mean of the folds' class probabilities (softmax), one column per line of the classes file",
        "preparing_a_photo": {
            "records": LAYOUT_CONTENTS[pre.layout].format(size=pre.records_dim_pre) + _first_steps(pre),
            "reader": (f"decode_jpeg(INTEGER_ACCURATE) -> bilinear resize to {pre.dim_pre} x {pre.dim_pre} -> "
                       f"cast to uint8 -> bilinear resize to {pre.dim} x {pre.dim} -> "
                       + ("subtract from 255 -> divide by 255" if pre.inverted else "divide by 255")),
            "photoid": "photoid.runs.loaded.Preprocessing(...).file_bytes / model_input do exactly this",
        },
        "classes_file": classes_file,
        "original_ids": run.original_ids,
        "new_label": get_task(run.config.task).new_label,
        "import_before_loading": modules,
        # Libraries that build on `tf.keras` (efficientnet, kecam) register their layers with tf-keras only when
        # TensorFlow was imported with this set.
        "environment": {"TF_USE_LEGACY_KERAS": "1"} if modules else {},
    }


def _first_steps(pre) -> str:
    """What whale records do to a photo before storing it: mirror right views, then turn wide photos upright."""
    steps = (["a right view (the caller knows which) is mirrored left to right"] if pre.mirror_right else []) + (
        ["a photo wider than tall is turned 90 degrees clockwise"] if pre.rotate_wide else [])
    return "; first " + ", then ".join(steps) if steps else ""


def _write_savedmodel(model: tf_keras.Model, out_dir: Path, classes_text: str, description: dict) -> None:
    """Write the SavedModel into a fresh folder beside `out_dir`, then swap it in, so a reader never sees half."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    built, previous = staging / "model", staging / "previous"
    try:
        # SavedModel writing reloads the Keras metadata internally and logs a warning about metrics of a model
        # that is never compiled; only errors are worth the user's attention here.
        level = tf.get_logger().level
        tf.get_logger().setLevel("ERROR")
        try:
            model.save(str(built), save_format="tf")
        finally:
            tf.get_logger().setLevel(level)
        pio.write_text(built / "classes.txt", classes_text)
        pio.write_json(built / "export.json", {**description, "classes_file": "classes.txt"})
        if out_dir.exists():
            os.replace(out_dir, previous)
        try:
            os.replace(built, out_dir)
        except OSError:
            if previous.exists():  # put the earlier export back rather than lose it with the staging folder
                os.replace(previous, out_dir)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, savedmodel: str | None = None,
               folds: list[int] | None = None, records_dir: str | None = None) -> tuple[tf_keras.Model, list[int]]:
    """Export the chosen folds of a run as one model (`.keras` file and/or SavedModel folder).

    Returns the model and the folds it averages.
    """
    if out is None and savedmodel is None:
        raise PhotoidError("choose where to write the model: --out model.keras and/or --savedmodel DIR")
    if out is not None and not str(out).endswith(".keras"):
        raise PhotoidError(f"--out {out}: the file name must end in .keras")
    run = load_run(run_dir, records_dir)
    fold_models = load_fold_models(run, folds)
    chosen = [m.fold for m in fold_models]
    model = build_ensemble_model(fold_models, run.preprocessing.dim)
    classes_text = "\n".join(run.classes) + "\n"
    if out is not None:
        out = Path(out)
        stem = out.with_suffix("")
        classes_file = stem.with_name(stem.name + ".classes.txt")
        with pio.atomic_path(out, suffix=".keras") as tmp:
            model.save(tmp)
        pio.write_text(classes_file, classes_text)
        pio.write_json(stem.with_name(stem.name + ".export.json"), describe_export(run, chosen, model, classes_file.name))
    if savedmodel is not None:
        _write_savedmodel(model, Path(savedmodel), classes_text, describe_export(run, chosen, model, "classes.txt"))
    return model, chosen




