"""The page's model: the catalogue's fold models loaded once, one worker thread that runs every model call.

Requests never call a model themselves: they queue their photos and wait. The worker takes everything queued at
that moment (up to `batch_size` photos) and identifies it in one batch with `photoid identify --catalog`'s own
function (`catalog.identify_paths_with_catalog`), so eight people uploading at once cost one batched call, not
eight models competing for two cores, and the numbers are the command's. The catalogue is read again whenever
its manifest changed (a decision here, `photoid catalog add` elsewhere), so every identification sees the
current catalogue; its prepared search (`photoid.catalog.index`) is made once at start and carried over to each
new generation by its changes alone.

Uploaded photos are kept in the catalogue folder (`photos/<sha256>.jpg`, written atomically): a confirmed photo
stays where the catalogue's table points.
"""

from __future__ import annotations

import hashlib
import queue
import re
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from photoid.catalog.build import MANIFEST, Catalog, load_catalog_embedder, read_catalog
from photoid.catalog.decisions import Photo
from photoid.catalog.identify import identify_paths_with_catalog, verdict_threshold
from photoid.catalog.local import has_local_features, local_settings, read_local_features, require_local_features
from photoid.catalog.zeroshot import catalogue_task
from photoid.core import io as pio
from photoid.core.errors import PhotoidError
from photoid.core.images import check_image_file
from photoid.inference.embedder import check_same_models
from photoid.survey.job import embedder_features
from photoid.tasks import get_task

PHOTOS_DIR = "photos"
SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_PIXELS = 50_000_000  # a camera photo is below; a header claiming more is refused before any decoding
KEPT_RESULTS = 2000  # identified photos remembered for their decision (oldest forgotten first)


class _Refused(Exception):
    """An upload photoid cannot read (the reason is the message)."""


@dataclass
class Result:
    """One uploaded photo: what the page shows and what a decision about it records."""

    sha256: str
    file_name: str
    path: Path | None = None
    labels: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    error: str | None = None
    threshold: float | None = None  # the one its verdict was drawn with
    search: str | None = None  # None: the exact search; else the approximate index that gave the scores
    viewpoint: str | None = None  # as the uploader said (None: unknown): right views are mirrored for the models

    def photo(self) -> Photo:
        return Photo(self.sha256, self.path, self.file_name, self.labels, self.scores, self.threshold,
                     self.viewpoint)


