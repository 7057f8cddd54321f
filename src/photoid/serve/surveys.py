"""The survey pages of `photoid serve`: import, the batch job, the review queue and the match view.

    /surveys                         the surveys, and the import form (photos or a folder, a CSV with mapped columns)
    /surveys/NAME                    the review queue; its filters are query parameters (`photoid.survey.queue`)
    /surveys/NAME/next               the match view of the next undecided photo for this reviewer (claimed)
    /surveys/NAME/photos/ID          the match view of one photo (top, threshold and view — the viewpoint of the
                                     catalogue photos compared — as query parameters, beside the queue's filters)
    /surveys/NAME/sightings.csv      the sightings table; /surveys/NAME/decisions.csv the survey's decisions

Imports read only what is uploaded: the photos' bytes (stored under their sha256) and an uploaded CSV, whose
paths are matched to the uploaded photos' names, never opened. A photo is served by its id in the survey's
table. Every decision goes through the catalogue's locked transaction (`photoid.catalog.decisions`) with the
reviewer's name, the survey's name and the candidates shown; the batch job runs in a thread and hands its photos
to the identifier's worker, so it shares the models (and their batches) with single uploads.
"""

from __future__ import annotations

import math
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from photoid.catalog import decisions
from photoid.core.errors import PhotoidError
from photoid.records.folder import VIEWPOINTS
from photoid.serve.reviewers import ask_reviewer, local_path, reviewer_of
from photoid.survey import export, importer
from photoid.survey.job import job_status
from photoid.survey.matching import MAX_TOP
from photoid.survey.queue import PAGE_SIZE, SORTS, Filters, build_rows, neighbours, select
from photoid.survey.store import DUPLICATE, METADATA, REFUSED, Survey, list_surveys

MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".bmp": "image/bmp",
               ".tif": "image/tiff", ".tiff": "image/tiff", ".webp": "image/webp"}
VIEW_CYCLE = ("", *VIEWPOINTS)  # V cycles the catalogue photos compared: all, then each viewpoint
MAX_CSV_BYTES = 20 * 2**20


def routes(site) -> list[Route]:
    pages = SurveyPages(site)
    return [
        Route("/surveys", pages.index), Route("/surveys/import", pages.import_survey, methods=["POST"]),
        Route("/surveys/{name:str}", pages.queue),
        Route("/surveys/{name:str}/photos", pages.upload, methods=["POST"]),
        Route("/surveys/{name:str}/identify", pages.identify, methods=["POST"]),
        Route("/surveys/{name:str}/job", pages.job),
        Route("/surveys/{name:str}/next", pages.next_photo),
        Route("/surveys/{name:str}/undo", pages.undo_last, methods=["POST"]),
        Route("/surveys/{name:str}/sightings.csv", pages.sightings_csv),
        Route("/surveys/{name:str}/decisions.csv", pages.decisions_csv),
        Route("/surveys/{name:str}/photos/{photo:str}", pages.match),
        Route("/surveys/{name:str}/photos/{photo:str}/image", pages.image),
        Route("/surveys/{name:str}/photos/{photo:str}/decide", pages.decide, methods=["POST"]),
        Route("/surveys/{name:str}/photos/{photo:str}/undo", pages.undo_photo, methods=["POST"]),
        Route("/surveys/{name:str}/photos/{photo:str}/favourite", pages.favourite, methods=["POST"]),
    ]


def explain_url(catalog, photo_sha256: str, image_id: str) -> str | None:
    """LOCAL-MATCH HOOK: the address of the picture explaining why the survey photo `photo_sha256` matches
    catalogue photo `image_id` (lines between matched points), or None when the catalogue has no local features.

    The match view shows its "Explain" button only where this gives an address, and loads the picture into the
    candidate's side on demand. Wire it to the local-matching route once it exists, e.g.
        return f"/explain/{photo_sha256}/{image_id}.png" if catalog.manifest.get("local_features") else None
    """
    return None


