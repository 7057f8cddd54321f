"""A catalogue's local features: extracted once per photo, kept beside its embeddings, read back memory-mapped.

Files (new in the catalogue folder; a catalogue without them still loads, and says how to add them):

    local-GGGGG.npz            image ids, keypoint offsets, keypoint coordinates (float16), prepared photo sizes
    local-GGGGG.npy            uint8 (keypoints, 128): the SIFT descriptors, memory-mapped when read

The manifest's `local_features` entry names both files with their sha256, the extraction settings
(`photoid.local.features.Settings`: extractor, working size, keypoint cap, and the run's turning and mirroring) and
the counts. Features are keyed by image id, not by table row, so a writer that changes the table without
extracting features (a decision on the page, an undo) leaves them valid: a photo without features scores 0 locally,
with a note saying how to add them. They are written by `write_local_files` inside the same locked transaction
that commits the embeddings (`commit_with_local`), so a catalogue's manifest names features and embeddings of one
generation or of the one before, never half of each.
"""

from __future__ import annotations

import hashlib
import io
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from photoid.catalog.store import MANIFEST, Catalog, Transaction
from photoid.core import io as pio
from photoid.core.errors import PhotoidError, ProblemList
from photoid.local.features import FeatureSet, Features, Settings, photo_features

LOCAL_KEY = "local_features"
LOCAL_PATTERNS = ("local-*.npz", "local-*.npy")
HOW_TO_ADD = ("add them with: photoid catalog build --local --out {path} (the photos, embeddings and decisions stay; "
              "then run photoid calibrate again)")
PROGRESS_EVERY_S = 30.0


def has_local_features(catalog: Catalog) -> bool:
    return bool(catalog.manifest.get(LOCAL_KEY))


def require_local_features(catalog: Catalog, asked: str) -> None:
    """Refuse `asked` (explanations, fusion) on a catalogue without local features, saying how to add them."""
    if not has_local_features(catalog):
        raise PhotoidError(f"catalogue {catalog.path} has no local features, which {asked} needs; "
                           + HOW_TO_ADD.format(path=catalog.path))


def local_settings(catalog: Catalog) -> Settings:
    return Settings.from_json(catalog.manifest[LOCAL_KEY]["settings"])


def settings_for_runs(runs) -> Settings:
    """Extraction settings for a catalogue made by trained runs: turned and mirrored as their records were."""
    return Settings(rotate_wide=any(r.preprocessing.rotate_wide for r in runs),
                    mirror_right=any(r.preprocessing.mirror_right for r in runs))


# ----------------------------------------------------------------------------- extraction


def extract_photos(paths: Sequence[str], settings: Settings, viewpoints: Sequence[str | None] | None = None,
                   what: str = "photos") -> list[Features]:
    """Every photo's features, in order; an unreadable photo is an error listing all of them. A photo with too few
    keypoints is kept (it scores 0 locally); progress goes to stderr on long runs."""
    features, problems = [], ProblemList()
    started = last_note = time.monotonic()
    for i, path in enumerate(paths):
        try:
            features.append(photo_features(path, settings, viewpoints[i] if viewpoints is not None else None))
        except PhotoidError as err:
            problems.add(str(path), None, str(err).removeprefix(f"{path}: "))
        if time.monotonic() - last_note > PROGRESS_EVERY_S:
            last_note = time.monotonic()
            print(f"local features: {i + 1} of {len(paths)} {what} in {last_note - started:.0f}s", file=sys.stderr,
                  flush=True)
    problems.raise_if_any(title="photos whose local features cannot be extracted")
    return features


def table_features(table: pd.DataFrame, settings: Settings) -> FeatureSet:
    """The features of every photo of a catalogue table (viewpoints from its viewpoint column)."""
    viewpoints = table["viewpoint"].tolist() if "viewpoint" in table.columns else None
    return FeatureSet.pack(table["image_id"].tolist(), extract_photos(table["path"].tolist(), settings, viewpoints))


