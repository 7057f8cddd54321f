"""Why two photos match: the query and a candidate side by side, each verified match drawn as a line.

Only the inliers the pair's score counted are drawn (`matching.PairMatch`: the caller passes their points), each
coloured by its strength (1 − the ratio of its two nearest distances: red for a match barely passing the ratio
test, through yellow, to green for an unambiguous one). The photos are the prepared ones the features were found in
(turned and mirrored as the run prepares them), scaled to one height. `draw_matches` returns the segments it drew,
in the image's pixels, so a caller (and a test) can check that the picture shows exactly the counted matches.
"""

from __future__ import annotations

import os

import numpy as np

HEIGHT = 360  # px of each photo in the picture
GAP = 12  # px between the two photos
HEADER = 34  # px of text above them


def strength_colour(strength: float) -> tuple[int, int, int]:
    """Red (weak) → yellow → green (strong), for a strength in [0, 1]."""
    s = float(np.clip(strength, 0.0, 1.0))
    return (255, int(round(510 * s)), 0) if s < 0.5 else (int(round(510 * (1.0 - s))), 200, 0)


def draw_matches(query: np.ndarray, candidate: np.ndarray, query_points: np.ndarray, candidate_points: np.ndarray,
                 strength: np.ndarray, out: str | os.PathLike, title: str = "", subtitle: str = ""
                 ) -> list[tuple[float, float, float, float]]:
    """Write a PNG of `render_matches` (atomically); returns the segments drawn (x0, y0, x1, y1)."""
    from photoid.core.io import atomic_path

    canvas, segments = render_matches(query, candidate, query_points, candidate_points, strength, title, subtitle)
    with atomic_path(out, suffix=".png") as tmp:
        canvas.save(tmp, format="PNG")
    return segments


def png_bytes(canvas) -> bytes:
    import io

    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def render_matches(query: np.ndarray, candidate: np.ndarray, query_points: np.ndarray, candidate_points: np.ndarray,
                   strength: np.ndarray, title: str = "", subtitle: str = ""):
    """A picture (PIL image) of `query` and `candidate` (grey uint8 arrays: the prepared photos) with match i drawn
    from `query_points[i]` to `candidate_points[i]` (pixels of each prepared photo), coloured by `strength[i]`; and
    the segments drawn (x0, y0, x1, y1), one per match, weakest first."""
    from PIL import Image, ImageDraw

    scale_q, scale_c = HEIGHT / max(1, query.shape[0]), HEIGHT / max(1, candidate.shape[0])
    width_q = max(1, round(query.shape[1] * scale_q))
    width_c = max(1, round(candidate.shape[1] * scale_c))
    canvas = Image.new("RGB", (width_q + GAP + width_c, HEADER + HEIGHT), (255, 255, 255))
    canvas.paste(Image.fromarray(query).convert("RGB").resize((width_q, HEIGHT)), (0, HEADER))
    canvas.paste(Image.fromarray(candidate).convert("RGB").resize((width_c, HEIGHT)), (width_q + GAP, HEADER))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 3), title, fill=(0, 0, 0))
    draw.text((4, 18), subtitle, fill=(80, 80, 80))
    segments = []
    # Weakest first, so the strongest matches are drawn on top where lines cross.
    for k in np.argsort(strength, kind="stable"):
        qx, qy = query_points[k]
        cx, cy = candidate_points[k]
        segment = (float(qx * scale_q), float(HEADER + qy * scale_q),
                   float(width_q + GAP + cx * scale_c), float(HEADER + cy * scale_c))
        colour = strength_colour(strength[k])
        draw.line(segment, fill=colour, width=2)
        for x, y in (segment[:2], segment[2:]):
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), outline=colour, width=2)
        segments.append(segment)
    return canvas, segments
