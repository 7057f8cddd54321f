"""Fold models as an embedder: photo files → catalogue embeddings (and the classifier's probabilities).

A photo's embedding comes from every chosen fold model: each model's pooled features (the `embed` output of
`photoid.model.build_models`), averaged over the photo and its horizontal flip (the Where's Whale-do winner's TTA)
and L2-normalised; the models' vectors are then concatenated and the whole re-normalised, so each model's block is
its own unit vector scaled by 1/sqrt(models) and the cosine of two photos is the mean of the models' cosines.
Separately trained fold models do not share feature axes, which is why their vectors are concatenated, not added.

Each model is identified by its run's settings, labels and the sha256 of its weights (`signature`), so a catalogue
can refuse photos embedded by any other model.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from typing import Iterator, Sequence

import numpy as np

import photoid  # noqa: F401  (selects tf-keras before TensorFlow is imported)
import tensorflow as tf
import tf_keras

from photoid.io import file_sha256
from photoid.labels import classes_sha256
from photoid.errors import PhotoidError, ProblemList
from photoid.model import build_models_from_config, load_weights_file
from photoid.runs import RunInfo, check_same_labels, prepare_photos
from photoid.retrieval import normalize_rows

EMBEDDING_VIEWS = (0, 1)  # TTA transforms averaged per photo: identity and horizontal flip
# The settings that decide what a model's embedding means; the weights' sha256 pins the trained values.
MODEL_FIELDS = ("task", "backbone", "dim", "dim_pre", "pooling", "head", "embedding_size")
IDENTITY_KEYS = ("fold", "config_sha256", "classes_sha256", "weights_sha256")
DEFAULT_BATCH = 64


def config_sha256(config) -> str:
    """Fingerprint of the settings that decide what a model's embedding means (not paths or job words)."""
    values = {name: getattr(config, name) for name in MODEL_FIELDS}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode("utf-8")).hexdigest()


def signature(run: RunInfo, fold: int) -> dict:
    """What identifies one fold model: its run's settings, labels and trained weights."""
    return {"run": run.name, "run_dir": str(run.run_dir.resolve()), "fold": int(fold),
            "config_sha256": config_sha256(run.config), "classes_sha256": classes_sha256(run.classes),
            "weights_sha256": file_sha256(run.folder.best_weights(fold))}


def check_same_models(expected: list[dict], given: list[dict], what: str) -> None:
    """Refuse models other than `expected` (signatures): their embeddings are not comparable."""
    def describe(models):
        return ", ".join(f"{m['run']} fold {m['fold']}" for m in models)

    if len(expected) != len(given):
        raise PhotoidError(f"{what} was made by {len(expected)} model(s) ({describe(expected)}), not by the "
                           f"{len(given)} given ({describe(given)})")
    for ours, theirs in zip(expected, given):
        differ = [key for key in IDENTITY_KEYS if ours[key] != theirs[key]]
        if differ:
            raise PhotoidError(
                f"{what} was made by {ours['run']} fold {ours['fold']} ({ours['run_dir']}), but the model given in "
                f"its place ({theirs['run_dir']} fold {theirs['fold']}) differs in {', '.join(differ)}: their "
                "embeddings are not comparable. Use the same runs, or rebuild with photoid catalog build")


def _inference(model: tf_keras.Model, images: tf.Tensor):
    return model(images, training=False)


