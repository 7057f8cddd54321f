"""Import paths of earlier photoid versions, kept working: each old module now lives elsewhere in the package.

Notebooks written for the flat layout (`from photoid.identify import identify_paths`, `from photoid.catalog import
build_catalog`) keep working: the old name reads its attributes from the new modules, with a DeprecationWarning
naming the new place. `photoid._moved.MOVED` is the map; `install()` (called by `photoid/__init__`) puts the finder
in place, and the packages whose names were modules before (`photoid.catalog`, `photoid.inference`,
`photoid.records`, `photoid.runs`) forward the old module's attributes through `forward_attribute`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

# old module -> the modules that now hold what it held, searched in order
MOVED: dict[str, tuple[str, ...]] = {
    "photoid.errors": ("photoid.core.errors",),
    "photoid.io": ("photoid.core.io",),
    "photoid.tables": ("photoid.core.tables",),
    "photoid.images": ("photoid.core.images",),
    "photoid.labels": ("photoid.core.labels",),
    "photoid.metrics": ("photoid.core.metrics",),
    "photoid.retrieval": ("photoid.core.retrieval",),
    "photoid.results": ("photoid.core.results",),
    "photoid.quiet": ("photoid.core.quiet",),
    "photoid.config": ("photoid.runs.config", "photoid.commands.recipes"),
    "photoid.rundir": ("photoid.runs.folder",),
    "photoid.runs": ("photoid.runs.loaded",),
    "photoid.strategy": ("photoid.training.strategy",),
    "photoid.train": ("photoid.training.fold",),
    "photoid.run": ("photoid.training.kfold", "photoid.commands.train"),
    "photoid.predict": ("photoid.training.predictions",),
    "photoid.inference": ("photoid.inference.fold_models",),
    "photoid.embedder": ("photoid.inference.embedder",),
    "photoid.identify": ("photoid.inference.identify", "photoid.commands.identify"),
    "photoid.export": ("photoid.inference.export", "photoid.commands.export"),
    "photoid.gallery": ("photoid.inference.gallery",),
    "photoid.records": ("photoid.records.writer", "photoid.turtles.records"),
    "photoid.recordsdir": ("photoid.records.folder",),
    "photoid.pipeline": ("photoid.records.reader",),
    "photoid.augment": ("photoid.records.transforms", "photoid.turtles.augment"),
    "photoid.backbones": ("photoid.models.backbones",),
    "photoid.layers": ("photoid.models.layers",),
    "photoid.model": ("photoid.models.factory",),
    "photoid.catalog_store": ("photoid.catalog.store",),
    "photoid.catalog": ("photoid.catalog.store", "photoid.catalog.build", "photoid.catalog.identify",
                        "photoid.commands.catalog"),
    "photoid.openset": ("photoid.catalog.openset",),
    "photoid.calibrate": ("photoid.catalog.calibrate", "photoid.commands.calibrate"),
    "photoid.data": ("photoid.turtles.data",),
    "photoid.folds": ("photoid.turtles.folds", "photoid.records.folds"),
    "photoid.ensemble": ("photoid.turtles.ensemble",),
    "photoid.scoring": ("photoid.turtles.scoring",),
    "photoid.tasks.turtles": ("photoid.turtles.task",),
    "photoid.tasks.whales": ("photoid.whales.task",),
    "photoid.tasks.generic": ("photoid.generic.data", "photoid.generic.task"),
    "photoid.tasks.cli": ("photoid.commands.records",),
    "photoid.serve.decisions": ("photoid.catalog.decisions",),
    "photoid.whales.pairs": ("photoid.whales.pairs", "photoid.records.pairs", "photoid.models.factory"),
}


def forward_attribute(old: str, name: str):
    """Attribute `name` of old module `old`, from the first new module holding it (a DeprecationWarning names it)."""
    for new in MOVED[old]:
        if new == old:
            continue
        module = importlib.import_module(new)
        if hasattr(module, name):
            warnings.warn(f"{old}.{name} is now {new}.{name}", DeprecationWarning, stacklevel=3)
            return getattr(module, name)
    raise AttributeError(f"module {old!r} has no attribute {name!r} (its contents moved to "
                         f"{', '.join(m for m in MOVED[old] if m != old)})")


class _MovedModule(types.ModuleType):
    """An old module: its attributes come from the new modules. Where its name is also a function of the API
    (`photoid.identify`, `photoid.calibrate`), importing the old path makes it the package's attribute of that name,
    so it calls that function too: `photoid.identify(photos, ...)` keeps working after `import photoid.identify`."""

    def __getattr__(self, name: str):
        # Tools that walk sys.modules (TensorFlow, pytest, inspect) ask every module for `__file__` and the like:
        # an old module has none of its own, and forwarding them would warn on every walk.
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        return forward_attribute(self.__name__, name)

    def __call__(self, *args, **kwargs):
        api = importlib.import_module("photoid.api")
        function = getattr(api, self.__name__.rsplit(".", 1)[1], None)
        if self.__name__.count(".") != 1 or function is None:
            raise TypeError(f"module {self.__name__!r} is not callable")
        return function(*args, **kwargs)


class _OldModule(importlib.abc.Loader):
    def create_module(self, spec):
        return _MovedModule(spec.name, f"Moved: see {', '.join(MOVED[spec.name])}.")

    def exec_module(self, module):
        pass


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in MOVED or fullname in _PACKAGES:
            return None
        return importlib.machinery.ModuleSpec(fullname, _OldModule())


# old modules whose names are packages now: they forward through their own __getattr__
_PACKAGES = {"photoid.catalog", "photoid.inference", "photoid.records", "photoid.runs", "photoid.whales.pairs"}


def install() -> None:
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.append(_Finder())