class SurveyPages:
    def __init__(self, site):
        self.site = site
        self._surveys: dict[str, Survey] = {}
        self._rows: dict[str, tuple] = {}

    # ------------------------------------------------------------------ shared

    def survey(self, name: str) -> Survey:
        held = self._surveys.get(name)
        if held is None:
            try:
                held = Survey(self.site.identifier.path, name)
            except PhotoidError as err:
                raise HTTPException(404, str(err)) from None
            self._surveys[name] = held
        return held

    def rows(self, survey: Survey):
        """The queue's rows, built again only when the photos, results, log, favourites or catalogue changed."""
        catalog = self.site.catalog
        photos, results, favourites, log = survey.photos(), survey.results(), survey.favourites(), self.site.log()
        key = (id(photos), id(results), id(log), favourites, catalog.manifest["files"]["table"]["sha256"])
        held = self._rows.get(survey.name)
        if held is None or held[0] != key:
            owners = dict(zip(catalog.table["image_id"], catalog.table["individual_id"]))
            held = (key, build_rows(photos, results, log, owners, favourites, self.site.identifier.new_label))
            self._rows[survey.name] = held
        return held[1]

    def new_label(self) -> str:
        return self.site.identifier.new_label

    def job_status(self, survey: Survey) -> dict:
        """`job.job_status`, running from the moment the page started the job (before its thread writes)."""
        status = job_status(survey)
        if self.site.jobs.running(survey.name) and status["state"] not in ("done", "failed", "stopped"):
            status["state"] = "running"
        return status

    # ------------------------------------------------------------------ import

    async def index(self, request: Request) -> Response:
        path = self.site.identifier.path
        surveys = []
        for name in list_surveys(path):
            survey = self.survey(name)
            photos = survey.photos()
            surveys.append({"name": name, "photos": int(len(photos)), "job": self.job_status(survey),
                            "refused": int((photos["status"] == REFUSED).sum()),
                            "duplicates": int((photos["status"] == DUPLICATE).sum())})
        return self.site.page(request, "surveys.html", surveys=surveys, fields=METADATA, limits=self.site.limits)

    async def _checked_form(self, request: Request, max_files: int, max_fields: int):
        length = request.headers.get("content-length", "")
        if not length.isdigit():
            raise HTTPException(411, "uploads must state their size (Content-Length)")
        limit = self.site.limits.max_request_bytes + MAX_CSV_BYTES
        if int(length) > limit:
            raise HTTPException(413, f"the upload is {int(length) / 2**20:.1f} MB, above the limit of "
                                     f"{limit / 2**20:.0f} MB per request; send fewer photos at a time")
        return await request.form(max_files=max_files, max_fields=max_fields)

    async def _photos_of(self, form) -> list[tuple[str, bytes]]:
        limits, photos = self.site.limits, []
        for upload in form.getlist("photos"):
            if not isinstance(upload, UploadFile) or not upload.filename:
                continue
            name = "".join(ch for ch in upload.filename if ch.isprintable())[:300] or "photo"
            data = await upload.read(limits.max_photo_bytes + 1)
            photos.append((name, data if len(data) <= limits.max_photo_bytes else None))
        return photos

    def _add(self, name: str, photos: list, defaults: dict) -> importer.ImportReport:
        too_big = [n for n, data in photos if data is None]
        report = importer.import_uploads(self.site.identifier.path, name,
                                         [(n, data) for n, data in photos if data is not None], defaults=defaults)
        limit = self.site.limits.max_photo_bytes / 2**20
        report.refused += [(n, f"is larger than {limit:.0f} MB") for n in too_big]
        return report

    async def import_survey(self, request: Request) -> Response:
        """A new survey (or one to add to): its name, an uploaded CSV with its column mapping, and photos."""
        limits = self.site.limits
        form = await self._checked_form(request, limits.max_files + 1, 40)
        name = str(form.get("name", "")).strip()
        csv_file = form.get("csv")
        csv_bytes = None
        if isinstance(csv_file, UploadFile) and csv_file.filename:
            csv_bytes = await csv_file.read(MAX_CSV_BYTES + 1)
            if len(csv_bytes) > MAX_CSV_BYTES:
                raise HTTPException(413, f"the CSV is larger than {MAX_CSV_BYTES // 2**20} MB")
        columns = {key: str(form.get(f"column_{key}", "")).strip() for key in ("path", *METADATA)}
        columns = {key: value for key, value in columns.items() if value}
        defaults = _defaults(form)
        photos = await self._photos_of(form)
        await form.close()
        if len([p for p in form.getlist("photos") if isinstance(p, UploadFile) and p.filename]) > limits.max_files:
            raise HTTPException(400, f"send at most {limits.max_files} photos per request")

        def work():
            importer.create_survey(self.site.identifier.path, name, csv_bytes=csv_bytes,
                                   columns=columns if csv_bytes is not None else None)
            return self._add(name, photos, defaults) if photos else importer.ImportReport(name, Path())

        return _reported(request, name, await run_in_threadpool(work))

    async def upload(self, request: Request) -> Response:
        """More photos for a survey (the import page sends a large folder in batches)."""
        name = request.path_params["name"]
        self.survey(name)
        form = await self._checked_form(request, self.site.limits.max_files, 10)
        defaults = _defaults(form)
        photos = await self._photos_of(form)
        await form.close()
        if not photos:
            raise HTTPException(400, "no photo was sent")
        return _reported(request, name, await run_in_threadpool(self._add, name, photos, defaults))

    # ------------------------------------------------------------------ the batch job

    async def identify(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.survey(name)
        self.site.jobs.start(name)
        return RedirectResponse(f"/surveys/{name}", status_code=303)

    async def job(self, request: Request) -> Response:
        survey = self.survey(request.path_params["name"])
        status = await run_in_threadpool(self.job_status, survey)
        error = self.site.jobs.error(survey.name)
        if error and status.get("state") != "running":
            status.update(state="failed", error=error)
        return JSONResponse(status)

    # ------------------------------------------------------------------ the queue

    async def queue(self, request: Request) -> Response:
        survey = self.survey(request.path_params["name"])
        filters = Filters.from_query(request.query_params)
        rows = await run_in_threadpool(self.rows, survey)
        selected = select(rows, filters, self.new_label())
        page_number = _int(request.query_params.get("page"), 1, 1, max(1, math.ceil(len(selected) / PAGE_SIZE)))
        shown = selected[(page_number - 1) * PAGE_SIZE:page_number * PAGE_SIZE]
        photos = survey.photos()
        problems = photos[photos["status"] != "ok"][["photo_id", "file_name", "status", "reason"]]
        status = self.job_status(survey)
        choices = {key: sorted({getattr(r, key) for r in rows if getattr(r, key)}) for key in ("survey", "station")}
        counts = {"undecided": sum(r.state == "undecided" for r in rows), "all": len(rows),
                  "identified": sum(r.identified for r in rows)}
        return self.site.page(request, "survey.html", survey=survey.name, filters=filters, rows=shown,
                              selected=len(selected), page=page_number, pages=max(1, math.ceil(len(selected) / PAGE_SIZE)),
                              sorts=SORTS, choices=choices, counts=counts, job=status,
                              job_error=self.site.jobs.error(survey.name), problems=problems.to_dict("records"),
                              all_viewpoints=VIEWPOINTS)

    async def next_photo(self, request: Request) -> Response:
        reviewer = reviewer_of(request)
        if not reviewer:
            return ask_reviewer(request)
        survey = self.survey(request.path_params["name"])
        filters = Filters.from_query(request.query_params)
        rows = await run_in_threadpool(self.rows, survey)
        chosen = self.site.claims.next_for(survey.name, select(rows, filters, self.new_label()), reviewer)
        if chosen is None:
            return self.site.page(request, "survey_done.html", survey=survey.name, filters=filters)
        query = filters.query()
        return RedirectResponse(f"/surveys/{survey.name}/photos/{chosen.photo_id}" + (f"?{query}" if query else ""),
                                status_code=303)

    # ------------------------------------------------------------------ the match view

    def _view(self, survey: Survey, photo_id: str, params) -> dict:
        """Everything the match view shows for one photo, with the candidates for `params` (top, threshold,
        viewpoint) against the catalogue as it is now."""
        rows = self.rows(survey)
        row = next((r for r in rows if r.photo_id == photo_id), None)
        if row is None:
            try:
                survey.photo(photo_id)
            except PhotoidError as err:
                raise HTTPException(404, str(err)) from None
            raise PhotoidError(f"photo {photo_id} of survey {survey.name} was not imported as a readable photo "
                               "(refused, or a duplicate); the survey's page lists why")
        top = _int(params.get("top"), self.site.identifier.top, 1, MAX_TOP)
        threshold = _float(params.get("threshold"))
        viewpoint = params.get("view", "") if params.get("view", "") in VIEWPOINTS else ""  # of the catalogue
        candidates, used = [], None
        if row.identified:
            results = survey.results()
            probabilities = results.probabilities[row.index] if results.probabilities.shape[1] else None
            candidates, used = self.site.scorer.match(self.site.catalog, results.embeddings[row.index],
                                                      probabilities, top=top, threshold=threshold,
                                                      viewpoint=viewpoint or None)
        return {"row": row, "rows": rows, "candidates": candidates, "top": top, "threshold": used,
                "threshold_given": threshold, "viewpoint": viewpoint}

    async def match(self, request: Request) -> Response:
        survey = self.survey(request.path_params["name"])
        photo_id = request.path_params["photo"]
        params = request.query_params
        view = await run_in_threadpool(self._view, survey, photo_id, params)
        row, rows = view["row"], view["rows"]
        filters = Filters.from_query(params)
        reviewer = reviewer_of(request)
        claims = self.site.claims
        held_by = claims.holder(survey.name, photo_id)
        if row.state == "undecided" and reviewer and (held_by in (None, reviewer)):
            claims.claim(survey.name, photo_id, reviewer)
            held_by = reviewer
        before, after = neighbours(rows, select(rows, filters, self.new_label()), photo_id, filters.sort)
        catalog = self.site.catalog
        for candidate in view["candidates"]:
            candidate.explain = [explain_url(catalog, row.sha256, image_id) for image_id, _ in candidate.photos]
        view_index = VIEW_CYCLE.index(view["viewpoint"])
        next_view = VIEW_CYCLE[(view_index + 1) % len(VIEW_CYCLE)]
        keep = {"top": view["top"] if view["top"] != self.site.identifier.top else "",
                "threshold": view["threshold_given"] if view["threshold_given"] is not None else "",
                "view": view["viewpoint"]}
        return self.site.page(
            request, "match.html", survey=survey.name, row=row, candidates=view["candidates"],
            top=view["top"], threshold=view["threshold"], threshold_given=view["threshold_given"],
            viewpoint=view["viewpoint"], all_viewpoints=VIEWPOINTS, next_view=next_view, keep=keep,
            filters=filters, before=before, after=after, held_by=held_by, suggestion=self._suggestion(survey),
            catalog_has_viewpoints="viewpoint" in catalog.table.columns,
            photo_query=_query(filters, keep), max_top=MAX_TOP, filter_pairs=parse_qsl(filters.query()),
            view_query=_query(filters, {**keep, "view": next_view}),
            calibrated=bool((catalog.calibration or {}).get("probability")))

    def _suggestion(self, survey: Survey) -> str:
        """A new individual's id to start from: the survey's name and the next free number."""
        taken = set(self.site.catalog.table["individual_id"])
        n = 1 + sum(1 for name in taken if name.startswith(f"{survey.name}-"))
        while f"{survey.name}-{n:03d}" in taken:
            n += 1
        return f"{survey.name}-{n:03d}"

    async def image(self, request: Request) -> Response:
        """The photo as imported, full size (looked up by its id in the survey's table, never by a given path)."""
        survey = self.survey(request.path_params["name"])
        try:
            photo = survey.photo(request.path_params["photo"])
        except PhotoidError as err:
            raise HTTPException(404, str(err)) from None
        path = Path(photo["path"]) if photo["path"] else None
        if path is None or not path.is_file():
            raise HTTPException(404, "this photo's file is no longer where it was imported from")
        return FileResponse(path, media_type=MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream"))

    # ------------------------------------------------------------------ decisions

    async def decide(self, request: Request) -> Response:
        survey = self.survey(request.path_params["name"])
        photo_id = request.path_params["photo"]
        reviewer = reviewer_of(request)
        if not reviewer:
            raise HTTPException(403, "say who you are first (the page asks your name once)")
        form = await request.form(max_files=0, max_fields=20)
        decision = str(form.get("decision", ""))
        individual = str(form.get("individual_id", "")).strip()
        shown = {key: str(form.get(key, "")) for key in ("top", "threshold", "view")}
        back = local_path(str(form.get("back", "")), f"/surveys/{survey.name}/photos/{photo_id}")

        def work():
            view = self._view(survey, photo_id, shown)  # the candidates shown, recomputed to be logged
            row = view["row"]
            if not row.identified:
                raise PhotoidError(f"{row.file_name} is not identified yet: run the survey's batch job first")
            results = survey.results()
            candidates = view["candidates"]
            photo = decisions.Photo(row.sha256, Path(survey.photo(photo_id)["path"]), row.file_name,
                                    [c.label for c in candidates], [c.score for c in candidates],
                                    view["threshold"], row.viewpoint or None)
            adding = decision in decisions.ADDING
            return decisions.decide(self.site.identifier.path, photo, decision, individual,
                                    results.embeddings[row.index] if adding else None,
                                    self.site.identifier.models if adding else None, reviewer=reviewer,
                                    survey=survey.name)

        await run_in_threadpool(work)
        if decision == "skip":
            self.site.claims.release(survey.name, photo_id, reviewer)
            next_query = str(form.get("queue", ""))
            return RedirectResponse(f"/surveys/{survey.name}/next" + (f"?{next_query}" if next_query else ""),
                                    status_code=303)
        return RedirectResponse(back, status_code=303)

    async def undo_photo(self, request: Request) -> Response:
        """M pressed again: the photo's decision in effect is undone."""
        survey = self.survey(request.path_params["name"])
        photo_id = request.path_params["photo"]
        form = await request.form(max_files=0, max_fields=5)
        back = local_path(str(form.get("back", "")), f"/surveys/{survey.name}/photos/{photo_id}")
        row = next((r for r in self.rows(survey) if r.photo_id == photo_id), None)
        if row is None or not row.decision_id:
            raise HTTPException(400, "this photo has no decision in effect to undo")
        await run_in_threadpool(lambda: decisions.undo(self.site.identifier.path, row.decision_id,
                                                       reviewer=reviewer_of(request)))
        return RedirectResponse(back, status_code=303)

    async def undo_last(self, request: Request) -> Response:
        """U: this reviewer's latest decision in effect is undone; back to that photo when it is this survey's."""
        survey = self.survey(request.path_params["name"])
        reviewer = reviewer_of(request)
        if not reviewer:
            raise HTTPException(403, "say who you are first (the page asks your name once)")
        form = await request.form(max_files=0, max_fields=5)
        _, row = await run_in_threadpool(lambda: decisions.undo(self.site.identifier.path, latest_of=reviewer,
                                                                reviewer=reviewer))
        photos = survey.photos()
        match = photos.loc[(photos["sha256"] == row["photo_sha256"]) & (photos["status"] == "ok"), "photo_id"]
        query = str(form.get("query", ""))
        if row["photo_sha256"] and len(match):
            return RedirectResponse(f"/surveys/{survey.name}/photos/{match.iloc[0]}" + (f"?{query}" if query else ""),
                                    status_code=303)
        return RedirectResponse(local_path(str(form.get("back", "")), f"/surveys/{survey.name}"), status_code=303)

    async def favourite(self, request: Request) -> Response:
        survey = self.survey(request.path_params["name"])
        photo_id = request.path_params["photo"]
        form = await request.form(max_files=0, max_fields=5)
        marked = photo_id in survey.favourites()
        await run_in_threadpool(survey.set_favourite, photo_id, not marked)
        return RedirectResponse(local_path(str(form.get("back", "")), f"/surveys/{survey.name}/photos/{photo_id}"),
                                status_code=303)

    # ------------------------------------------------------------------ export

    async def sightings_csv(self, request: Request) -> Response:
        survey = self.survey(request.path_params["name"])
        table = await run_in_threadpool(export.sightings, self.site.catalog, survey, self.new_label())
        return _csv(table, f"{survey.name}-sightings.csv")

    async def decisions_csv(self, request: Request) -> Response:
        survey = self.survey(request.path_params["name"])
        table = await run_in_threadpool(export.survey_decisions, self.site.catalog, survey.name)
        return _csv(table, f"{survey.name}-decisions.csv")


def _defaults(form) -> dict:
    """The metadata a form gives every photo of an upload (without a CSV)."""
    return {key: str(form.get(f"default_{key}", "")) for key in ("station", "survey", "date", "viewpoint")}


def _reported(request: Request, name: str, report: importer.ImportReport) -> Response:
    """An import's report as JSON (the page's script), else back to the survey."""
    if request.query_params.get("format") == "json":
        return JSONResponse(report.as_json())
    return RedirectResponse(f"/surveys/{name}", status_code=303)


def _csv(frame, name: str) -> Response:
    return Response(frame.to_csv(index=False), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _int(value, default: int, low: int, high: int) -> int:
    try:
        return min(max(int(value), low), high)
    except (TypeError, ValueError):
        return default


def _float(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _query(filters: Filters, keep: dict) -> str:
    """The queue's filters and the match view's settings, as query parameters."""
    extra = urlencode([(k, v) for k, v in keep.items() if v not in ("", None)])
    base = filters.query()
    return "&".join(part for part in (base, extra) if part)
