"""Fold models, loaded and run: the one place a trained fold model is built and its weights loaded.

Every command that runs trained models (training's predictions, `identify`, `embed`/`rank`, `export`, `catalog`
and `serve`) gets its models from `load_fold_models` (a run's folds) or `build_fold_model` (any weights file, such
as the original's published one). A fold model is built with no pretrained set (every weight comes from the file,
so nothing is downloaded), its weights loaded with the array-count check of `photoid.models.factory.load_weights_file`, and
it carries what identifies it (the weights' sha256; with a run, the run's settings and labels) and one traced
forward pass per output.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import tensorflow as tf
import tf_keras

from photoid.core.errors import PhotoidError
from photoid.core.labels import classes_sha256
from photoid.runs.folder import weights_sha256

if TYPE_CHECKING:
    from photoid.runs.loaded import Preprocessing, RunInfo

# The settings that decide what a model's embedding means; the weights' sha256 pins the trained values.
MODEL_FIELDS = ("task", "backbone", "dim", "dim_pre", "pooling", "head", "embedding_size")


def config_sha256(config) -> str:
    """Fingerprint of the settings that decide what a model's embedding means (not paths or job words)."""
    values = {name: getattr(config, name) for name in MODEL_FIELDS}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode("utf-8")).hexdigest()


def build_predict_model(cfg, n_classes: int) -> tf_keras.Model:
    """The recipe's image → probabilities model with untrained weights (a weight file replaces them all)."""
    return _build_untrained(cfg, n_classes).predict


def _build_untrained(cfg, n_classes: int):
    from photoid.models.factory import build_models_from_config

    # Pretrained sets are never needed here (and may not be downloadable): every weight comes from a file.
    return build_models_from_config(dataclasses.replace(cfg, weights="none"), n_classes)


def _run_model(model: tf_keras.Model, images: tf.Tensor):
    return model(images, training=False)


@dataclass(eq=False)
class FoldModel:
    """One trained model: image → probabilities (`predict`) and → embedding (`embed`), sharing their layers."""

    name: str  # "RUN fold K", or the weights file
    predict: tf_keras.Model
    embed: tf_keras.Model
    dim: int
    weights_sha256: str | None  # of the weights file it was loaded from
    run: RunInfo | None = None
    fold: int | None = None
    _traced: dict = field(default_factory=dict, repr=False)

    def _traced_call(self, what: str):
        # Traced once for any batch size (Keras' predict_on_batch would trace again for a smaller last batch); a
        # partial per model, so TensorFlow does not count each model's first trace as retracing of one function.
        if what not in self._traced:
            model = self.predict if what == "probabilities" else tf_keras.Model(
                self.predict.inputs, [self.predict.output, self.embed.output])
            spec = tf.TensorSpec([None, self.dim, self.dim, 3], tf.float32)
            self._traced[what] = tf.function(functools.partial(_run_model, model), input_signature=[spec])
        return self._traced[what]

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities of a batch of model inputs (float32, batch × dim × dim × 3)."""
        return self._traced_call("probabilities")(np.asarray(images, np.float32)).numpy()

    def probabilities_and_embeddings(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs, embeddings = self._traced_call("both")(np.asarray(images, np.float32))
        return probs.numpy(), embeddings.numpy()

    @property
    def embedding_size(self) -> int:
        if len(self.embed.output_shape) != 2:
            where = self.run.run_dir if self.run is not None else self.name
            raise PhotoidError(f"{where}: the model's embedding is not a vector ({self.embed.output_shape})")
        return int(self.embed.output_shape[-1])

    def signature(self) -> dict:
        if self.run is None:
            raise PhotoidError(f"{self.name}: a model loaded from a weights file alone has no run to identify it")
        return signature(self.run, self.fold)


def signature(run: RunInfo, fold: int) -> dict:
    """What identifies a run's fold model (loaded or not): its run's settings, labels and trained weights."""
    return {"run": run.name, "run_dir": str(run.run_dir.resolve()), "fold": int(fold),
            "config_sha256": config_sha256(run.config), "classes_sha256": classes_sha256(run.classes),
            "weights_sha256": weights_sha256(run.folder.best_weights(fold))}


def build_models_with_weights(cfg, n_classes: int, weights: str | os.PathLike, *, strategy=None):
    """The recipe's models (`photoid.models.factory.Models`) built with untrained weights (under `strategy`, when given),
    then every weight loaded from `weights`, any whole-model file (`backbones.WEIGHTS_SUFFIXES`), local or remote.

    The only place a model is built then loaded: training from a --weights file starts here too.
    """
    from photoid.models.factory import load_weights_file

    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        models = _build_untrained(cfg, n_classes)
    load_weights_file(models.predict, weights, n_classes)
    return models


def build_fold_model(cfg, n_classes: int, weights: str | os.PathLike, *, strategy=None, name: str | None = None,
                     run: RunInfo | None = None, fold: int | None = None) -> FoldModel:
    """A trained model to predict with: `build_models_with_weights`, with what identifies it."""
    models = build_models_with_weights(cfg, n_classes, weights, strategy=strategy)
    return FoldModel(name or str(weights), models.predict, models.embed, cfg.dim, weights_sha256(weights), run, fold)


def load_fold_models(run: RunInfo, folds: Sequence[int] | None = None, *, strategy=None) -> list[FoldModel]:
    """The chosen folds' models of a run (None: every trained fold), each with its best weights."""
    from photoid.runs.loaded import choose_folds

    chosen = choose_folds(run, None if folds is None else list(folds))
    return [build_fold_model(run.config, len(run.classes), run.folder.best_weights(fold), strategy=strategy,
                             name=f"{run.run_dir} fold {fold}", run=run, fold=fold) for fold in chosen]


