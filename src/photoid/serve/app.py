"""The pages of `photoid serve` (Starlette): identify, decide, browse, download; and what guards them.

Survey pages (import, batch job, review queue, match view) are `photoid.serve.surveys`'; an individual's quality
control (outliers, move, merge, split) is `photoid.serve.quality`'s; who decides is `photoid.serve.reviewers`'.

Every request passes `Guard` first: the Host header must name this server when it listens on loopback only (a web
page elsewhere cannot reach it through a DNS name that points to 127.0.0.1), a form must come from this server's own
pages (Origin), and when a token is set it must come with the request (`?token=` once, then a cookie). No part of
a request is ever joined to a path: photos are looked up by their image id in the catalogue's table, by a
sha256 checked to be 64 hex digits, or by their id in a survey's table. Errors are pages that say what went
wrong; a bug's traceback goes to the server's console only.
"""

from __future__ import annotations

import hmac
import io
import json
import secrets
import sys
import traceback
from collections import OrderedDict
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from photoid.catalog import decisions
from photoid.catalog.build import summary
from photoid.core.errors import PhotoidError
from photoid.records.folder import VIEWPOINTS
from photoid.serve import quality, reviewers, surveys
from photoid.serve.identifier import Identifier, Result
from photoid.serve.uploads import Reviews
from photoid.survey.job import BackgroundJobs
from photoid.survey.matching import Scorer
from photoid.survey.queue import DEFAULT_CLAIM_S, Claims

HERE = Path(__file__).parent
TOKEN_COOKIE = "photoid_token"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
KEPT_REVIEWS = 500
REFERENCES = 3  # catalogue photos shown beside each candidate


class Limits:
    def __init__(self, max_files: int = 50, max_photo_mb: float = 25, max_request_mb: float = 200):
        self.max_files, self.max_photo_bytes = max_files, int(max_photo_mb * 2**20)
        self.max_request_bytes = int(max_request_mb * 2**20)


class Site:
    """What every page shares: the loaded models and catalogue, the templates, the limits, the reviewers' claims,
    the survey jobs, and caches of what is read again only when it changed."""

    def __init__(self, identifier: Identifier, limits: Limits, claim_seconds: float, reviewer_tokens: bool):
        self.identifier, self.limits = identifier, limits
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.scorer = Scorer.from_embedder(identifier.embedder, top=identifier.top, **identifier.operating)
        self.claims = Claims(claim_seconds)
        self.pages_in_flight = 0  # pages being answered now (`PagesFirst`): survey jobs wait for them
        self.jobs = BackgroundJobs(identifier.path, identifier.features, self.scorer,
                                   catalog=lambda: identifier.catalog, batch_size=identifier.batch_size,
                                   busy=lambda: self.pages_in_flight > 0)
        self.reviewer_tokens = reviewer_tokens  # reviewers are named by their tokens
        self._log: tuple = (None, None)

    @property
    def catalog(self):
        return self.identifier.catalog

    def log(self):
        """The decision log, parsed again only when the manifest names another one."""
        catalog = self.catalog
        key = (catalog.manifest.get(decisions.LOG_KEY) or {}).get("sha256")
        if self._log[0] != key or self._log[1] is None:
            self._log = (key, decisions.read_log(catalog))
        return self._log[1]

    def page(self, request: Request, template: str, status: int = 200, **context) -> Response:
        catalog = self.catalog
        context.update(catalog_path=str(self.identifier.path), n_images=len(catalog.table),
                       n_individuals=int(catalog.table["individual_id"].nunique()),
                       new_label=self.identifier.new_label, reviewer=reviewers.reviewer_of(request),
                       reviewer_fixed=self.reviewer_tokens,
                       viewpoints=VIEWPOINTS if self.identifier.mirrors_right else ())
        return self.templates.TemplateResponse(request, template, context, status_code=status)


