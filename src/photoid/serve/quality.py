"""Quality control by individual in `photoid serve`: its photos ordered by how well they match its other photos,
outliers flagged, and the changes a reviewer makes from there.

    /individuals/NAME            the photos, least similar first, each with the individual it resembles most
    POST /individuals/NAME/move  one photo to another individual (known or new)
    POST /individuals/NAME/merge every photo of NAME into another individual (found to be the same animal)
    POST /individuals/NAME/split the chosen photos to a new individual

Each change is one locked, logged transaction of the catalogue (`photoid.catalog.decisions.move_photos`), with
the reviewer's name and the scores the page showed; the page then offers to undo it (the decision log's undo
moves the photos back).
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from photoid.catalog import decisions
from photoid.catalog.quality import individual_quality
from photoid.serve.reviewers import reviewer_of


def routes(site) -> list[Route]:
    pages = QualityPages(site)
    return [Route("/individuals/{individual:str}", pages.individual),
            Route("/individuals/{individual:str}/move", pages.move, methods=["POST"]),
            Route("/individuals/{individual:str}/merge", pages.merge, methods=["POST"]),
            Route("/individuals/{individual:str}/split", pages.split, methods=["POST"])]


class QualityPages:
    def __init__(self, site):
        self.site = site
        self._quality: dict = {}

    def quality(self, name: str):
        """The individual's photos in QC order, computed again only when the catalogue changed."""
        catalog = self.site.catalog
        threshold = self.site.identifier.threshold()
        key = (catalog.manifest["files"]["embeddings"]["sha256"], catalog.manifest["files"]["table"]["sha256"],
               name, threshold)
        if key not in self._quality:
            if len(self._quality) > 64:
                self._quality.clear()
            self._quality[key] = individual_quality(catalog, name, threshold)
        return self._quality[key]

    async def individual(self, request: Request) -> Response:
        name = request.path_params["individual"]
        catalog = self.site.catalog
        photos = await run_in_threadpool(self.quality, name)
        if not photos:
            raise HTTPException(404, f"no individual {name!r} in the catalogue")
        table = catalog.table
        sources = dict(zip(table["image_id"], table["source"]))
        done = request.query_params.get("done", "")
        log = self.site.log()
        active = set(decisions.active_decisions(log)["decision_id"])
        recent = log[log["decision_id"] == done].to_dict("records") if done in active else []
        others = sorted(set(table["individual_id"]) - {name})
        return self.site.page(request, "individual.html", name=name, photos=photos, sources=sources,
                              others=others, recent=recent[0] if recent else None,
                              outliers=sum(p.outlier for p in photos))

    async def _change(self, request: Request, work) -> Response:
        form = await request.form(max_files=0, max_fields=2000)
        name = request.path_params["individual"]
        reviewer = reviewer_of(request)
        _, row = await run_in_threadpool(work, form, name, reviewer)
        stay = name if row["decision"] != "merge" else row["individual_id"]
        return RedirectResponse(f"/individuals/{quote(stay, safe='')}?done={row['decision_id']}", status_code=303)

    def _shown(self, name: str, image_ids: list[str]) -> list[tuple[str, float]]:
        """What the page showed for these photos: each one's score for its own individual and its best other."""
        shown = []
        for photo in self.quality(name):
            if photo.image_id in image_ids:
                shown += [(name, photo.own), (photo.best_other, photo.best_other_score)] if photo.best_other else [
                    (name, photo.own)]
        return shown

    async def move(self, request: Request) -> Response:
        def work(form, name, reviewer):
            image_id, target = str(form.get("image_id", "")), str(form.get("to", "")).strip()
            return decisions.move_photos(self.site.identifier.path, [image_id], target, reviewer=reviewer,
                                         shown=self._shown(name, [image_id]), expected_from=name)

        return await self._change(request, work)

    async def merge(self, request: Request) -> Response:
        def work(form, name, reviewer):
            target = str(form.get("into", "")).strip()
            return decisions.merge_individuals(self.site.identifier.path, name, target, reviewer=reviewer)

        return await self._change(request, work)

    async def split(self, request: Request) -> Response:
        def work(form, name, reviewer):
            image_ids = [str(v) for v in form.getlist("image_id")]
            target = str(form.get("new_id", "")).strip()
            return decisions.move_photos(self.site.identifier.path, image_ids, target, decision="split",
                                         reviewer=reviewer, shown=self._shown(name, image_ids), expected_from=name)

        return await self._change(request, work)
