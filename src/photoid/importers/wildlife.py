"""A data set downloaded with the `wildlife-datasets` package, read through that package, as a generic folder.

The package knows the layout of each of its data sets (CSV files, COCO annotations, folder names): its class for
the data set builds the catalogue `.df` with `image_id`, `identity`, `path` (relative to the root) and, per data
set, `orientation`, `date`, `encounter_id`, `video`, `original_split`... Here those become the generic columns:

- `orientation` (or `viewpoint`) -> viewpoint; `date` -> date as YYYY-MM-DD; `encounter_id` (or `video`: frames
  of one video are one encounter) -> encounter, so folds keep an encounter's photos together;
- the package's unknown-identity marker (`unknown`, or no identity) -> an empty identity and split=test: photos
  of individuals nobody has named yet are photos to identify, never a class to train;
- every other row is a train row, unless `original_split` is asked for: then rows the data set itself marks as
  its test split are test rows too, keeping their identity (to score on the publisher's split);
- with `--crop`, each photo is cut to its row's box by the package's loader and written as PNG: data sets with
  several animals in one photo list one row per animal, and the whole photo would give each row all of them.

Rows keep the package's order (its catalogue is sorted by image_id), which decides the folds. The package is an
optional dependency (`pip install 'photoid[wildlife]'`), imported only when this command runs: it pulls in
opencv, pycocotools and the Hugging Face `datasets` stack, which `photoid --help` must not wait for.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from PIL import Image

from photoid.core.errors import PhotoidError
from photoid.importers.generic import safe_image_id

INSTALL_HINT = "pip install 'photoid[wildlife]' (or: pip install wildlife-datasets)"
# Generic column <- the first of these catalogue columns the data set has.
COLUMN_SOURCES = {"viewpoint": ("orientation", "viewpoint"), "date": ("date",), "encounter": ("encounter_id", "video")}
# Base classes the package exports beside the data sets; they take other arguments and name no data set.
_NOT_DATA_SETS = {"WildlifeDataset", "DatasetFactory", "WildlifeDatasetWildMe", "Dataset_Folder", "Dataset_Metadata"}


def _package():
    try:
        import wildlife_datasets
        import wildlife_datasets.datasets as datasets
    except ImportError as err:
        raise PhotoidError(f"`photoid import wildlife-datasets` needs the wildlife-datasets package, which is not "
                           f"installed ({err}); install it with {INSTALL_HINT}") from None
    return wildlife_datasets, datasets


def dataset_classes() -> dict[str, type]:
    """Name -> class of every data set the installed package can read (newest versions and outdated ones)."""
    _, datasets = _package()
    base = datasets.WildlifeDataset
    found = {cls.__name__: cls for cls in datasets.names_all}
    for name, value in vars(datasets).items():
        if isinstance(value, type) and issubclass(value, base) and name not in _NOT_DATA_SETS:
            found.setdefault(name, value)
    return found


def find_dataset(name: str) -> type:
    classes = dataset_classes()
    if name in classes:
        return classes[name]
    by_lower = {key.lower(): cls for key, cls in classes.items()}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    _, datasets = _package()
    current = sorted(cls.__name__ for cls in datasets.names_all)
    raise PhotoidError(f"unknown data set {name!r}; the installed wildlife-datasets reads: {', '.join(current)}")


def load_dataset(root: str | os.PathLike, name: str):
    """The package's data set object, its catalogue `.df` built by the package from the files under `root`."""
    cls = find_dataset(name)
    root = Path(root)
    if not root.is_dir():
        raise PhotoidError(f"--root {root} does not exist or is not a folder")
    try:
        # Files are checked here (with the row named) rather than by the package, which prints them and raises.
        dataset = cls(root=str(root), check_files=False)
    except FileNotFoundError as err:
        missing = err.filename or str(err)
        raise PhotoidError(f"{cls.__name__} in {root}: {missing} is missing (wildlife-datasets reads it to list the "
                           "data set's photos; is the data set downloaded and extracted there?)") from None
    except Exception as err:  # the package raises bare Exceptions and KeyErrors for files it cannot parse
        raise PhotoidError(f"wildlife-datasets cannot read {cls.__name__} from {root}: "
                           f"{type(err).__name__}: {err}") from None
    return dataset