def create_app(identifier: Identifier, *, token: str | None = None, allowed_hosts: list[str] | None = None,
               limits: Limits | None = None, reviewer_tokens: dict[str, str] | None = None,
               claim_seconds: float = DEFAULT_CLAIM_S) -> Starlette:
    """The page for one loaded `Identifier`. `allowed_hosts` (host[:port]) None accepts any Host header.
    `reviewer_tokens` ({token: name}) lets each reviewer in with their own token, which names them."""
    limits = limits or Limits()
    site = Site(identifier, limits, claim_seconds, bool(reviewer_tokens))
    page = site.page
    reviews: OrderedDict[str, list[str]] = OrderedDict()
    kept_reviews = Reviews(identifier)
    references_cache: dict = {}

    def references(label: str) -> list[str]:
        catalog = identifier.catalog
        if references_cache.get("manifest") is not catalog.manifest:
            groups = catalog.table.groupby("individual_id", sort=False)["image_id"]
            references_cache.update(manifest=catalog.manifest, by_id={k: list(v) for k, v in groups})
        return references_cache["by_id"].get(label, [])[:REFERENCES]

    # ------------------------------------------------------------------ identify and decide

    async def home(request: Request) -> Response:
        return page(request, "identify.html", limits=limits)

    async def identify(request: Request) -> Response:
        length = request.headers.get("content-length", "")
        if not length.isdigit():
            raise HTTPException(411, "uploads must state their size (Content-Length)")
        if int(length) > limits.max_request_bytes:
            raise HTTPException(413, f"the upload is {int(length) / 2**20:.1f} MB, above the limit of "
                                     f"{limits.max_request_bytes / 2**20:.0f} MB per request; send fewer photos")
        form = await request.form(max_files=limits.max_files, max_fields=10)
        uploads = [f for f in form.getlist("photos") if isinstance(f, UploadFile)]
        if not uploads:
            raise HTTPException(400, "no photo was sent: choose or drop JPEG photos")
        received = []
        for upload in uploads:
            received.append(((upload.filename or "photo")[:200], await upload.read(limits.max_photo_bytes + 1)))
        viewpoint = str(form.get("viewpoint") or "") or None  # of every photo of the upload; "": unknown
        await form.close()
        if viewpoint is not None and not identifier.mirrors_right:
            raise HTTPException(400, "this catalogue's models were trained on records that store every view as it "
                                     "is, so a photo's viewpoint changes nothing; leave it out")
        if viewpoint is not None and viewpoint not in VIEWPOINTS:
            raise HTTPException(400, f"unknown viewpoint {viewpoint[:20]!r}; choose from {', '.join(VIEWPOINTS)}")

        def store_and_identify() -> list[Result]:  # one hop to a worker thread for the whole upload
            results = [Result("", name, error=f"is larger than {limits.max_photo_bytes / 2**20:.0f} MB")
                       if len(data) > limits.max_photo_bytes else identifier.store(data, name)
                       for name, data in received]
            for result in results:
                result.viewpoint = viewpoint
            return identifier.identify(results)

        results = await run_in_threadpool(store_and_identify)
        review = secrets.token_hex(8)
        await run_in_threadpool(kept_reviews.save, review, results)  # a restart loses no upload nor its page
        reviews[review] = [r.sha256 for r in results if r.sha256] + [f"!{r.file_name}: {r.error}"
                                                                    for r in results if not r.sha256]
        while len(reviews) > KEPT_REVIEWS:
            reviews.popitem(last=False)
        if request.query_params.get("format") == "json":
            return JSONResponse({"review": review, "threshold": identifier.threshold(),
                                 "results": [_as_json(r) for r in results]})
        return RedirectResponse(f"/review/{review}", status_code=303)

    async def review(request: Request) -> Response:
        review_id = request.path_params["review"]
        shas = reviews.get(review_id)
        results, refused = [], []
        if shas is None:  # a review of before a restart, or pushed out of memory: read from disk
            kept = await run_in_threadpool(kept_reviews.load, review_id)
            if kept is None:
                raise HTTPException(404, "no such review: identify the photos again")
            results = [r for r in kept if r.sha256]
            refused = [f"{r.file_name}: {r.error}" for r in kept if not r.sha256]
        for sha in shas or ():
            if sha.startswith("!"):
                refused.append(sha[1:])
            elif (result := kept_reviews.result(review_id, sha)) is not None:
                results.append(result)
        known = {r.sha256 for r in results}
        log = site.log()
        active = decisions.active_decisions(log)
        decided = {row["photo_sha256"]: row for row in active.to_dict("records") if row["photo_sha256"] in known}
        rows = [{"result": r, "decided": decided.get(r.sha256),
                 "candidates": [{"label": label, "score": score, "new": label == identifier.new_label,
                                 "references": references(label)} for label, score in zip(r.labels, r.scores)]}
                for r in results]
        return page(request, "review.html", review=request.path_params["review"], rows=rows, refused=refused,
                    threshold=identifier.threshold(), explain=identifier.can_explain)

    async def decide(request: Request) -> Response:
        form = await request.form(max_files=0, max_fields=10)
        review_id, sha = str(form.get("review", "")), str(form.get("photo", ""))
        result = await run_in_threadpool(kept_reviews.result, review_id, sha)
        if result is None or result.path is None:
            raise HTTPException(404, "this photo is not waiting for a decision here; identify it again")
        decision, individual = form.get("decision", ""), str(form.get("individual_id", "")).strip()
        embedding = None
        if decision in decisions.ADDING:
            embedding = await run_in_threadpool(identifier.embed, result.path, result.viewpoint)
        await run_in_threadpool(lambda: decisions.decide(identifier.path, result.photo(), decision, individual,
                                                         embedding, identifier.models,
                                                         reviewer=reviewers.reviewer_of(request)))
        known = review_id in reviews or kept_reviews.load(review_id) is not None
        return RedirectResponse(f"/review/{review_id}#p-{sha}" if known else "/decisions", status_code=303)

    async def undo(request: Request) -> Response:
        form = await request.form(max_files=0, max_fields=10)
        decision_id = form.get("decision_id") or None
        await run_in_threadpool(lambda: decisions.undo(identifier.path, decision_id,
                                                       reviewer=reviewers.reviewer_of(request)))
        back = str(form.get("review", ""))
        if back in reviews or kept_reviews.load(back) is not None:
            return RedirectResponse(f"/review/{back}", status_code=303)
        return RedirectResponse(reviewers.local_path(str(form.get("back", "")), "/decisions"), status_code=303)

    # ------------------------------------------------------------------ browse and download

    async def individuals(request: Request) -> Response:
        query = request.query_params.get("q", "").strip()
        table = identifier.catalog.table
        counts = table.groupby("individual_id", sort=True).agg(photos=("image_id", "size"), first=("image_id", "first"))
        if query:
            counts = counts[counts.index.str.contains(query, case=False, regex=False)]
            exact = counts.index == query  # an exact match first, as a search box should
            counts = counts.iloc[sorted(range(len(counts)), key=lambda i: not exact[i])]
        return page(request, "individuals.html", query=query, individuals=list(counts.itertuples()))

    async def catalogue(request: Request) -> Response:
        return page(request, "catalog.html", info=summary(identifier.catalog))

    async def decision_log(request: Request) -> Response:
        log = site.log()
        active = set(decisions.active_decisions(log)["decision_id"])
        rows = [{**row, "active": row["decision_id"] in active, "shown": json.loads(row["candidates"] or "[]")[:3]}
                for row in log.to_dict("records")][::-1]
        return page(request, "decisions.html", rows=rows)

    async def catalog_csv(request: Request) -> Response:
        return _csv(identifier.catalog.table, "catalogue.csv")

    async def decisions_csv(request: Request) -> Response:
        return _csv(decisions.read_log(identifier.catalog), "decisions.csv")

    async def catalog_photo(request: Request) -> Response:
        rows = identifier.catalog.table
        match = rows.loc[rows["image_id"] == request.path_params["image_id"], "path"]
        if match.empty or not Path(match.iloc[0]).is_file():
            raise HTTPException(404, "no such photo in the catalogue")
        return FileResponse(match.iloc[0], media_type="image/jpeg")

    async def explain(request: Request) -> Response:
        """Why an uploaded photo matches a candidate: the PNG of their verified local matches."""
        png = await run_in_threadpool(identifier.explain, request.path_params["sha"],
                                      request.path_params["individual"])
        return Response(png, media_type="image/png")

    async def uploaded_photo(request: Request) -> Response:
        path = identifier.stored_photo(request.path_params["sha"])
        if path is None:
            raise HTTPException(404, "no such uploaded photo")
        return FileResponse(path, media_type="image/jpeg")

    async def reviewer_page(request: Request) -> Response:
        back = reviewers.local_path(request.query_params.get("next", ""))
        if request.method == "POST":
            form = await request.form(max_files=0, max_fields=5)
            back = reviewers.local_path(str(form.get("next", "")))
            name = str(form.get("name", "")).strip()
            reason = reviewers.name_problem(name)
            if site.reviewer_tokens:
                raise HTTPException(400, "your access token names you here; the name cannot be changed")
            if reason:
                return page(request, "reviewer.html", 400, back=back, problem=f"The name {reason}.")
            return reviewers.remember(RedirectResponse(back, status_code=303), name)
        return page(request, "reviewer.html", back=back, problem=None)

    # ------------------------------------------------------------------ errors

    def error_page(request: Request, status: int, message: str) -> Response:
        title = HTTPStatus(status).phrase
        try:
            return page(request, "error.html", status, code=status, title=title, message=message)
        except Exception:  # noqa: BLE001  (the catalogue itself unreadable: a plain page still explains)
            return Response(f"{status} {title}: {message}", status_code=status, media_type="text/plain")

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error_page(request, exc.status_code, exc.detail)

    async def user_error(request: Request, exc: PhotoidError) -> Response:
        return error_page(request, 400, str(exc))

    async def server_error(request: Request, exc: Exception) -> Response:
        traceback.print_exception(exc, file=sys.stderr)
        return error_page(request, 500, "photoid failed on this request; the details are in the server's console")

    routes = [
        Route("/", home), Route("/identify", identify, methods=["POST"]),
        Route("/review/{review:str}", review), Route("/decide", decide, methods=["POST"]),
        Route("/undo", undo, methods=["POST"]),
        Route("/individuals", individuals),
        Route("/catalog", catalogue), Route("/decisions", decision_log),
        Route("/catalog.csv", catalog_csv), Route("/decisions.csv", decisions_csv),
        Route("/photo/{image_id:str}", catalog_photo), Route("/upload/{sha:str}", uploaded_photo),
        Route("/reviewer", reviewer_page, methods=["GET", "POST"]),
        *surveys.routes(site), *quality.routes(site),
        Route("/explain/{sha:str}/{individual:str}", explain),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, PhotoidError: user_error,
                                                       Exception: server_error})
    app.add_middleware(PagesFirst, site=site)
    app.add_middleware(Guard, token=token, allowed_hosts=allowed_hosts, reviewer_tokens=reviewer_tokens)
    app.state.site = site  # its survey jobs and claims (the server's own state; tests look at them)
    return app


