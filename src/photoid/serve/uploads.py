"""Single-photo uploads kept on disk: a restart of `photoid serve` loses no upload and no review page.

Each upload's photos are stored under their sha256 (`Identifier.store`); what the review page shows for them —
the candidates, scores and threshold of each photo, or why it was refused — is written here as one JSON file per
review (`CATALOG/uploads/REVIEW.json`, atomically), so a review link still opens, and its photos can still be
decided, after the server restarts. A review id is 16 hex digits, checked before it names a file.
"""

from __future__ import annotations

import re

from photoid.core import io as pio
from photoid.core.errors import PhotoidError
from photoid.serve.identifier import Identifier, Result

UPLOADS_DIR = "uploads"
REVIEW_ID = re.compile(r"[0-9a-f]{16}")


class Reviews:
    """Review pages by id: in memory while the server runs, on disk for ever."""

    def __init__(self, identifier: Identifier):
        self.identifier = identifier
        self.path = identifier.path / UPLOADS_DIR

    def save(self, review: str, results: list[Result]) -> None:
        pio.write_json(self.path / f"{review}.json", {"results": [_as_dict(r) for r in results]})

    def load(self, review: str) -> list[Result] | None:
        """The review's results (None: no such review)."""
        if not REVIEW_ID.fullmatch(review) or not (self.path / f"{review}.json").is_file():
            return None
        try:
            saved = pio.read_json(self.path / f"{review}.json")["results"]
        except (PhotoidError, KeyError, TypeError):
            return None
        return [self._result(entry) for entry in saved]

    def result(self, review: str, sha: str) -> Result | None:
        """One photo of a review, as identified then (a restart forgot the server's memory of it)."""
        held = self.identifier.results.get(sha)
        if held is not None:
            return held
        return next((r for r in self.load(review) or () if r.sha256 == sha), None)

    def _result(self, entry: dict) -> Result:
        result = Result(entry["sha256"], entry["file_name"], labels=list(entry["labels"]),
                        scores=[float(s) for s in entry["scores"]], error=entry["error"],
                        threshold=entry["threshold"], viewpoint=entry["viewpoint"])
        result.path = self.identifier.stored_photo(result.sha256) if result.sha256 and not result.error else None
        return result


def _as_dict(result: Result) -> dict:
    return {"sha256": result.sha256, "file_name": result.file_name, "labels": list(result.labels),
            "scores": [float(s) for s in result.scores], "error": result.error, "threshold": result.threshold,
            "viewpoint": result.viewpoint}
