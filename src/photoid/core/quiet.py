"""TensorFlow's C++ start-up lines kept off the terminal of `photoid` commands.

While it is imported and looks for devices, TensorFlow 2.21 writes lines such as "oneDNN custom operations are
on", "Could not find cuda drivers on your machine" and, on a machine without a GPU, "failed call to cuInit: ...
CUDA error" straight to the process's stderr from C++. TF_CPP_MIN_LOG_LEVEL does not hide them: they are written
before absl's logging starts. `quiet_tensorflow_start` therefore wraps TensorFlow's first import, wherever it
happens: stderr is captured at the file-descriptor level while TensorFlow is imported and lists its devices, and
everything but those log lines is passed on (a Python warning printed meanwhile still shows; if the import fails,
everything shows). `photoid --verbose COMMAND` or PHOTOID_VERBOSE=1 leaves TensorFlow's messages as they are.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
from typing import Iterator

VERBOSE_ENV = "PHOTOID_VERBOSE"
# absl's / TensorFlow's C++ log lines: "I0000 00:00:1795641627.661763   26880 port.cc:153] ...", the older
# "2025-09-17 14:44:05.157831: I external/.../cudart_stub.cc:32] ...", and absl's notice before either.
TF_LOG_LINE = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] |\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: "
                         r"[IWEF] \S+:\d+\] |WARNING: All log messages before absl::InitializeLog\(\) is called)")


def quiet_tensorflow_start() -> None:
    """Make TensorFlow's first import (and its device search) in this process print no C++ start-up lines.

    Its later C++ log lines are hidden too (TF_CPP_MIN_LOG_LEVEL 3), such as oneDNN's note that it falls back to
    Eigen on this CPU; TensorFlow's errors still reach the user as the Python exceptions they raise.
    """
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietImport) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietImport())


class _QuietImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: the real finders locate TensorFlow, this only wraps its loading
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):  # anything else a loader offers (resources, file names) is the real loader's
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        with _stderr_without_tensorflow_logs():
            self._loader.exec_module(module)
            # CUDA is probed here (its errors on a machine without a GPU are part of the start-up); the logical
            # devices are not created yet, so a later split of the CPU (photoid.training.strategy) is still possible.
            module.config.list_physical_devices()


@contextlib.contextmanager
def _stderr_without_tensorflow_logs() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    failed = True
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
            failed = False
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode("utf-8", errors="replace").splitlines(keepends=True)
            kept = lines if failed else [line for line in lines if not TF_LOG_LINE.match(line)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()
