"""A catalogue without any trained model: local features, and a global descriptor learnt from them.

`photoid catalog build --data_dir D --out C` (no `--run`) reads the labelled photos of any task's folder, extracts
every photo's local features (prepared as that task's records prepare photos: Where's Whale-do's wide photos turned),
learns a vocabulary from them and describes every photo by VLAD (`photoid.local.vocabulary`). The VLAD vectors are
the catalogue's embeddings (one block, no fold models), so the catalogue's search, calibration, `identify`, `add`
and the page work on it as on any other; local matching of the shortlist (`photoid.catalog.fusion`) ranks it.

`ZeroShotEmbedder` stands where a trained catalogue has its fold models (`identify.load_catalog_embedder`): photos
in, VLAD embeddings out, no probabilities.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from photoid.catalog.local import (
    commit_with_local,
    extract_photos,
    local_settings,
    read_extra_file,
)
from photoid.catalog.store import Catalog, _now, catalog_transaction
from photoid.core.errors import PhotoidError
from photoid.local.features import Features, FeatureSet, Settings, photo_features
from photoid.local.vocabulary import CLUSTERS, PCA_DIM, Vocabulary, learn_vocabulary

VOCABULARY_KEY = "vocabulary"  # manifest entry naming the vocabulary file
ZERO_SHOT_KEY = "zero_shot"  # manifest entry: the task and the global descriptor's settings


def is_zero_shot(catalog: Catalog) -> bool:
    return bool(catalog.manifest.get(ZERO_SHOT_KEY))


def catalogue_task(catalog: Catalog, embedder=None) -> str:
    """The task of a catalogue's photos: its runs' (through `embedder`), or the one recorded by a zero-shot build."""
    if is_zero_shot(catalog):
        return catalog.manifest[ZERO_SHOT_KEY]["task"]
    return embedder.members[0][0].config.task


def task_settings(task) -> Settings:
    """Features prepared as the task's records prepare photos by default (whale records turn wide photos)."""
    options = task.record_options
    return Settings(rotate_wide=bool(options.get("rotate_wide", False)),
                    mirror_right=bool(options.get("mirror_right", False)))


def build_zero_shot_catalog(data_dir: str | Path, out: str | Path, *, force: bool = False, task: str | None = None,
                            clusters: int = CLUSTERS, pca_dim: int = PCA_DIM, settings: Settings | None = None
                            ) -> Catalog:
    """A catalogue of every labelled photo of `data_dir` (its task found from its files, or `task`), with local
    features and VLAD embeddings learnt from them: no trained model."""
    from photoid.catalog.build import _check_build_target
    from photoid.tasks import detect_task, get_task

    out = Path(out)
    _check_build_target(out, force)
    found = get_task(task) if task else detect_task(data_dir)
    table = found.labelled_photos(data_dir)
    settings = settings or task_settings(found)
    started = time.time()
    viewpoints = table["viewpoint"].tolist() if "viewpoint" in table.columns else None
    photos = extract_photos(table["path"].tolist(), settings, viewpoints)
    extracted = time.time() - started
    vocabulary = learn_vocabulary(photos, clusters=clusters, pca_dim=pca_dim)
    embeddings = vocabulary.describe(photos)
    features = FeatureSet.pack(table["image_id"].tolist(), photos)
    manifest = {
        "created": _now(), "data_dir": str(Path(data_dir).resolve()), "models": [], "runs": [],
        ZERO_SHOT_KEY: {"task": found.name, "global_descriptor": "vlad", "clusters": int(vocabulary.words.shape[0]),
                        "pca_dim": int(vocabulary.dim if vocabulary.components.size else 0)},
        "seconds_to_build": round(time.time() - started, 1), "calibration": None,
    }
    with catalog_transaction(out, waiting_message=f"to build a zero-shot catalogue of {len(table)} photos") as tx:
        _check_build_target(out, force)
        return commit_with_local(tx, manifest, table, embeddings, features, settings, extracted,
                                 extra_files={VOCABULARY_KEY: vocabulary.to_bytes()})


class ZeroShotEmbedder:
    """A zero-shot catalogue's photos → VLAD embeddings (and their local features), as `Embedder` gives
    embeddings: the same `batches` and `embed_all`; no classifier, so no probabilities."""

    members: list = []
    classes: list[str] = []

    def __init__(self, catalog: Catalog):
        self.task = catalogue_task(catalog)
        self.settings = local_settings(catalog)
        self.vocabulary = Vocabulary.from_bytes(read_extra_file(catalog, VOCABULARY_KEY))
        self.mirrors_right = self.settings.mirror_right
        self.last_features: dict[str, Features] = {}  # the latest batch's features, for local matching

    @property
    def dim(self) -> int:
        return self.vocabulary.dim

    def signatures(self) -> list[dict]:
        return []

    def batches(self, paths: Sequence[str], batch_size: int = 64, probabilities: bool = False,
                viewpoints: Sequence[str | None] | None = None) -> Iterator:
        """Per batch: (its paths, the readable ones, their embeddings, None, {unreadable path: why})."""
        for begin in range(0, len(paths), batch_size):
            batch = list(paths[begin:begin + batch_size])
            views = list(viewpoints[begin:begin + batch_size]) if viewpoints is not None else [None] * len(batch)
            readable, features, errors = [], [], {}
            for path, view in zip(batch, views):
                try:
                    f = photo_features(path, self.settings, view)
                except PhotoidError as err:
                    errors[path] = str(err).removeprefix(f"{path}: ")
                    continue
                readable.append(path)
                features.append(f)
            self.last_features = dict(zip(readable, features))
            embeddings = self.vocabulary.describe(features) if features else np.zeros((0, self.dim), np.float32)
            yield batch, readable, embeddings, None, errors

    def embed_all(self, paths: Sequence[str], batch_size: int = 64,
                  viewpoints: Sequence[str | None] | None = None) -> np.ndarray:
        return self.describe(extract_photos(list(paths), self.settings, viewpoints))

    def describe(self, features: list[Features]) -> np.ndarray:
        return self.vocabulary.describe(features)