class Identifier:
    def __init__(self, catalog_dir: str | Path, run_dirs: Sequence[str] | None = None,
                 records_dir: str | None = None, top: int = 5, batch_size: int = 16,
                 blend_weight: float | None = None, threshold: float | None = None):
        self.path = Path(catalog_dir)
        self.top, self.batch_size = top, batch_size
        self._operating = {"blend_weight": blend_weight, "threshold": threshold}  # None: the catalogue's calibration
        self._catalog = read_catalog(self.path)
        self._catalog_lock = threading.Lock()
        # An uncalibrated catalogue (without --threshold) is refused at start, before the models load.
        verdict_threshold(self._catalog, **self._operating)
        self.embedder = load_catalog_embedder(self._catalog, run_dirs, records_dir)
        # The prepared search, made once here: later generations carry it over by their changes (`catalog`).
        self._catalog.index()
        self.models = self.embedder.signatures()
        self.task = catalogue_task(self._catalog, self.embedder)
        # Runs trained on whale records saw right views mirrored: the page then asks each upload's viewpoint.
        self.mirrors_right = self.embedder.mirrors_right
        self.new_label = get_task(self.task).new_label
        self.photos_dir = self.path / PHOTOS_DIR
        self.results: OrderedDict[str, Result] = OrderedDict()
        self._results_lock = threading.Lock()
        self._jobs: queue.Queue = queue.Queue()
        threading.Thread(target=self._work, name="photoid-models", daemon=True).start()

    # ------------------------------------------------------------------ catalogue

    @property
    def catalog(self) -> Catalog:
        """The current catalogue: read again when its manifest changed since the last look (a decision here,
        `photoid catalog add` elsewhere); the parts it still holds and its prepared index are carried over, so
        a new photo costs the reading of its part, not a new index."""
        with self._catalog_lock:
            try:
                manifest = pio.read_json(self.path / MANIFEST)
            except (OSError, PhotoidError):
                manifest = None  # being replaced this instant: the copy held is still a whole catalogue
            if manifest is not None and manifest != self._catalog.manifest:
                self._catalog = read_catalog(self.path, previous=self._catalog)
            return self._catalog

    def threshold(self) -> float:
        return verdict_threshold(self.catalog, **self._operating)

    @property
    def can_explain(self) -> bool:
        """Whether the catalogue keeps local features, so a candidate's matches can be drawn (`explain`)."""
        return has_local_features(self.catalog)

    def explain(self, sha: str, target: str) -> bytes:
        """The PNG of an uploaded or survey photo (by its sha256) beside `target` — an individual's best catalogue
        photo, or the catalogue photo `IMAGE_ID.png` — with their verified local matches drawn."""
        from photoid.catalog.explain import explain_pair, explain_photo
        from photoid.catalog.fusion import LocalScorer

        path, viewpoint = self._photo_of(sha)
        catalog = self.catalog
        require_local_features(catalog, "drawing why photos match")
        scorer = LocalScorer(catalog, read_local_features(catalog))
        if target.endswith(".png") and (catalog.table["image_id"] == target[:-4]).any():
            return explain_photo(catalog, scorer, local_settings(catalog), path, target[:-4], viewpoint)[0]
        return explain_pair(catalog, scorer, local_settings(catalog), path, target, viewpoint)[0]

    def _photo_of(self, sha: str) -> tuple[str, str | None]:
        """(file, viewpoint) of a photo identified here or imported in a survey, by its sha256 (never a path)."""
        result = self.results.get(sha)
        if result is not None and result.path is not None:
            return str(result.path), result.viewpoint
        if SHA256.fullmatch(sha):
            from photoid.survey.store import Survey, list_surveys

            for name in list_surveys(self.path):
                photos = Survey(self.path, name).photos()
                found = photos[photos["sha256"] == sha]
                if len(found) and Path(found["path"].iloc[0]).is_file():
                    return str(found["path"].iloc[0]), found["viewpoint"].iloc[0] or None
            stored = self.stored_photo(sha)
            if stored is not None:
                return str(stored), None
        raise PhotoidError("this photo is no longer kept by the server; identify it again")

    @property
    def operating(self) -> dict:
        """The operating point given at start ({"blend_weight", "threshold"}; None: the catalogue's calibration)."""
        return dict(self._operating)

    # ------------------------------------------------------------------ photos

    def store(self, data: bytes, file_name: str) -> Result:
        """Keep an uploaded photo under its content hash; a photo photoid cannot read gets its reason."""
        sha = hashlib.sha256(data).hexdigest()
        result = Result(sha, file_name)
        self.photos_dir.mkdir(exist_ok=True)
        target = self.photos_dir / f"{sha}.jpg"
        if not target.is_file():
            try:
                with pio.atomic_path(target) as tmp:
                    Path(tmp).write_bytes(data)
                    # Checked under the temporary name: a refused upload never becomes a stored photo.
                    reason = check_image_file(tmp, max_pixels=MAX_PIXELS)
                    if reason:
                        raise _Refused(reason)
            except _Refused as refused:
                result.error = str(refused)
                return result
        result.path = target
        return result

    def stored_photo(self, sha: str) -> Path | None:
        """The stored upload with this hash, if any (`sha` is checked to be a hash: never a path)."""
        if not SHA256.fullmatch(sha):
            return None
        path = self.photos_dir / f"{sha}.jpg"
        return path if path.is_file() else None

    def remember(self, result: Result) -> None:
        """Keep a result for its decision (the caller holds `_results_lock`)."""
        self.results[result.sha256] = result
        self.results.move_to_end(result.sha256)
        while len(self.results) > KEPT_RESULTS:
            self.results.popitem(last=False)

    # ------------------------------------------------------------------ model calls

    def identify(self, results: list[Result]) -> list[Result]:
        """Fill in the candidates of readable stored photos (one batched model call with other requests')."""
        readable = [r for r in results if r.error is None]
        if readable:
            answers, threshold = self._submit("identify", [str(r.path) for r in readable],
                                              [r.viewpoint for r in readable])
            for result, answer in zip(readable, answers):
                if answer.error is not None:
                    result.error = answer.error
                else:
                    result.labels, result.scores, result.threshold = answer.labels, answer.scores, threshold
                    result.search = answer.search
        with self._results_lock:
            for result in results:
                self.remember(result)
        return results

    def embed(self, path: Path, viewpoint: str | None = None) -> np.ndarray:
        """One photo's catalogue embedding (to add it), computed by the same worker."""
        return self._submit("embed", [str(path)], [viewpoint])[0]

    def features(self, paths: list[str], viewpoints: list[str | None] | None = None) -> list[tuple]:
        """Embeddings and mean probabilities of photos (a survey's batch job, `photoid.survey.job.Features`),
        computed by the same worker, batched with everyone else's photos."""
        return self._submit("features", list(paths), list(viewpoints) if viewpoints else [None] * len(paths))

    def _submit(self, kind: str, paths: list[str], viewpoints: list[str | None]):
        done: Future = Future()
        self._jobs.put((kind, paths, viewpoints, done))
        return done.result()

    def _work(self) -> None:
        while True:
            jobs = [self._jobs.get()]
            # Everything else already waiting joins this batch, up to batch_size photos.
            while sum(len(j[1]) for j in jobs) < self.batch_size:
                try:
                    jobs.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            for kind in ("identify", "embed", "features"):
                batch = [j for j in jobs if j[0] == kind]
                if batch:
                    self._run(kind, batch)

    def _run(self, kind: str, jobs: list) -> None:
        paths = [p for _, job_paths, _, _ in jobs for p in job_paths]
        viewpoints = [v for _, _, job_viewpoints, _ in jobs for v in job_viewpoints]
        try:
            catalog = self.catalog
            # A catalogue rebuilt by other models meanwhile cannot be compared with these models' embeddings.
            check_same_models(catalog.models, self.models, f"catalogue {self.path}")
            if kind == "identify":
                answers = list(identify_paths_with_catalog(catalog, paths, top=self.top, batch_size=self.batch_size,
                                                           embedder=self.embedder, viewpoints=viewpoints,
                                                           **self._operating))
                threshold = verdict_threshold(catalog, **self._operating)
            elif kind == "embed":
                answers = list(self.embedder.embed_all(paths, self.batch_size, viewpoints))
            else:
                answers = embedder_features(self.embedder, self.batch_size)(paths, viewpoints)
        except BaseException as err:  # noqa: BLE001  (handed to the waiting requests, which report it)
            for *_, done in jobs:
                done.set_exception(err)
            return
        start = 0
        for _, job_paths, _, done in jobs:
            part = answers[start:start + len(job_paths)]
            done.set_result((part, threshold) if kind == "identify" else part)
            start += len(job_paths)
