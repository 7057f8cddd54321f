"""The survey pages of `photoid serve`: import, the batch job, the review queue and the match view.

    /surveys                         the surveys, and the import form (photos or a folder, a CSV with mapped columns)
    /surveys/NAME                    the review queue; its filters are query parameters (`photoid.survey.queue`)
    /surveys/NAME/next               the match view of the next undecided photo for this reviewer (claimed)
    /surveys/NAME/photos/ID          the match view of one photo (`photoid.serve.match`)
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

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from photoid.core.errors import PhotoidError
from photoid.records.folder import VIEWPOINTS
from photoid.serve.match import MatchPages, int_param
from photoid.serve.reviewers import ask_reviewer, reviewer_of
from photoid.survey import export, importer
from photoid.survey.job import job_status
from photoid.survey.queue import PAGE_SIZE, SORTS, Filters, build_rows, select
from photoid.survey.store import DUPLICATE, METADATA, REFUSED, Survey, list_surveys

MAX_CSV_BYTES = 20 * 2**20


def routes(site) -> list[Route]:
    pages = SurveyPages(site)
    matching = MatchPages(pages)
    return [
        Route("/surveys", pages.index), Route("/surveys/import", pages.import_survey, methods=["POST"]),
        Route("/surveys/{name:str}", pages.queue),
        Route("/surveys/{name:str}/photos", pages.upload, methods=["POST"]),
        Route("/surveys/{name:str}/identify", pages.identify, methods=["POST"]),
        Route("/surveys/{name:str}/job", pages.job),
        Route("/surveys/{name:str}/next", pages.next_photo),
        Route("/surveys/{name:str}/undo", matching.undo_last, methods=["POST"]),
        Route("/surveys/{name:str}/sightings.csv", pages.sightings_csv),
        Route("/surveys/{name:str}/decisions.csv", pages.decisions_csv),
        Route("/surveys/{name:str}/photos/{photo:str}", matching.match),
        Route("/surveys/{name:str}/photos/{photo:str}/image", matching.image),
        Route("/surveys/{name:str}/photos/{photo:str}/decide", matching.decide, methods=["POST"]),
        Route("/surveys/{name:str}/photos/{photo:str}/undo", matching.undo_photo, methods=["POST"]),
        Route("/surveys/{name:str}/photos/{photo:str}/favourite", matching.favourite, methods=["POST"]),
    ]


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
        pages = max(1, math.ceil(len(selected) / PAGE_SIZE))
        page_number = int_param(request.query_params.get("page"), 1, 1, pages)
        shown = selected[(page_number - 1) * PAGE_SIZE:page_number * PAGE_SIZE]
        photos = survey.photos()
        problems = photos[photos["status"] != "ok"][["photo_id", "file_name", "status", "reason"]]
        status = self.job_status(survey)
        choices = {key: sorted({getattr(r, key) for r in rows if getattr(r, key)}) for key in ("survey", "station")}
        counts = {"undecided": sum(r.state == "undecided" for r in rows), "all": len(rows),
                  "identified": sum(r.identified for r in rows)}
        return self.site.page(request, "survey.html", survey=survey.name, filters=filters, rows=shown,
                              selected=len(selected), page=page_number, pages=pages,
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
