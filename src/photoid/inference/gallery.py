"""The identification gallery: each photo in a row beside its candidates, each shown by a photo of that individual.

A researcher checks a suggestion by eye: does the turtle in my photo look like the one the model names? Each row
holds the query photo (framed in blue) and its candidates in rank order, each candidate as one reference photo
from the training data (its first labelled photo: Turtle Recall's train.csv, then extra_images.csv) titled with its
id and probability. `new_turtle`, `new_individual` and ids without a readable reference photo get a grey tile
saying so.

The figure has a fixed layout (see the *_PX constants), so its pixel size follows from the number of rows and
candidates. It is drawn without pyplot (no global state, no display needed) and written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from photoid.core import io as pio
from photoid.core.images import check_photo_file
from photoid.core.labels import NEW_INDIVIDUAL, NEW_TURTLE

DPI = 100
TILE_WIDTH_PX = 220  # one column: a 200 px image and a 10 px margin either side
IMAGE_PX = 200
TITLE_PX = 55  # two lines of 9 pt text above each image
ROW_HEIGHT_PX = TITLE_PX + IMAGE_PX + 20  # 20 px between rows
HEADER_PX = 60  # the figure's title
MAX_ROWS = 25  # a taller PNG is no longer readable at a glance
_MARGIN_PX = (TILE_WIDTH_PX - IMAGE_PX) / 2
_LABEL_CHARS = 26  # what fits in a tile's width at 9 pt
_QUERY_COLOUR = "#1f5fa8"
_PLACEHOLDER_GREY = 0.82

# A row: the query photo's path and its (label, probability) candidates in rank order.
Row = tuple[str, Sequence[tuple[str, float]]]


def gallery_size_px(n_rows: int, n_candidates: int) -> tuple[int, int]:
    """(width, height) in pixels of a gallery with `n_rows` photos of up to `n_candidates` candidates each."""
    return (1 + n_candidates) * TILE_WIDTH_PX, HEADER_PX + n_rows * ROW_HEIGHT_PX


def reference_photos(data_dir: str | os.PathLike) -> dict[str, Path]:
    """The first listed photo of every individual of a data folder of any task (`Task.labelled_photos`; Turtle
    Recall: train.csv's rows first, then extra_images.csv's).

    Files are not checked here (thousands of them); the gallery checks the few it draws.
    """
    from photoid.tasks import detect_task
    from photoid.tasks.base import first_photo_of_each

    return first_photo_of_each(detect_task(data_dir).labelled_photos(data_dir, check_images=False))


def _thumbnail(path: str | os.PathLike) -> np.ndarray | None:
    """The photo as an RGB array of at most 2 × IMAGE_PX a side, or None if it cannot be read."""
    if check_photo_file(path) is not None:
        return None
    try:
        with Image.open(path) as image:
            image.draft("RGB", (2 * IMAGE_PX, 2 * IMAGE_PX))  # decode large JPEGs at reduced size
            image = image.convert("RGB")
            image.thumbnail((2 * IMAGE_PX, 2 * IMAGE_PX))
            return np.asarray(image)
    except OSError:
        return None


def _short(text: str, limit: int = _LABEL_CHARS) -> str:
    """Cut the middle out of long names, so a tile's title never runs into its neighbour's."""
    if len(text) <= limit:
        return text
    keep = (limit - 1) // 2
    return f"{text[:keep]}…{text[-(limit - 1 - keep):]}"


def _tile(fig: Figure, row: int, column: int):
    """The axes of one image tile, placed in pixels from the figure's top-left corner."""
    width, height = fig.get_size_inches() * DPI
    left = column * TILE_WIDTH_PX + _MARGIN_PX
    top = HEADER_PX + row * ROW_HEIGHT_PX + TITLE_PX
    ax = fig.add_axes((left / width, 1 - (top + IMAGE_PX) / height, IMAGE_PX / width, IMAGE_PX / height))
    ax.set_xticks([])
    ax.set_yticks([])
    # The tile keeps its square box whatever the photo's shape (the photo is letterboxed inside), so titles
    # and frames line up along a row.
    ax.set_adjustable("datalim")
    return ax


def _show(ax, picture: np.ndarray | None, message: str) -> None:
    if picture is None:
        ax.imshow(np.full((IMAGE_PX, IMAGE_PX), _PLACEHOLDER_GREY), cmap="gray", vmin=0, vmax=1)
        ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, color="#333333", transform=ax.transAxes)
    else:
        ax.imshow(picture)


def draw_gallery(rows: Sequence[Row], references: dict[str, Path], out_path: str | os.PathLike,
                 subtitle: str = "") -> Path:
    """Draw the gallery of `rows` to the PNG `out_path` and return its path."""
    if not rows:
        raise ValueError("the gallery needs at least one identified photo")
    n_candidates = max(len(candidates) for _, candidates in rows)
    width, height = gallery_size_px(len(rows), n_candidates)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    title = "Which individual is this? Each photo (left, blue) beside its top candidates"
    fig.text(0.5, 1 - 22 / height, title, ha="center", va="center", fontsize=12, weight="bold")
    if subtitle:
        fig.text(0.5, 1 - 44 / height, subtitle, ha="center", va="center", fontsize=9, color="#555555")

    thumbnails: dict[Path, np.ndarray | None] = {}
    for r, (query, candidates) in enumerate(rows):
        ax = _tile(fig, r, 0)
        _show(ax, _thumbnail(query), "cannot be read")
        ax.set_title(f"photo\n{_short(Path(query).name)}", fontsize=9, color=_QUERY_COLOUR, weight="bold")
        for spine in ax.spines.values():
            spine.set_edgecolor(_QUERY_COLOUR)
            spine.set_linewidth(3)
        for c, (label, probability) in enumerate(candidates, start=1):
            ax = _tile(fig, r, c)
            if label == NEW_TURTLE:
                _show(ax, None, "new turtle\n(not in train.csv)")
            elif label == NEW_INDIVIDUAL:
                _show(ax, None, "new individual\n(not among the known)")
            else:
                reference = references.get(label)
                if reference is not None and reference not in thumbnails:
                    thumbnails[reference] = _thumbnail(reference)
                _show(ax, thumbnails.get(reference) if reference else None, "no reference photo")
            ax.set_title(f"{c}. {_short(label, _LABEL_CHARS - 3)}\np = {probability:.3f}", fontsize=9)
            for spine in ax.spines.values():
                spine.set_edgecolor("#bbbbbb")

    out_path = Path(out_path)
    with pio.atomic_path(out_path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=DPI, format="png", facecolor="white")
    return out_path
