"""Batch identification of a survey: every readable photo through the catalogue's models, resumable at any point.

    photoid survey identify --catalog C --name NAME        (the page's "Identify" button starts the same job)

The photos not yet answered are sent to the models batch by batch; each batch's answers (embeddings,
probabilities, candidates when identified, why a photo could not be read) are written as one result file of the
survey, atomically, before the next batch starts, and `job.json` records the progress. Killed, or its server
restarted, the job has lost at most the batch in flight: started again, it sends only the photos without an
answer. One job runs per survey at a time (an exclusive lock, `.job.lock`, that the kernel releases when its
holder dies); a second is refused, naming the first.

The model call is handed in (`features`): `photoid survey identify` loads the catalogue's models once
(`embedder_features`), `photoid serve` hands its own worker thread, which batches the job's photos with every
other request's. The candidates are scored by `photoid.survey.matching.Scorer`, as `photoid identify --catalog`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from photoid.catalog.build import MANIFEST, Catalog, read_catalog
from photoid.core import io as pio
from photoid.core.errors import PhotoidError
from photoid.survey.matching import Scorer
from photoid.survey.store import JOB_FILE, OK, RESULTS_DIR, Survey, now, write_chunk

JOB_LOCK = ".job.lock"
DEFAULT_BATCH = 16
MAX_YIELD_S = 1.0  # a job giving way to pages waits at most this long per batch, so it is never starved
# (paths, viewpoints or None) -> per path: (embedding, probabilities, None) or (None, None, why unreadable)
Features = Callable[[list[str], "list[str | None] | None"], list[tuple]]


def embedder_features(embedder, batch_size: int = DEFAULT_BATCH) -> Features:
    """The model call of a loaded `photoid.inference.embedder.Embedder`: embeddings and mean probabilities."""

    def features(paths: list[str], viewpoints: list[str | None] | None) -> list[tuple]:
        answers: dict[str, tuple] = {}
        for _, readable, embeddings, probabilities, errors in embedder.batches(
                paths, batch_size, probabilities=True, viewpoints=viewpoints):
            answers.update({path: (None, None, reason) for path, reason in errors.items()})
            for i, path in enumerate(readable):
                answers[path] = (embeddings[i], None if probabilities is None else probabilities[i], None)
        return [answers[path] for path in paths]

    return features


@contextlib.contextmanager
def job_lock(survey_path: Path) -> Iterator[None]:
    """Hold the survey's job lock, or refuse at once (naming the holder) when another job holds it."""
    survey_path.mkdir(parents=True, exist_ok=True)
    fd = os.open(survey_path / JOB_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 500, 0).decode("utf-8", "replace")
            raise PhotoidError(f"survey {survey_path.name} is being identified already ({holder or 'another job'}); "
                               "wait for it, or stop it first") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {now()}".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def is_running(survey_path: Path) -> bool:
    """Whether a job holds the survey's job lock now (in this process or another)."""
    if not (survey_path / JOB_LOCK).is_file():
        return False
    fd = os.open(survey_path / JOB_LOCK, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def job_status(survey: Survey) -> dict:
    """The job's progress as recorded, its `state` being `running` only while a job really runs: a job whose
    process died reads `interrupted` (started again, it resumes)."""
    photos = survey.photos()
    readable = int((photos["status"] == OK).sum())
    answered = int(survey.results().done[(photos["status"] == OK).to_numpy()].sum()) if readable else 0
    status = dict(survey.job() or {"state": "not started"})
    status.update(total=readable, done=answered)
    if status["state"] == "running" and not is_running(survey.path):
        status["state"] = "interrupted"
    if status["state"] == "done" and answered < readable:
        status["state"] = "incomplete"  # photos imported after the job ran
    return status


def identify_survey(catalog_dir: str | Path, name: str, features: Features, scorer: Scorer, *,
                    catalog: Callable[[], Catalog] | None = None, batch_size: int = DEFAULT_BATCH,
                    progress: Callable[[int, int], None] | None = None,
                    stop: threading.Event | None = None, before_batch: Callable[[], None] | None = None) -> dict:
    """Identify every readable photo of survey `name` still without an answer; returns the final `job.json`.

    `catalog()` gives the catalogue as it is now (default: read again when its manifest changed), so each batch
    is scored against the latest one. `progress(done, total)` is called after each batch; `stop`, when set,
    ends the job after the batch in flight (state `stopped`, resumable); `before_batch()` is called before each
    batch (a server lets its pages go first there).
    """
    survey = Survey(catalog_dir, name)
    catalog = catalog or _current_catalog(Path(catalog_dir))
    with job_lock(survey.path):
        for leftover in (survey.path / RESULTS_DIR).glob(".*.tmp*"):  # a batch killed while being written
            leftover.unlink(missing_ok=True)
        photos = survey.photos()
        readable = (photos["status"] == OK).to_numpy()
        done = survey.results().done
        todo = np.flatnonzero(readable & ~done[:len(photos)])
        total, answered = int(readable.sum()), int((readable & done).sum())
        status = {"state": "running", "started": now(), "updated": now(), "total": total, "done": answered,
                  "batch_size": batch_size, "error": None, "pid": os.getpid(), "new_label": scorer.new_label}
        pio.write_json(survey.path / JOB_FILE, status)
        number = 1 + max((int(p.stem.split("-")[1]) for p in (survey.path / RESULTS_DIR).glob("chunk-*.npz")),
                         default=0)
        try:
            for start in range(0, len(todo), batch_size):
                if stop is not None and stop.is_set():
                    status["state"] = "stopped"
                    break
                if before_batch is not None:
                    before_batch()
                rows = todo[start:start + batch_size]
                _identify_batch(survey, photos.iloc[rows], rows, number, features, scorer, catalog())
                number += 1
                answered += len(rows)
                status.update(done=answered, updated=now())
                pio.write_json(survey.path / JOB_FILE, status)
                if progress is not None:
                    progress(answered, total)
            else:
                status["state"] = "done"
        except BaseException as err:
            if isinstance(err, Exception):
                status.update(state="failed", error=str(err) if isinstance(err, PhotoidError) else
                              f"{type(err).__name__}: {err}")
            else:  # Ctrl-C: stopped by the user, resumable like a kill
                status["state"] = "stopped"
            status["updated"] = now()
            pio.write_json(survey.path / JOB_FILE, status)
            raise
        status["updated"] = now()
        pio.write_json(survey.path / JOB_FILE, status)
    return status


def _identify_batch(survey: Survey, photos, rows: np.ndarray, number: int, features: Features, scorer: Scorer,
                    catalog: Catalog) -> None:
    paths = photos["path"].tolist()
    # A viewpoint mirrors right views for models whose records mirrored them; for other models it is metadata.
    viewpoints = [v or None for v in photos["viewpoint"]] if scorer.mirrors_right else None
    answers = features(paths, viewpoints)
    readable = [i for i, (embedding, _, _) in enumerate(answers) if embedding is not None]
    dim = catalog.dim
    embeddings = np.zeros((len(rows), dim), np.float32)
    n_classes = len(scorer.classes or ())
    probabilities = np.zeros((len(rows), n_classes), np.float32)
    for i in readable:
        embeddings[i] = answers[i][0]
        if answers[i][1] is not None and n_classes:
            probabilities[i] = answers[i][1]
    labels = np.full((len(rows), scorer.top), "", dtype=object)
    scores = np.full((len(rows), scorer.top), np.nan, np.float32)
    if readable:
        found, found_scores, _ = scorer.candidates(catalog, embeddings[readable],
                                                   probabilities[readable] if n_classes else None)
        labels[readable], scores[readable] = found, found_scores
    errors = [answers[i][2] or "" for i in range(len(rows))]
    write_chunk(survey.path, number, rows, embeddings, probabilities, labels, scores, errors)


def _current_catalog(path: Path) -> Callable[[], Catalog]:
    held: dict = {}

    def current() -> Catalog:
        manifest = json.dumps(pio.read_json(path / MANIFEST), sort_keys=True)
        if held.get("manifest") != manifest:
            held.update(manifest=manifest, catalog=read_catalog(path))
        return held["catalog"]

    return current


class BackgroundJobs:
    """Survey jobs run in threads of a long-lived process (`photoid serve`), one per survey at a time."""

    def __init__(self, catalog_dir: str | Path, features: Features, scorer: Scorer,
                 catalog: Callable[[], Catalog] | None = None, batch_size: int = DEFAULT_BATCH,
                 busy: Callable[[], bool] | None = None):
        """`busy()` says that pages are being answered: the next batch waits for them (at most MAX_YIELD_S), so
        a reviewer's page never shares the processor with a whole model batch it could have avoided."""
        self.catalog_dir, self.features, self.scorer = Path(catalog_dir), features, scorer
        self.catalog, self.batch_size, self.busy = catalog, batch_size, busy
        self._threads: dict[str, tuple[threading.Thread, threading.Event]] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def start(self, name: str) -> bool:
        """Start (or resume) survey `name`'s job; False when it is running already."""
        survey = Survey(self.catalog_dir, name)
        with self._lock:
            running = self._threads.get(name)
            if (running and running[0].is_alive()) or is_running(survey.path):
                return False
            stop = threading.Event()
            thread = threading.Thread(target=self._run, args=(name, stop), name=f"photoid-survey-{name}",
                                      daemon=True)
            self._threads[name] = (thread, stop)
            self._errors.pop(name, None)
            thread.start()
            return True

    def stop(self, name: str) -> None:
        held = self._threads.get(name)
        if held:
            held[1].set()

    def _run(self, name: str, stop: threading.Event) -> None:
        try:
            identify_survey(self.catalog_dir, name, self.features, self.scorer, catalog=self.catalog,
                            batch_size=self.batch_size, stop=stop, before_batch=self._give_way)
        except PhotoidError as err:
            self._errors[name] = str(err)  # recorded in job.json too, unless the lock was refused
        except Exception as err:  # noqa: BLE001  (a thread's failure is shown on the page and in job.json)
            import traceback

            traceback.print_exc()
            self._errors[name] = f"{type(err).__name__}: {err}"

    def _give_way(self) -> None:
        deadline = time.monotonic() + MAX_YIELD_S
        while self.busy is not None and self.busy() and time.monotonic() < deadline:
            time.sleep(0.005)

    def running(self, name: str) -> bool:
        """Whether this process runs survey `name`'s job now (started, perhaps not yet holding its lock)."""
        held = self._threads.get(name)
        return bool(held and held[0].is_alive())

    def wait(self, name: str, timeout: float | None = None) -> None:
        held = self._threads.get(name)
        if held:
            held[0].join(timeout)

    def error(self, name: str) -> str | None:
        return self._errors.get(name)