def wildlife_rows(dataset, original_split: bool = False) -> pd.DataFrame:
    """The rows of a generic folder (photoid.importers.generic.ROW_COLUMNS) for a loaded data set."""
    cls, df, root = type(dataset), dataset.df, Path(dataset.root)
    for column in ("image_id", "identity", "path"):
        if column not in df:
            raise PhotoidError(f"wildlife-datasets' {cls.__name__} catalogue has no {column!r} column "
                               f"(columns: {', '.join(map(str, df.columns))})")
    paths = df["path"].map(_text)
    origin = [f"{cls.__name__} catalogue row {i} ({path})" for i, path in enumerate(paths)]
    ids = df["image_id"].map(_text)
    identity = df["identity"].map(_text)
    unknown = (identity == "") | (identity == str(cls.unknown_name))
    split = pd.Series("train", index=df.index).mask(unknown, "test")
    if original_split and "original_split" in df:
        split = split.mask(df["original_split"].map(_text) == "test", "test")
    rows = pd.DataFrame({
        "image_id": ids.map(safe_image_id),
        "identity": identity.mask(unknown, ""),
        "split": split,
        "source": [str(root / path) for path in paths],
        "origin": origin,
    })
    for generic, candidates in COLUMN_SOURCES.items():
        column = next((c for c in candidates if c in df), None)
        values = df[column] if column else pd.Series("", index=df.index)
        rows[generic] = values.map(_date_text if generic == "date" else _text)
    # Ids such as file names with spaces cannot name a file safely; the command says how many were rewritten.
    rows.attrs["renamed_ids"] = int((rows["image_id"] != ids).sum())
    return rows


def crop_renderer(dataset) -> Callable[[int], Image.Image]:
    """Row i's photo cut to its box by the package's own loader (`img_load="bbox"`), as the package's users see it.

    For data sets with several animals in one photo: each row then gets its animal alone. The package decodes with
    OpenCV, which applies the EXIF orientation its boxes are drawn on.
    """
    name = type(dataset).__name__
    if "bbox" not in dataset.df:
        raise PhotoidError(f"--crop: {name} has no boxes (no bbox column in its catalogue); import it without --crop")
    dataset.img_load, dataset.transform, dataset.load_label = "bbox", None, False

    def render(i: int) -> Image.Image:
        try:
            return dataset[i]
        except Exception as err:  # OpenCV and the package raise plain ValueErrors and Exceptions
            raise PhotoidError(f"{name} catalogue row {i} ({dataset.df['path'].iloc[i]}): wildlife-datasets cannot "
                               f"cut the photo to its box: {type(err).__name__}: {err}") from None

    return render


def _text(value) -> str:
    """A catalogue value as text: "" for none, whole numbers without ".0" (pandas makes ints floats beside NaN)."""
    if value is None or (not isinstance(value, (list, tuple, dict)) and pd.isna(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _date_text(value) -> str:
    """YYYY-MM-DD of a catalogue date (a timestamp, or a string in a form pandas reads); a string without a year,
    month and day ("2019") or that pandas cannot read is kept as it is, so that the folder writer names its row."""
    text = _text(value)
    if not text:
        return ""
    if isinstance(value, str) and len(re.findall(r"\d+", text)) < 3:
        return text  # pandas would read "2019" as 2019-01-01: a day the data never gave
    try:
        stamp = pd.Timestamp(text if isinstance(value, str) else value)
    except (ValueError, TypeError, OverflowError):
        return text
    return "" if pd.isna(stamp) else stamp.strftime("%Y-%m-%d")
