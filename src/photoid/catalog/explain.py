"""Why a photo matches a candidate: a picture of the verified local matches, for `identify --explain` and the page.

For each top candidate, the query and the candidate's best photo (the one whose verified inliers gave the
candidate its local score) are drawn side by side, prepared as their features were (turned and mirrored as the
run prepares photos), with exactly those inliers as lines (`photoid.local.drawing`). Beside each PNG a JSON file
lists the drawn matches (coordinates in both prepared photos and strengths), so a reviewer's tool can read them.
"""

from __future__ import annotations

import re
from pathlib import Path

from photoid.catalog.fusion import LocalEvidence, LocalScorer
from photoid.catalog.store import Catalog
from photoid.core import io as pio
from photoid.core.errors import PhotoidError
from photoid.local.features import Settings, photo_features, prepared_grey
from photoid.local.drawing import png_bytes, render_matches

UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _render(query_path: str, query_view: str | None, evidence: LocalEvidence, settings: Settings, title: str,
            subtitle: str):
    """The picture of one candidate's evidence: both prepared photos, its inliers' own points as lines."""
    query_grey = prepared_grey(query_path, settings, query_view)
    candidate_grey = prepared_grey(evidence.path, settings, evidence.viewpoint or None)
    return render_matches(query_grey, candidate_grey, evidence.query_points, evidence.candidate_points,
                          evidence.match.strength, title, subtitle)


def matches_record(evidence: LocalEvidence) -> list[dict]:
    """The drawn matches: the keypoints (index and position in each prepared photo) and strength of each inlier."""
    m = evidence.match
    return [{"query_keypoint": int(q), "candidate_keypoint": int(c),
             "query_xy": [round(float(v), 2) for v in qp], "candidate_xy": [round(float(v), 2) for v in cp],
             "strength": round(float(s), 4)}
            for q, c, qp, cp, s in zip(m.query_index, m.candidate_index, evidence.query_points,
                                       evidence.candidate_points, m.strength)]


def titles(label: str, evidence: LocalEvidence, score: float | None) -> tuple[str, str]:
    title = f"{label}: {evidence.match.inliers} verified matches with {evidence.image_id}"
    subtitle = ("left: the query; right: the candidate's best photo; lines: the verified matches, red weak to green "
                "strong" + (f"; score {score:.4f}" if score is not None else ""))
    return title, subtitle


def write_explanations(result, settings: Settings, out_dir: str | Path, query_view: str | None = None) -> list[Path]:
    """One PNG (and its JSON) per candidate of `result` (an `Identification`) with local evidence, in rank order;
    returns the PNG paths. Named <photo stem>_<rank>_<candidate>.png."""
    out_dir = Path(out_dir)
    written = []
    for rank, (label, score) in enumerate(zip(result.labels or [], result.scores or []), start=1):
        evidence = (result.evidence or {}).get(label)
        if evidence is None:
            continue
        stem = f"{UNSAFE.sub('_', Path(result.path).stem)}_{rank}_{UNSAFE.sub('_', label)}"
        canvas, segments = _render(result.path, query_view, evidence, settings, *titles(label, evidence, score))
        with pio.atomic_path(out_dir / f"{stem}.png", suffix=".png") as tmp:
            canvas.save(tmp, format="PNG")
        pio.write_json(out_dir / f"{stem}.json", {
            "query": str(result.path), "candidate": label, "rank": rank, "score": score,
            "candidate_image_id": evidence.image_id, "candidate_path": evidence.path,
            "inliers": evidence.match.inliers, "tentative_matches": evidence.match.tentative,
            "matches": matches_record(evidence), "segments_drawn": [[round(v, 2) for v in seg] for seg in segments]})
        written.append(out_dir / f"{stem}.png")
    return written


def explain_pair(catalog: Catalog, scorer: LocalScorer, settings: Settings, query_path: str, label: str,
                 query_view: str | None = None) -> tuple[bytes, dict]:
    """The explanation picture (PNG bytes) of one query photo and one catalogue individual, and its record."""
    names = scorer.names
    if label not in names:
        raise PhotoidError(f"{label!r} is not an individual of catalogue {catalog.path}")
    query = photo_features(query_path, settings, query_view)
    _, found, notes = scorer.score(query, query_view, [names.index(label)])
    evidence = found.get(names.index(label))
    if evidence is None:
        raise PhotoidError(f"no photo of {label} can be compared with this one"
                           + (f" ({'; '.join(notes)})" if notes else " (no photo of a comparable viewpoint)"))
    canvas, segments = _render(query_path, query_view, evidence, settings, *titles(label, evidence, None))
    record = {"candidate": label, "candidate_image_id": evidence.image_id, "inliers": evidence.match.inliers,
              "matches": matches_record(evidence), "segments_drawn": len(segments), "notes": notes}
    return png_bytes(canvas), record


def explain_photo(catalog: Catalog, scorer: LocalScorer, settings: Settings, query_path: str, image_id: str,
                  query_view: str | None = None) -> tuple[bytes, dict]:
    """The explanation picture (PNG bytes) of one query photo and one catalogue photo, and its record."""
    rows = catalog.table.index[catalog.table["image_id"] == image_id]
    if len(rows) == 0:
        raise PhotoidError(f"no photo {image_id!r} in catalogue {catalog.path}")
    query = photo_features(query_path, settings, query_view)
    evidence = scorer.score_photo(query, int(rows[0]))
    if evidence is None:
        raise PhotoidError(f"catalogue photo {image_id} has no local features: "
                           f"photoid catalog build --local --out {catalog.path} adds them")
    label = str(catalog.table["individual_id"].iloc[int(rows[0])])
    canvas, segments = _render(query_path, query_view, evidence, settings, *titles(label, evidence, None))
    record = {"candidate": label, "candidate_image_id": image_id, "inliers": evidence.match.inliers,
              "matches": matches_record(evidence), "segments_drawn": len(segments),
              "notes": [query.note] if query.note else []}
    return png_bytes(canvas), record
