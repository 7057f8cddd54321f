"""Who decides: each decision records its reviewer, asked once and kept, or fixed by the reviewer's own token.

Without tokens, the page asks a name once (`/reviewer`) and keeps it in a cookie for a year. With a reviewers
file (`photoid serve --reviewers FILE`: one `NAME TOKEN` per line), each reviewer opens the page with their own
token (`?token=...`, then a cookie, or `Authorization: Bearer`), and the token names them: their decisions carry
that name, and they cannot decide under another. The Guard (`photoid.serve.app`) checks the token and puts the
name in the request's state.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from photoid.core.errors import PhotoidError, ProblemList
from photoid.core.tables import text_problem

REVIEWER_COOKIE = "photoid_reviewer"
MAX_NAME = 60
MIN_TOKEN = 16
YEAR_S = 365 * 24 * 3600


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a reviewer, or None."""
    reason = text_problem(name)
    if reason:
        return reason
    if len(name) > MAX_NAME:
        return f"is longer than {MAX_NAME} characters"
    return None


def read_reviewer_tokens(path: str | Path) -> dict[str, str]:
    """{token: reviewer} from a file of `NAME TOKEN` lines ('#' starts a comment); every problem at once."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise PhotoidError(f"{path}: cannot be read as a UTF-8 text file ({err})") from None
    problems, tokens, names = ProblemList(), {}, set()
    for number, line in enumerate(lines, start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            problems.add(str(path), number, "write the reviewer's name, a space, then their token")
            continue
        name, token = parts
        reason = name_problem(name)
        if reason:
            problems.add(str(path), number, f"reviewer name {name!r} {reason}")
        if len(token) < MIN_TOKEN:
            problems.add(str(path), number, f"{name}'s token is shorter than {MIN_TOKEN} characters")
        if token in tokens or name in names:
            problems.add(str(path), number, f"{name}: a reviewer and a token are listed once each")
        tokens[token] = name
        names.add(name)
    problems.raise_if_any(title="reviewers file")
    if not tokens:
        raise PhotoidError(f"{path} lists no reviewer")
    return tokens


def reviewer_for_token(tokens: dict[str, str], given: str) -> str | None:
    """The reviewer whose token `given` is (compared in constant time), or None."""
    found = None
    for token, name in tokens.items():
        if hmac.compare_digest(given.encode(), token.encode()):
            found = name
    return found


def reviewer_of(request: Request) -> str:
    """The request's reviewer: named by their token, else by the kept cookie; "" when not known yet."""
    by_token = request.scope.get("state", {}).get("reviewer")
    if by_token:
        return by_token
    name = request.cookies.get(REVIEWER_COOKIE, "")
    return name if name and name_problem(name) is None else ""


def local_path(value: str, default: str = "/") -> str:
    """`value` when it is a path of this server (never another site: no scheme, no //host), else `default`."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value and "\n" not in value:
        return value
    return default


def ask_reviewer(request: Request) -> Response:
    """Send a reviewer without a name to the page that asks it, then back here."""
    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/reviewer?next={quote(back, safe='')}", status_code=303)


def remember(response: Response, name: str) -> Response:
    response.set_cookie(REVIEWER_COOKIE, name, max_age=YEAR_S, httponly=True, samesite="strict")
    return response