class Embedder:
    """Fold models of runs trained on the same labels, each loaded once with its best weights.

    Probabilities are averaged over models and each run's own TTA transforms (0..tta_number), as `identify`
    averages them; embeddings over EMBEDDING_VIEWS. Each photo is prepared exactly as its run's records were.
    """

    def __init__(self, members: Sequence[tuple[RunInfo, int]]):
        if not members:
            raise PhotoidError("no fold models given")
        runs = list({id(run): run for run, _ in members}.values())
        check_same_labels(runs)
        self.members, self.classes = list(members), runs[0].classes
        self._forward, self._dims = [], []
        for run, fold in self.members:
            if fold not in run.folds:
                raise PhotoidError(f"{run.run_dir}: fold {fold} has not finished training; trained: {run.folds}")
            # Every weight comes from the fold's file: a named pretrained set is never needed (nor downloadable).
            models = build_models_from_config(dataclasses.replace(run.config, weights="none"), len(run.classes))
            load_weights_file(models.predict, run.folder.best_weights(fold), len(run.classes))
            if len(models.embed.output_shape) != 2:
                raise PhotoidError(f"{run.run_dir}: the model's embedding is not a vector "
                                   f"({models.embed.output_shape})")
            joint = tf_keras.Model(models.predict.inputs, [models.predict.output, models.embed.output])
            # Traced once for any batch size (a smaller last batch would otherwise trace again).
            spec = tf.TensorSpec([None, run.config.dim, run.config.dim, 3], tf.float32)
            # A partial per model, so TensorFlow does not count the models' first traces as retracing of one function.
            self._forward.append(tf.function(functools.partial(_inference, joint), input_signature=[spec]))
            self._dims.append(int(models.embed.output_shape[-1]))

    @property
    def dim(self) -> int:
        return sum(self._dims)

    def signatures(self) -> list[dict]:
        """Each model's `signature` with the columns its block occupies (`offset`, `dim`)."""
        offsets = np.cumsum([0, *self._dims])
        return [{**signature(run, fold), "offset": int(offset), "dim": dim}
                for (run, fold), offset, dim in zip(self.members, offsets, self._dims)]

    def _views(self, probabilities: bool) -> dict:
        """(preprocessing, TTA view) -> [(model index, whether its probabilities are averaged)]."""
        views: dict = {}
        for i, (run, _) in enumerate(self.members):
            ttas = range(run.config.tta_number + 1) if probabilities else range(0)
            for view in sorted(set(EMBEDDING_VIEWS) | set(ttas)):
                views.setdefault((run.preprocessing, view), []).append((i, view in ttas))
        return views

    def batches(self, paths: Sequence[str], batch_size: int = DEFAULT_BATCH, probabilities: bool = False
                ) -> Iterator[tuple[list[str], list[str], np.ndarray, np.ndarray | None, dict[str, str]]]:
        """Per batch: (its paths, the readable ones, their embeddings, their mean probabilities or None,
        {unreadable path: why})."""
        if batch_size < 1:
            raise PhotoidError(f"batch size must be at least 1, got {batch_size}")
        paths = [str(p) for p in paths]
        for start in range(0, len(paths), batch_size):
            batch = paths[start:start + batch_size]
            prepared, errors = prepare_photos(batch, [run.preprocessing for run, _ in self.members])
            readable = [p for p in batch if p not in errors]
            if not readable:
                yield batch, [], np.zeros((0, self.dim), np.float32), None, errors
                continue
            # One input tensor per (preprocessing, view) at a time, shared by every model that uses it.
            features: list = [0.0] * len(self.members)
            prob_sum, n_probs = 0.0, 0
            for (pre, view), users in self._views(probabilities).items():
                jpegs = prepared[pre.key]
                batch_input = np.stack([pre.model_input(jpegs[p], view) for p in readable])
                for i, wants_probabilities in users:
                    probs, feats = (t.numpy() for t in self._forward[i](batch_input))
                    if view in EMBEDDING_VIEWS:
                        features[i] = features[i] + feats
                    if wants_probabilities:
                        prob_sum, n_probs = prob_sum + probs.astype(np.float64), n_probs + 1
            blocks = [normalize_rows(f) for f in features]
            embeddings = normalize_rows(np.concatenate(blocks, axis=1))
            yield batch, readable, embeddings, (prob_sum / n_probs if probabilities else None), errors

    def embed_all(self, paths: Sequence[str], batch_size: int = DEFAULT_BATCH) -> np.ndarray:
        """Embeddings of every photo in order; an unreadable photo is an error listing all of them."""
        parts, problems = [], ProblemList()
        for _, _, embeddings, _, errors in self.batches(paths, batch_size):
            parts.append(embeddings)
            for path, reason in errors.items():
                problems.add(path, None, reason)
        problems.raise_if_any(title="photos that cannot be read")
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)