# ----------------------------------------------------------------------------- files


def write_local_files(path: Path, generation: int, features: FeatureSet, settings: Settings,
                      seconds: float | None = None) -> dict:
    """Write the two files of `features` for `generation` (atomically each); returns the manifest entry."""
    import cv2

    names = {"index": f"local-{generation:05d}.npz", "descriptors": f"local-{generation:05d}.npy"}
    buffer = io.BytesIO()
    np.savez(buffer, image_ids=features.image_ids.astype(str), offsets=features.offsets.astype(np.int64),
             xy=features.xy.astype(np.float16), sizes=features.sizes.astype(np.int32))
    with pio.atomic_path(path / names["index"], suffix=".npz") as tmp:
        Path(tmp).write_bytes(buffer.getvalue())
    pio.save_npy(path / names["descriptors"], np.ascontiguousarray(features.descriptors, dtype=np.uint8))
    counts = features.counts()
    return {
        **{key: {"name": name, "sha256": pio.file_sha256(path / name)} for key, name in names.items()},
        "settings": settings.to_json(), "opencv": cv2.__version__, "photos": int(len(features)),
        "keypoints": int(counts.sum()), "keypoints_per_photo": round(float(counts.mean()), 1) if len(counts) else 0.0,
        "photos_too_few_keypoints": int((counts < 8).sum()),
        "bytes_per_photo": round(features.bytes_per_photo, 1),
        **({"seconds_to_extract": round(seconds, 1)} if seconds is not None else {}),
    }


def commit_with_local(tx: Transaction, manifest: dict, table: pd.DataFrame, embeddings: np.ndarray,
                      features: FeatureSet | None, settings: Settings | None, seconds: float | None = None,
                      extra_files: dict[str, bytes] | None = None) -> Catalog:
    """`tx.commit` of the next generation with its local features (and `extra_files`: manifest key -> bytes, each
    written as KEY-GGGGG.npz and named in the manifest), all in the one manifest replacement that commits it.

    `features` None: the catalogue keeps none (its manifest entry is dropped). Files of earlier generations, and of
    writers killed before their commit, are removed once the new manifest is in place.
    """
    return write_local_then_commit(tx, manifest, features, settings,
                                   lambda next_manifest: tx.commit(next_manifest, table, embeddings), seconds,
                                   extra_files)


def append_with_local(tx: Transaction, rows: pd.DataFrame, embeddings: np.ndarray, features: FeatureSet,
                      settings: Settings) -> Catalog:
    """`tx.append` of photos (`rows`, `embeddings`) with the catalogue's local features (`features`: every photo's,
    the new ones included) in the same commit; the other parts' data files stay as they are."""
    return write_local_then_commit(tx, tx.catalog.manifest, features, settings,
                                   lambda next_manifest: tx.append(rows, embeddings,
                                                                   **{LOCAL_KEY: next_manifest[LOCAL_KEY]}))


def write_local_then_commit(tx: Transaction, manifest: dict, features: FeatureSet | None, settings: Settings | None,
                            commit, seconds: float | None = None, extra_files: dict[str, bytes] | None = None
                            ) -> Catalog:
    """Write the local-feature (and extra) files of the next generation, then `commit(manifest naming them)`, the
    transaction's commit of its data (`tx.commit`, `tx.append`, `tx.commit_parts`); the files are removed if it
    fails."""
    generation = int((tx.manifest or {}).get("generation", 0)) + 1
    written: list[Path] = []
    manifest = {k: v for k, v in manifest.items() if k != LOCAL_KEY}
    try:
        if features is not None:
            entry = write_local_files(tx.path, generation, features, settings, seconds)
            written += [tx.path / entry[key]["name"] for key in ("index", "descriptors")]
            manifest[LOCAL_KEY] = entry
        for key, data in (extra_files or {}).items():
            name = f"{key}-{generation:05d}.npz"
            with pio.atomic_path(tx.path / name, suffix=".npz") as tmp:
                Path(tmp).write_bytes(data)
            written.append(tx.path / name)
            manifest[key] = {**manifest.get(key, {}), "name": name, "sha256": hashlib.sha256(data).hexdigest()}
        committed = commit(manifest)
    except BaseException:
        for file in written:  # not committed: the manifest still names the previous files
            file.unlink(missing_ok=True)
        raise
    remove_unlisted_local(tx.path, committed.manifest)
    return committed