def _as_json(result: Result) -> dict:
    answer = {"file_name": result.file_name, "sha256": result.sha256, "error": result.error,
              "viewpoint": result.viewpoint,
              "candidates": [{"label": label, "score": score} for label, score in zip(result.labels, result.scores)]}
    if result.search:  # an approximate catalogue index ranked the candidates (absent for the exact search)
        answer["search"] = result.search
    return answer


def _csv(frame, name: str) -> Response:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return Response(buffer.getvalue(), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def loopback_hosts(port: int) -> list[str]:
    """Host headers a browser sends to this server on loopback."""
    return [h for name in ("[::1]", "localhost", "127.0.0.1") for h in (name, f"{name}:{port}")]


class PagesFirst:
    """ASGI middleware: counts the pages being answered, so that a survey's batch job starts its next model batch
    once they are done (a reviewer waits for a page, nobody waits for the job). Static files, the job's progress
    and the match view's claim renewals (HEAD) do not count."""

    def __init__(self, app, site: Site):
        self.app, self.site = app, site

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or scope.get("method") == "HEAD" or path.startswith("/static/") or \
                path.endswith("/job"):
            return await self.app(scope, receive, send)
        self.site.pages_in_flight += 1  # one event loop: no lock needed
        try:
            return await self.app(scope, receive, send)
        finally:
            self.site.pages_in_flight -= 1


class Guard:
    """ASGI middleware: Host, Origin and token checks on every request (see the module's docstring)."""

    def __init__(self, app, token: str | None, allowed_hosts: list[str] | None,
                 reviewer_tokens: dict[str, str] | None = None):
        self.app, self.token, self.allowed_hosts = app, token, allowed_hosts
        self.reviewer_tokens = reviewer_tokens or {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        host = request.headers.get("host", "")
        refusal = None
        if self.allowed_hosts is not None and host not in self.allowed_hosts:
            refusal = (400, f"this server answers to {self.allowed_hosts[-1]}, not to {host or 'no Host header'}")
        elif request.method not in ("GET", "HEAD") and request.headers.get("origin") not in (
                None, f"{request.url.scheme}://{host}"):
            refusal = (403, "forms are accepted from this server's own pages only")
        elif self.token or self.reviewer_tokens:
            given = (request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE)
                     or request.headers.get("authorization", "").removeprefix("Bearer "))
            reviewer = reviewers.reviewer_for_token(self.reviewer_tokens, given)
            if reviewer is None and not (self.token and hmac.compare_digest(given.encode(), self.token.encode())):
                refusal = (401, "this server needs its access token: open the address photoid serve printed "
                                "(it ends in ?token=...), or your own reviewer's address")
            elif "token" in request.query_params:
                # Once accepted, the token moves to a cookie and out of the address bar (and of shared links).
                rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
                response = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), status_code=303)
                response.set_cookie(TOKEN_COOKIE, given, httponly=True, samesite="strict")
                return await response(scope, receive, send)
            elif reviewer is not None:
                scope.setdefault("state", {})["reviewer"] = reviewer  # their decisions carry their name
        if refusal:
            status, message = refusal
            body = (f"<!doctype html><title>{status} {HTTPStatus(status).phrase}</title>"
                    f"<h1>{status} {HTTPStatus(status).phrase}</h1><p>{_escape(message)}</p>")
            return await Response(body, status_code=status, media_type="text/html")(scope, receive, send)
        return await self.app(scope, receive, send)


def _escape(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))
