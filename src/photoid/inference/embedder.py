"""Fold models as an embedder: photo files → catalogue embeddings (and the classifier's probabilities).

A photo's embedding comes from every chosen fold model: each model's pooled features (the `embed` output of
`photoid.models.factory.build_models`), averaged over the photo and its horizontal flip (the Where's Whale-do winner's TTA)
and L2-normalised; the models' vectors are then concatenated and the whole re-normalised, so each model's block is
its own unit vector scaled by 1/sqrt(models) and the cosine of two photos is the mean of the models' cosines.
Separately trained fold models do not share feature axes, which is why their vectors are concatenated, not added.

Each model is identified by its run's settings, labels and the sha256 of its weights (`signature`), so a catalogue
can refuse photos embedded by any other model.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from photoid.core.errors import PhotoidError, ProblemList
from photoid.inference.fold_models import Member, Predictor, load_fold_models, signature
from photoid.runs.loaded import RunInfo, check_same_labels

IDENTITY_KEYS = ("fold", "config_sha256", "classes_sha256", "weights_sha256")
DEFAULT_BATCH = 64


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
        # Probabilities averaged over each run's own TTA transforms, as `identify` averages them.
        self.predictor = Predictor([Member(load_fold_models(run, [fold])[0], run.preprocessing,
                                           tuple(range(run.config.tta_number + 1))) for run, fold in self.members])
        self._dims = [m.fold_model.embedding_size for m in self.predictor.members]

    @property
    def mirrors_right(self) -> bool:
        """Whether any model's records stored right views mirrored (a photo's viewpoint then matters)."""
        return any(m.preprocessing.mirror_right for m in self.predictor.members)

    @property
    def dim(self) -> int:
        return sum(self._dims)

    def signatures(self) -> list[dict]:
        """Each model's `signature` with the columns its block occupies (`offset`, `dim`)."""
        offsets = np.cumsum([0, *self._dims])
        return [{**signature(run, fold), "offset": int(offset), "dim": dim}
                for (run, fold), offset, dim in zip(self.members, offsets, self._dims)]

    def batches(self, paths: Sequence[str], batch_size: int = DEFAULT_BATCH, probabilities: bool = False,
                viewpoints: Sequence[str | None] | None = None
                ) -> Iterator[tuple[list[str], list[str], np.ndarray, np.ndarray | None, dict[str, str]]]:
        """Per batch: (its paths, the readable ones, their embeddings, their mean probabilities or None,
        {unreadable path: why}). `viewpoints`: one per photo (None: unknown), see `Predictor.over_photos`."""
        for batch in self.predictor.over_photos(paths, batch_size, probabilities=probabilities, embeddings=True,
                                                viewpoints=viewpoints):
            yield batch.paths, batch.readable, batch.embeddings, batch.probabilities, batch.errors

    def embed_all(self, paths: Sequence[str], batch_size: int = DEFAULT_BATCH,
                  viewpoints: Sequence[str | None] | None = None) -> np.ndarray:
        """Embeddings of every photo in order; an unreadable photo is an error listing all of them."""
        parts, problems = [], ProblemList()
        for _, _, embeddings, _, errors in self.batches(paths, batch_size, viewpoints=viewpoints):
            parts.append(embeddings)
            for path, reason in errors.items():
                problems.add(path, None, reason)
        problems.raise_if_any(title="photos that cannot be read")
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)