def listed_local_files(manifest: dict) -> set[str]:
    entry = manifest.get(LOCAL_KEY) or {}
    names = {entry[key]["name"] for key in ("index", "descriptors") if key in entry}
    names |= {v["name"] for v in manifest.values() if isinstance(v, dict) and "name" in v and "sha256" in v}
    return names


def remove_unlisted_local(path: Path, manifest: dict) -> None:
    """Local-feature and vocabulary files the manifest does not name (only the lock's holder calls this)."""
    keep = listed_local_files(manifest)
    for pattern in (*LOCAL_PATTERNS, "vocabulary-*.npz"):
        for old in path.glob(pattern):
            if old.name not in keep:
                old.unlink(missing_ok=True)


_CACHE: dict[tuple, FeatureSet] = {}


def read_local_features(catalog: Catalog) -> FeatureSet | None:
    """The catalogue's local features (None when it has none), descriptors memory-mapped; each file's sha256 is
    checked against the manifest once per process."""
    entry = catalog.manifest.get(LOCAL_KEY)
    if not entry:
        return None
    key = (str(catalog.path), entry["index"]["sha256"], entry["descriptors"]["sha256"])
    if key in _CACHE:
        return _CACHE[key]
    try:
        raw = (catalog.path / entry["index"]["name"]).read_bytes()
        descriptors_path = catalog.path / entry["descriptors"]["name"]
        if hashlib.sha256(raw).hexdigest() != entry["index"]["sha256"] or \
                pio.file_sha256(descriptors_path) != entry["descriptors"]["sha256"]:
            raise PhotoidError(f"{catalog.path}: its local feature files differ from what {MANIFEST} recorded "
                               "(sha256); they were changed outside photoid: " + HOW_TO_ADD.format(path=catalog.path))
        with np.load(io.BytesIO(raw), allow_pickle=False) as arrays:
            index = {name: arrays[name] for name in ("image_ids", "offsets", "xy", "sizes")}
        descriptors = np.load(descriptors_path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError as missing:
        raise PhotoidError(f"{catalog.path}: {Path(missing.filename).name}, listed in {MANIFEST}, is missing (or the "
                           "catalogue changed while it was read: try again)") from None
    except (ValueError, EOFError, KeyError) as err:
        raise PhotoidError(f"{catalog.path}: its local feature files cannot be read ({err})") from None
    if descriptors.shape != (int(index["offsets"][-1]), 128) or len(index["offsets"]) != len(index["image_ids"]) + 1:
        raise PhotoidError(f"{catalog.path}: its local feature files disagree with each other; "
                           + HOW_TO_ADD.format(path=catalog.path))
    features = FeatureSet(index["image_ids"], index["offsets"], index["xy"], descriptors, index["sizes"])
    _CACHE.clear()  # one catalogue's features at a time (a page re-reads its catalogue when it changes)
    _CACHE[key] = features
    return features


def read_extra_file(catalog: Catalog, key: str) -> bytes:
    """A file named by manifest entry `key` (e.g. the zero-shot vocabulary), checked against its sha256."""
    entry = catalog.manifest[key]
    try:
        raw = (catalog.path / entry["name"]).read_bytes()
    except FileNotFoundError:
        raise PhotoidError(f"{catalog.path}: {entry['name']}, listed in {MANIFEST}, is missing") from None
    if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
        raise PhotoidError(f"{catalog.path / entry['name']}: its content differs from what {MANIFEST} recorded "
                           "(sha256); rebuild the catalogue")
    return raw
