"""The pages of `photoid serve` (Starlette): identify, decide, browse, download; and what guards them.

Every request passes `Guard` first: the Host header must name this server when it listens on loopback only (a web
page elsewhere cannot reach it through a DNS name that points to 127.0.0.1), a form must come from this server's own
pages (Origin), and when a token is set it must come with the request (`?token=` once, then a cookie). No part of
a request is ever joined to a path: photos are looked up by their image id in the catalogue's table, or by a
sha256 checked to be 64 hex digits. Errors are pages that say what went wrong; a bug's traceback goes to the
server's console only.
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

from photoid.catalog.build import summary
from photoid.core.errors import PhotoidError
from photoid.records.folder import VIEWPOINTS
from photoid.serve import decisions
from photoid.serve.identifier import Identifier, Result

HERE = Path(__file__).parent
TOKEN_COOKIE = "photoid_token"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
KEPT_REVIEWS = 500
REFERENCES = 3  # catalogue photos shown beside each candidate


class Limits:
    def __init__(self, max_files: int = 50, max_photo_mb: float = 25, max_request_mb: float = 200):
        self.max_files, self.max_photo_bytes = max_files, int(max_photo_mb * 2**20)
        self.max_request_bytes = int(max_request_mb * 2**20)


def create_app(identifier: Identifier, *, token: str | None = None, allowed_hosts: list[str] | None = None,
               limits: Limits | None = None) -> Starlette:
    """The page for one loaded `Identifier`. `allowed_hosts` (host[:port]) None accepts any Host header."""
    limits = limits or Limits()
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    reviews: OrderedDict[str, list[str]] = OrderedDict()
    references_cache: dict = {}

    def page(request: Request, template: str, status: int = 200, **context) -> Response:
        catalog = identifier.catalog
        context.update(catalog_path=str(identifier.path), n_images=len(catalog.table),
                       n_individuals=int(catalog.table["individual_id"].nunique()), new_label=identifier.new_label,
                       viewpoints=VIEWPOINTS if identifier.mirrors_right else ())
        return templates.TemplateResponse(request, template, context, status_code=status)

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
        reviews[review] = [r.sha256 for r in results if r.sha256] + [f"!{r.file_name}: {r.error}"
                                                                    for r in results if not r.sha256]
        while len(reviews) > KEPT_REVIEWS:
            reviews.popitem(last=False)
        if request.query_params.get("format") == "json":
            return JSONResponse({"review": review, "threshold": identifier.threshold(),
                                 "results": [_as_json(r) for r in results]})
        return RedirectResponse(f"/review/{review}", status_code=303)

    async def review(request: Request) -> Response:
        shas = reviews.get(request.path_params["review"])
        if shas is None:
            raise HTTPException(404, "this review is no longer kept by the server; identify the photos again")
        results, refused = [], []
        for sha in shas:
            if sha.startswith("!"):
                refused.append(sha[1:])
            elif (result := identifier.results.get(sha)) is not None:  # older results may have been forgotten
                results.append(result)
        known = {r.sha256 for r in results}
        log = decisions.read_log(identifier.catalog)
        active = decisions.active_decisions(log)
        decided = {row["photo_sha256"]: row for row in active.to_dict("records") if row["photo_sha256"] in known}
        rows = [{"result": r, "decided": decided.get(r.sha256),
                 "candidates": [{"label": label, "score": score, "new": label == identifier.new_label,
                                 "references": references(label)} for label, score in zip(r.labels, r.scores)]}
                for r in results]
        return page(request, "review.html", review=request.path_params["review"], rows=rows, refused=refused,
                    threshold=identifier.threshold())

    async def decide(request: Request) -> Response:
        form = await request.form(max_files=0, max_fields=10)
        review_id, sha = form.get("review", ""), form.get("photo", "")
        result = identifier.results.get(sha)
        if result is None or result.path is None:
            raise HTTPException(404, "this photo is not waiting for a decision here; identify it again")
        decision, individual = form.get("decision", ""), str(form.get("individual_id", "")).strip()
        embedding = None
        if decision in decisions.ADDING:
            embedding = await run_in_threadpool(identifier.embed, result.path, result.viewpoint)
        await run_in_threadpool(decisions.decide, identifier.path, result.photo(), decision, individual, embedding,
                                identifier.models)
        return RedirectResponse(f"/review/{review_id}#p-{sha}" if review_id in reviews else "/decisions",
                                status_code=303)

    async def undo(request: Request) -> Response:
        form = await request.form(max_files=0, max_fields=10)
        decision_id = form.get("decision_id") or None
        await run_in_threadpool(decisions.undo, identifier.path, decision_id)
        back = form.get("review", "")
        return RedirectResponse(f"/review/{back}" if back in reviews else "/decisions", status_code=303)

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

    async def individual(request: Request) -> Response:
        name = request.path_params["individual"]
        rows = identifier.catalog.table[identifier.catalog.table["individual_id"] == name]
        if rows.empty:
            raise HTTPException(404, f"no individual {name!r} in the catalogue")
        return page(request, "individual.html", name=name, photos=list(rows.itertuples()))

    async def catalogue(request: Request) -> Response:
        return page(request, "catalog.html", info=summary(identifier.catalog))

    async def decision_log(request: Request) -> Response:
        log = decisions.read_log(identifier.catalog)
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

    async def uploaded_photo(request: Request) -> Response:
        path = identifier.stored_photo(request.path_params["sha"])
        if path is None:
            raise HTTPException(404, "no such uploaded photo")
        return FileResponse(path, media_type="image/jpeg")

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
        Route("/individuals", individuals), Route("/individuals/{individual:str}", individual),
        Route("/catalog", catalogue), Route("/decisions", decision_log),
        Route("/catalog.csv", catalog_csv), Route("/decisions.csv", decisions_csv),
        Route("/photo/{image_id:str}", catalog_photo), Route("/upload/{sha:str}", uploaded_photo),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, PhotoidError: user_error,
                                                       Exception: server_error})
    app.add_middleware(Guard, token=token, allowed_hosts=allowed_hosts)
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


class Guard:
    """ASGI middleware: Host, Origin and token checks on every request (see the module's docstring)."""

    def __init__(self, app, token: str | None, allowed_hosts: list[str] | None):
        self.app, self.token, self.allowed_hosts = app, token, allowed_hosts

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
        elif self.token:
            given = (request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE)
                     or request.headers.get("authorization", "").removeprefix("Bearer "))
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                refusal = (401, "this server needs its access token: open the address photoid serve printed "
                                "(it ends in ?token=...)")
            elif "token" in request.query_params:
                # Once accepted, the token moves to a cookie and out of the address bar (and of shared links).
                rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
                response = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), status_code=303)
                response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
                return await response(scope, receive, send)
        if refusal:
            status, message = refusal
            body = (f"<!doctype html><title>{status} {HTTPStatus(status).phrase}</title>"
                    f"<h1>{status} {HTTPStatus(status).phrase}</h1><p>{_escape(message)}</p>")
            return await Response(body, status_code=status, media_type="text/html")(scope, receive, send)
        return await self.app(scope, receive, send)


def _escape(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))
