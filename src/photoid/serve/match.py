"""The match view of `photoid serve`: one survey photo against its candidates, and the decisions made there.

    /surveys/NAME/photos/ID          the match view (top, threshold and view — the viewpoint of the catalogue
                                     photos compared — as query parameters, beside the queue's filters)
    /surveys/NAME/photos/ID/image    the photo as imported, full size
    POST .../decide, .../undo, .../favourite, and /surveys/NAME/undo (the reviewer's last decision)

The candidates are recomputed against the catalogue as it is now (`photoid.survey.matching.Scorer`); a decision
records the candidates shown (recomputed with the settings the page had), the reviewer and the survey, through
the catalogue's locked transaction (`photoid.catalog.decisions`). Viewing an undecided photo claims it for the
reviewer (`photoid.survey.queue.Claims`).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response

from photoid.catalog import decisions
from photoid.core.errors import PhotoidError
from photoid.records.folder import VIEWPOINTS
from photoid.serve.reviewers import local_path, reviewer_of
from photoid.survey.matching import MAX_TOP
from photoid.survey.queue import Filters, neighbours, select
from photoid.survey.store import Survey

MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".bmp": "image/bmp",
               ".tif": "image/tiff", ".tiff": "image/tiff", ".webp": "image/webp"}
VIEW_CYCLE = ("", *VIEWPOINTS)  # V cycles the catalogue photos compared: all, then each viewpoint


def explain_url(catalog, photo_sha256: str, image_id: str) -> str | None:
    """LOCAL-MATCH HOOK: the address of the picture explaining why the survey photo `photo_sha256` matches
    catalogue photo `image_id` (lines between matched points), or None when the catalogue has no local features.

    The match view shows its "Explain" button only where this gives an address, and loads the picture into the
    candidate's side on demand (the page's `/explain` route, `Identifier.explain`).
    """
    return f"/explain/{photo_sha256}/{image_id}.png" if catalog.manifest.get("local_features") else None


class MatchPages:
    """The match view's pages, sharing the survey pages' caches (`surveys.SurveyPages`)."""

    def __init__(self, surveys):
        self.surveys, self.site = surveys, surveys.site

    def survey(self, name: str) -> Survey:
        return self.surveys.survey(name)

    def rows(self, survey: Survey):
        return self.surveys.rows(survey)

    def new_label(self) -> str:
        return self.site.identifier.new_label

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
        top = int_param(params.get("top"), self.site.identifier.top, 1, MAX_TOP)
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


def int_param(value, default: int, low: int, high: int) -> int:
    """A query parameter as an integer in [low, high]; `default` when it is not one."""
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
