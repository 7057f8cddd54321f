"""photoid: photo-identification of individual animals.

The Python API (`photoid.api`) is importable from here: `photoid.train`, `photoid.open_run`, `photoid.identify`,
`photoid.build_catalog`, `photoid.open_catalog`, `photoid.calibrate`, ... Importing `photoid` loads nothing heavy;
each function loads TensorFlow only when it needs a model.

kecam builds its models with the Keras 2 API; under Keras 3 model building fails. Selecting tf-keras must happen
before TensorFlow is first imported, so it is done here, once, at the package's import. Every module uses
`tf_keras`, never `tf.keras` or `keras`.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
# TensorFlow's C++ start-up chatter hides the messages researchers need to read; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN's CPU kernels on every x86 CPU: TensorFlow turns them on by itself only on CPUs with AVX-512 VNNI, BF16 or
# AMX, and elsewhere (an AVX2-only AMD EPYC) falls back to Eigen's kernels, which took 1.6x the CPU time per training
# step of `make demo` there (emulated: docs/speed.md). TF_ENABLE_ONEDNN_OPTS=0 still chooses Eigen.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from photoid._version import __version__  # noqa: E402,F401

from photoid import _moved  # noqa: E402  (old import paths keep working)

_moved.install()


_API = ("build_records", "train", "open_run", "identify", "identifications", "fold_ensemble", "build_catalog",
        "open_catalog", "add_photos", "catalog_summary", "calibrate", "evaluate", "RunInfo", "Catalog", "Identification")


def __getattr__(name: str):
    if name in _API:
        from photoid import api

        return getattr(api, name)
    raise AttributeError(f"module 'photoid' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