def fold_weights(run_dir: str | os.PathLike, fold: int, given: str | os.PathLike | None = None):
    """The weights file fold `fold` predicts with: the run's best weights, or the `given` file (local or remote)."""
    from photoid.core import fs
    from photoid.runs.folder import RunDir

    weights = fs.as_path(given) if given else RunDir(run_dir).best_weights(fold)
    if not weights.exists():
        raise PhotoidError(f"fold {fold} has no trained weights ({weights}); run the job with 'train' first")
    return weights


# ----------------------------------------------------------------------------- predicting

EMBEDDING_VIEWS = (0, 1)  # TTA transforms whose embeddings a photo's embedding sums: identity and horizontal flip
DEFAULT_BATCH = 64


@dataclass(eq=False)
class Member:
    """One fold model, the preprocessing of its run and the TTA transforms whose probabilities it averages."""

    fold_model: FoldModel
    preprocessing: Preprocessing
    ttas: tuple[int, ...]

    @property
    def name(self) -> str:
        return self.fold_model.name

    @property
    def model(self) -> tf_keras.Model:
        return self.fold_model.predict

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities of a batch of model inputs (float32, batch × dim × dim × 3)."""
        return self.fold_model.probabilities(images)


@dataclass
class PhotoBatch:
    paths: list[str]  # the batch, in the given order
    readable: list[str]  # those that could be read; the rows of the arrays
    probabilities: np.ndarray | None  # mean over the members and their TTA transforms (float64)
    embeddings: np.ndarray | None  # each member's block normalised, the whole normalised again
    errors: dict[str, str]  # unreadable path -> why


class Predictor:
    """The members' outputs for photo files, batch by batch, each photo prepared as its member's records were.

    One input tensor per (preprocessing, TTA view) at a time is shared by every member that uses it.
    Probabilities are averaged over members × their TTA transforms, as the ensemble averages prediction files;
    embeddings (see `photoid.inference.embedder`) sum each member's EMBEDDING_VIEWS, normalise per member, and concatenate.
    """

    def __init__(self, members: Sequence[Member]):
        if not members:
            raise PhotoidError("no fold models given")
        self.members = list(members)

    @property
    def n_predictions(self) -> int:
        """How many predictions are averaged per photo (models × their TTA transforms)."""
        return sum(len(m.ttas) for m in self.members)

    def _views(self, probabilities: bool, embeddings: bool) -> dict:
        """(preprocessing, view) -> [(member index, probabilities wanted, embeddings wanted)], in member order."""
        views: dict = {}
        for i, member in enumerate(self.members):
            ttas = member.ttas if probabilities else ()
            wanted = EMBEDDING_VIEWS if embeddings else ()
            for view in sorted(set(ttas) | set(wanted)):
                views.setdefault((member.preprocessing, view), []).append((i, view in ttas, view in wanted))
        return views

    def over_photos(self, paths: Sequence[str], batch_size: int = DEFAULT_BATCH, *, probabilities: bool = True,
                    embeddings: bool = False, viewpoints: Sequence[str | None] | None = None
                    ) -> Iterator[PhotoBatch]:
        """`viewpoints`, one per photo (None: unknown), let right views be mirrored as their run's records were."""
        from photoid.core.retrieval import normalize_rows
        from photoid.runs.loaded import check_viewpoints, prepare_photos

        if batch_size < 1:
            raise PhotoidError(f"batch size must be at least 1, got {batch_size}")
        paths = [str(p) for p in paths]
        views = check_viewpoints(paths, viewpoints)
        if embeddings:
            sizes = [m.fold_model.embedding_size for m in self.members]
        for start in range(0, len(paths), batch_size):
            batch = paths[start:start + batch_size]
            prepared, errors = prepare_photos(batch, [m.preprocessing for m in self.members],
                                              [views.get(p) for p in batch])
            readable = [p for p in batch if p not in errors]
            prob_sum, features = 0.0, [0.0] * len(self.members)
            if readable:
                for (pre, view), users in self._views(probabilities, embeddings).items():
                    jpegs = prepared[pre.key]
                    batch_input = np.stack([pre.model_input(jpegs[p], view) for p in readable])
                    for i, wants_probabilities, wants_embeddings in users:
                        model = self.members[i].fold_model
                        if wants_embeddings:
                            probs, feats = model.probabilities_and_embeddings(batch_input)
                            features[i] = features[i] + feats
                        else:
                            probs = model.probabilities(batch_input)
                        if wants_probabilities:
                            prob_sum = prob_sum + probs.astype(np.float64)
            mean = prob_sum / self.n_predictions if probabilities and readable else None
            joined = None
            if embeddings:
                joined = (normalize_rows(np.concatenate([normalize_rows(f) for f in features], axis=1)) if readable
                          else np.zeros((0, sum(sizes)), np.float32))
            yield PhotoBatch(batch, readable, mean, joined, errors)


