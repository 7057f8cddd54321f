"""TFRecord files: a resumable sharded writer, and the options every record-building command shares (readers parse
the records with `photoid.records.reader.feature_spec`; `photoid.records.folder.RecordsDir` reads the folder; each
task's records builder, e.g. `photoid.turtles.records`, decides the rows and the folds).

Layout of a records folder (the original's, plus two files that make it self-describing):

    fold.K.tfrecord-SSSSS-of-NNNNN   rows of fold K, in the order of fold K's rows in folds.csv
    test.tfrecord-SSSSS-of-NNNNN     test rows (label_id "" and label -1)
    folds.csv                        the fold of every labelled image
    records.json                     settings, and every shard's row count, sha256 and input fingerprint

Decoding and resizing photos is the expensive part, so workers do only that (`prepare_image_bytes`: TensorFlow's
own decode and resize in threads for the exact layout, Pillow in worker processes for the compact one); the parent
serialises the examples and writes them in order. TensorFlow is imported inside the functions that need it, never
at module level: spawned workers import this module and must stay light.

Each shard is written under a temporary name and renamed when complete, and listed in records.json only then. A
rerun with the same settings keeps every shard whose inputs and bytes still match and rewrites the others, so an
interrupted run resumes where it stopped and a repeated run gives byte-identical files. The folder may be a URL
(gs://..., where a TPU reads its records): it is written through TensorFlow's file system (`photoid.core.fs`).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from PIL import Image, UnidentifiedImageError

from photoid.core import fs
from photoid.core.errors import PhotoidError
from photoid.core.images import jpeg_stream_end
from photoid.core.io import atomic_path, file_sha256, read_json, write_json
from photoid.core.threads import available_cores
from photoid.records.folder import (
    IMAGE_FEATURE,
    LAYOUTS,
    MANIFEST_NAME,
    SHARD_PATTERN,
    shard_name,
)

if TYPE_CHECKING:
    import pandas as pd

JPEG_QUALITY = 95
# How a record stores its photo (see `prepare_image_bytes`), for each of recordsdir.LAYOUTS (the first is the default).
LAYOUT_CONTENTS = {
    "exact": ("the uint8 {size} x {size} x 3 image that decode_jpeg(INTEGER_ACCURATE) -> bilinear resize -> cast "
              "to uint8 makes of the JPEG file, as tf.io.serialize_tensor bytes"),
    "compact": ("decoded, resized to {size} x {size} (bilinear, RGB), re-encoded as JPEG quality 95 without chroma "
                "subsampling"),
    "original": "the JPEG file as it is",
}
DEFAULT_LAYOUT = LAYOUTS[0]


def check_layout_size(layout: str, records_dim_pre: int, dim_pre: int, records_dir: str | os.PathLike) -> None:
    """Records of the exact layout hold images of their own dim_pre: a reader at another size is refused.

    (Resizing them again would not give what the original's reader makes from the photo at that size.)
    """
    if layout == "exact" and records_dim_pre != dim_pre:
        raise PhotoidError(
            f"the records in {records_dir} hold each photo as the original's reader made it at dim_pre "
            f"{records_dim_pre}, but dim_pre is {dim_pre} here: use --dim_pre {records_dim_pre}, or build records "
            f"at {dim_pre} (photoid tfrecords --dim_pre {dim_pre}, or --layout original for any size)")


def prepare_image_bytes(path: str | os.PathLike, dim_pre: int, layout: str = DEFAULT_LAYOUT,
                        mirror: bool = False, rotate_wide: bool = False) -> bytes:
    """The image bytes stored in a record for the photo at `path`, in one of the `LAYOUTS`.

    `exact`: the uint8 dim_pre x dim_pre x 3 tensor that the original's reader made from the photo's bytes before
    augmentation (`photoid.records.reader.decode_and_resize`), serialised losslessly (`tf.io.serialize_tensor`): the
    reader gets the original's pixels without decoding the full-size photo again every epoch.
    `original`: the file's bytes as they are (the original solution's records).
    `compact`: decoded by Pillow (`draft` lets libjpeg shrink large photos while decoding), converted to RGB,
    resized to exactly `dim_pre` x `dim_pre` (bilinear, antialiased) and re-encoded as JPEG quality 95, 4:4:4.
    The bytes depend only on the file and the settings.

    `mirror` flips the photo left to right (Where's Whale-do: right views stored as if seen from the left). A
    mirrored photo cannot keep its file's bytes: with `original` it is decoded, flipped and re-encoded at its
    own size (quality 95, 4:4:4), so only the flip and one JPEG round trip change it.

    `rotate_wide` turns a photo wider than tall 90° clockwise before anything else but the mirror (Where's Whale-do:
    the winner stood every lateral photo upright so, in training and at inference, for every model).

    Single-image identification calls this same function, so a photo identified on its own reaches the model as
    the same tensor as it did in the records. EXIF orientation is ignored, as TensorFlow's JPEG decoder ignores it.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout != "original" and dim_pre < 1:
        raise ValueError(f"dim_pre must be a positive number of pixels, got {dim_pre}")
    with open(path, "rb") as f:
        data = f.read()
    if layout in ("original", "exact") and not data.startswith(b"\xff\xd8"):
        raise PhotoidError(f"{path}: not a JPEG file; the {layout} layout reads photos as the original's reader did, "
                           "which takes JPEGs only (--layout compact converts other images)")
    if layout == "exact":
        if rotate_wide:
            raise ValueError("rotate_wide is a Where's Whale-do preparation; the exact layout is the Turtle Recall "
                             "reader's (use compact or original)")
        return _exact_tensor_bytes(path, data, dim_pre, mirror)
    if layout == "original":
        try:  # a phone's trailer (motion-photo video) after the JPEG stream is no part of the photo
            data = data[:jpeg_stream_end(data)]
        except ValueError as err:
            raise PhotoidError(f"{path}: JPEG is truncated or damaged: {err}") from None
        if not mirror and not rotate_wide:
            return data
    try:
        with Image.open(io.BytesIO(data)) as image:
            wide = rotate_wide and image.width > image.height
            if layout == "original" and not mirror and not wide:  # a tall photo: nothing to change
                return data
            if layout != "original":
                image.draft("RGB", (dim_pre, dim_pre))
            prepared = image.convert("RGB")
            if wide:   # PIL's ROTATE_270 turns counter-clockwise by 270°, i.e. 90° clockwise
                if mirror:
                    prepared = prepared.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                prepared = prepared.transpose(Image.Transpose.ROTATE_270)
            if layout != "original":  # (original reaches here only to mirror or rotate: its own size)
                prepared = prepared.resize((dim_pre, dim_pre), Image.Resampling.BILINEAR)
            if mirror and not wide:
                prepared = prepared.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    except (UnidentifiedImageError, OSError) as err:
        raise PhotoidError(f"{path}: cannot be read as an image ({err})") from err
    out = io.BytesIO()
    # 4:4:4 (no chroma subsampling): the image is already at model scale, where halving the colour resolution
    # would blur colour detail the model sees. It costs bytes (1.6x on noisy synthetic photos), not time.
    prepared.save(out, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return out.getvalue()


def _exact_tensor_bytes(path: str | os.PathLike, data: bytes, dim_pre: int, mirror: bool) -> bytes:
    import tensorflow as tf

    from photoid.records.reader import compiled_decode_and_resize

    try:
        image = compiled_decode_and_resize(dim_pre)(tf.constant(data))
    except tf.errors.OpError as err:
        raise PhotoidError(f"{path}: cannot be decoded as a JPEG ({err.message.splitlines()[0]})") from None
    if mirror:
        image = tf.image.flip_left_right(image)
    return tf.io.serialize_tensor(image).numpy()


def _prepare_job(job: tuple[str, int, str, bool, bool]) -> bytes:
    return prepare_image_bytes(*job)


class RecordsManifest:
    """records.json: the settings a folder was written with and each complete shard's rows, sha256 and inputs.

    `open` refuses a folder written with other settings (or holding records it does not describe) unless `force`,
    which deletes those records first so old and new shards can never be read together.
    """

    def __init__(self, out_dir: str, settings: dict, shards: dict[str, dict], classes: list[str] | None = None):
        self.out_dir = out_dir
        self.settings = settings
        self.shards = shards
        self.classes = classes

    @classmethod
    def open(cls, out_dir: str | os.PathLike, settings: dict, force: bool = False,
             classes: list[str] | None = None) -> "RecordsManifest":
        """`classes`: the label space the records' labels index, where it holds more than their individuals (Where's
        Whale-do: every whale of the metadata, as the winner's 788 classes)."""
        out_dir = str(out_dir).rstrip("/")
        fs.makedirs(out_dir)
        path = fs.join(out_dir, MANIFEST_NAME)
        existing = _record_files(out_dir)
        old = read_json(path) if fs.exists(path) else None
        settings = json.loads(json.dumps(settings))  # as it will read back from JSON
        if old is not None and old.get("settings") == settings:
            shards = {name: entry for name, entry in old.get("shards", {}).items() if name in existing}
        elif existing:
            if not force:
                was = f"with {old.get('settings')}" if old is not None else f"without a {MANIFEST_NAME}"
                raise PhotoidError(f"{out_dir} holds TFRecords written {was}; this run asks for {settings}. "
                                   "Use --force to replace them, or choose another --out_dir")
            for name in existing:
                fs.remove(fs.join(out_dir, name))
            shards = {}
        else:
            shards = {}
        for leftover in _leftovers(out_dir):
            fs.remove(leftover)  # a killed run's unfinished shard: never complete, never read
        manifest = cls(out_dir, settings, shards, classes)
        manifest.save()
        return manifest

    def save(self) -> None:
        content = {"settings": self.settings, "shards": self.shards}
        if self.classes is not None:
            content["classes"] = list(self.classes)
        write_json(fs.join(self.out_dir, MANIFEST_NAME), content)

    def is_complete(self, name: str, inputs: str) -> bool:
        """Whether shard `name` exists, was written from these inputs and still has the bytes it was written with."""
        entry = self.shards.get(name)
        path = fs.join(self.out_dir, name)
        return (entry is not None and entry["inputs"] == inputs and fs.exists(path)
                and file_sha256(path) == entry["sha256"])

    def add(self, name: str, rows: int, inputs: str) -> None:
        self.shards[name] = {"rows": rows, "sha256": file_sha256(fs.join(self.out_dir, name)),
                             "inputs": inputs}
        self.save()


def _record_files(out_dir: str) -> set[str]:
    return {name for name in fs.listdir(out_dir) if SHARD_PATTERN.match(name)}


def _leftovers(out_dir: str) -> list[str]:
    """Unfinished shards of a killed run (`atomic_path`'s temporary names)."""
    return [fs.join(out_dir, name) for name in fs.listdir(out_dir)
            if name.startswith(".") and ".tfrecord-" in name and name.endswith(".tmp")]


def _row_values(rows: "pd.DataFrame", string_columns: Sequence[str], int_columns: Sequence[str]) -> list[tuple]:
    missing = [c for c in (*string_columns, *int_columns) if c not in rows.columns]
    if missing:
        raise ValueError(f"rows lack the record columns {missing}")
    values = []
    for line, record in enumerate(rows[[*string_columns, *int_columns]].itertuples(index=False, name=None)):
        strings, ints = record[:len(string_columns)], record[len(string_columns):]
        for name, value in zip(string_columns, strings):
            if not isinstance(value, str):
                raise ValueError(f"row {line}: {name} must be a string, got {value!r}")
        for name, value in zip(int_columns, ints):
            if isinstance(value, bool) or int(value) != value:
                raise ValueError(f"row {line}: {name} must be an integer, got {value!r}")
        values.append((*strings, *(int(v) for v in ints)))
    return values


def _inputs_fingerprint(columns: Sequence[str], values: list[tuple], paths: list[str], settings: dict) -> str:
    """What a shard's bytes depend on: its rows, each photo's name, size and modification time, the settings."""
    stats = [os.stat(p) for p in paths]
    files = [(os.path.basename(p), s.st_size, s.st_mtime_ns) for p, s in zip(paths, stats)]
    text = json.dumps([list(columns), values, files, settings], sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _shard_bounds(n_rows: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) ranges; the last shard takes the remainder (as the original did)."""
    per_shard = n_rows // shards
    return [(i * per_shard, n_rows if i == shards - 1 else (i + 1) * per_shard) for i in range(shards)]


@contextlib.contextmanager
def image_preparer(workers: int | None = None, threads: bool = False
                   ) -> Iterator[Callable[[list[tuple]], Iterator[bytes]]]:
    """Yield `prepare(jobs)`: (path, dim_pre, layout, mirror, rotate_wide) jobs -> prepared image bytes, in order.

    With `workers` > 1 (default: all cores) the work runs in spawned processes, started on first use and shared by
    every `write_records` call given this preparer. Spawned processes import the calling script again: a script
    using them must keep its top-level code under `if __name__ == "__main__":`. With `threads` the workers are
    threads instead (the exact layout: TensorFlow's decoding runs outside the GIL, and each process would have
    to import TensorFlow first).
    """
    workers = workers or available_cores()
    if workers <= 1:
        yield lambda jobs: map(_prepare_job, jobs)
        return
    if threads:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            try:
                yield lambda jobs: pool.map(_prepare_job, jobs)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        return
    # spawn, not fork: the parent has TensorFlow's threads running, which a forked child must not inherit.
    # An executor (unlike multiprocessing.Pool) fails instead of hanging when a worker cannot start or dies.
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        # One photo per task: a record set's last photos spread over every worker instead of one worker's chunk
        # (each photo takes tens of ms; sending one costs far less).
        yield lambda jobs: executor.map(_prepare_job, jobs, chunksize=1)
    except BrokenProcessPool as err:
        raise PhotoidError(
            f"image worker processes stopped ({err}); a script calling this must keep its top-level code "
            "under `if __name__ == \"__main__\":` (or use --workers 1)") from err
    finally:
        # After an error or Ctrl-C, drop the queued images instead of preparing them all first.
        executor.shutdown(wait=True, cancel_futures=True)


def write_records(rows: "pd.DataFrame", image_paths: Sequence[str], out_prefix: str | os.PathLike, *,
                  string_columns: Sequence[str], int_columns: Sequence[str], dim_pre: int, layout: str,
                  manifest: RecordsManifest, shards: int = 1, workers: int | None = None,
                  preparer: Callable[[list[tuple]], Iterator[bytes]] | None = None,
                  mirror: Sequence[bool] | None = None, rotate_wide: bool = False) -> dict:
    """Write `rows` (one photo each, `image_paths` aligned with them) as `shards` contiguous TFRecord shards.

    Files are `<out_prefix>-SSSSS-of-NNNNN` in `manifest.out_dir` (`out_prefix` ends in ".tfrecord"). Each row
    becomes one example with the JPEG from `prepare_image_bytes` and the given string and int columns. Shards that
    `manifest` lists as complete for the same inputs are kept. Returns {"files", "rows", "written", "kept",
    "images_written"}.

    Images are prepared by `preparer` (from `image_preparer`, to share worker processes between calls) or else
    by `workers` processes started for this call (see `image_preparer`). `mirror`, aligned with `rows`, names the
    photos to store flipped left to right (see `prepare_image_bytes`); None flips none. `rotate_wide` turns every
    photo wider than tall 90° clockwise.
    """
    import tensorflow as tf
    from tqdm import tqdm

    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    if len(image_paths) != len(rows):
        raise ValueError(f"{len(rows)} rows but {len(image_paths)} image paths")
    if mirror is not None and len(mirror) != len(rows):
        raise ValueError(f"{len(rows)} rows but {len(mirror)} mirror flags")
    if not str(out_prefix).endswith(".tfrecord"):
        raise ValueError(f"record file prefixes end in '.tfrecord' (e.g. fold.0.tfrecord), got {out_prefix}")
    if _parent(out_prefix) != _parent(fs.join(manifest.out_dir, "x")):
        raise ValueError(f"{out_prefix} is not in the manifest's folder {manifest.out_dir}")
    columns = (*string_columns, *int_columns)
    values = _row_values(rows, string_columns, int_columns)
    paths = [str(p) for p in image_paths]
    prefix = os.path.basename(out_prefix)
    settings = {"dim_pre": dim_pre, "layout": layout}
    if rotate_wide:   # only when set, so shards written without it keep their fingerprint
        settings["rotate_wide"] = True
    flips = [False] * len(paths) if mirror is None else [bool(m) for m in mirror]

    plan, to_write = [], []
    for shard, (start, end) in enumerate(_shard_bounds(len(values), shards)):
        name = shard_name(prefix, shard, shards)
        # Mirror flags join the fingerprint only where some photo is flipped, so unmirrored shards keep theirs.
        shard_settings = {**settings, "mirror": flips[start:end]} if any(flips[start:end]) else settings
        inputs = _inputs_fingerprint(columns, values[start:end], paths[start:end], shard_settings)
        plan.append(name)
        if not manifest.is_complete(name, inputs):
            to_write.append((name, start, end, inputs))

    jobs = [(paths[i], dim_pre, layout, flips[i], rotate_wide) for _, start, end, _ in to_write
            for i in range(start, end)]
    with contextlib.ExitStack() as stack:
        if preparer is None:
            preparer = stack.enter_context(image_preparer(min(workers or available_cores(), max(1, len(jobs))),
                                                          threads=layout == "exact"))
        progress = stack.enter_context(tqdm(total=len(jobs), desc=prefix, unit="img"))
        images = iter(preparer(jobs))
        for name, start, end, inputs in to_write:
            final = fs.join(manifest.out_dir, name)
            with atomic_path(final, suffix="") as tmp, tf.io.TFRecordWriter(tmp) as writer:
                for i in range(start, end):
                    writer.write(_serialize(columns, values[i], next(images), len(string_columns)))
                    progress.update(1)
            manifest.add(name, end - start, inputs)
    return {"files": [fs.join(manifest.out_dir, n) for n in plan], "rows": len(values),
            "written": len(to_write), "kept": len(plan) - len(to_write), "images_written": len(jobs)}


def _parent(path: str | os.PathLike) -> str:
    return str(fs.as_path(path).parent) if fs.is_remote(path) else os.path.dirname(os.path.abspath(path))


def _serialize(columns: Sequence[str], values: tuple, image: bytes, n_strings: int) -> bytes:
    import tensorflow as tf

    feature = {IMAGE_FEATURE: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image]))}
    for i, (name, value) in enumerate(zip(columns, values)):
        if i < n_strings:
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode("utf-8")]))
        else:
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    # Features is a protobuf map: only deterministic serialisation fixes its order, hence identical reruns.
    return example.SerializeToString(deterministic=True)


def add_layout_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layout", choices=LAYOUTS, default=None,
                        help="how records store each photo: exact (default: the uint8 DIM_PRE image the original's "
                             "reader made from the photo, stored losslessly; bit-identical model inputs), compact "
                             "(resized by Pillow and re-encoded as JPEG: about 13x smaller at 512 px, but its "
                             "pixels differ from the original's, by 2/255 on average and up to 105/255 on the "
                             "benchmark's photos; see docs/records.md) or original (each "
                             "photo's JPEG file as it is, decoded in full on every read)")
    parser.add_argument("--keep_original", action="store_true", help="the same as --layout original")


def chosen_layout(args: argparse.Namespace) -> str:
    """--layout, or `original` for --keep_original (the option's older name); both at odds is refused."""
    if args.keep_original and args.layout not in (None, "original"):
        raise PhotoidError(f"--keep_original stores the original files, which --layout {args.layout} does not: "
                           "give one of them")
    return "original" if args.keep_original else args.layout or DEFAULT_LAYOUT


def check_record_options(args: argparse.Namespace) -> None:
    """The sizes every record-building command takes, refused before any work when out of range."""
    for name in ("n_folds", "dim_pre", "shards", "workers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise PhotoidError(f"--{name} must be at least 1, got {value}")
    if args.n_folds < 2:
        raise PhotoidError(f"--n_folds must be at least 2, got {args.n_folds}")