def predict_records(model: tf_keras.Model, files: list[str], *, dim: int, dim_pre: int, batch_size: int, tta: int,
                    image_inverted: bool = False) -> np.ndarray:
    """`model`'s outputs for every record in `files` (in reading order) with TTA transform `tta`, float32.

    Keras' predict runs the model under the strategy it was built in (a `FoldStack` gives every fold's outputs
    from one decoding of each batch)."""
    from photoid.records.reader import build_dataset

    ds = build_dataset(files, dim=dim, dim_pre=dim_pre, batch_size=batch_size, training=False, tta=tta,
                       image_inverted=image_inverted)
    return np.asarray(model.predict(ds.map(lambda image, label: image), verbose=0), dtype=np.float32)


def read_record_ids(files: list[str]) -> list[str]:
    """Image ids of records in reading order, without decoding images (cheap: one small feature)."""
    spec = {"image_id": tf.io.FixedLenFeature([], tf.string)}
    ds = tf.data.TFRecordDataset(files).map(lambda r: tf.io.parse_single_example(r, spec)["image_id"])
    return [x.decode("utf-8") for x in ds.as_numpy_iterator()]


class FoldStack(tf_keras.Model):
    """Every fold model's output for a batch, as one Keras model: [batch, folds, classes].

    `predict` on it reads and decodes each batch once for all folds (fold-by-fold prediction decodes the test set
    again per fold), and, being a Keras model, it runs under the run's distribution strategy as the fold models do.
    """

    def __init__(self, fold_models: list):
        super().__init__(name="fold_stack")
        self.fold_models = list(fold_models)

    def call(self, images, training=False):
        return tf.stack([model(images, training=False) for model in self.fold_models], axis=1)
