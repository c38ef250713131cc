"""The live dashboard served by the gateway at ``/``: server-rendered pages (jinja2, autoescaped)
that a few plain JavaScript files (``static/``, no build step, no CDN) fill and keep current
from the gateway's own ``/v1`` API: polling for the fleet and lists, Server-Sent Events for one
request's hops, the ``/v1/events`` WebSocket to refresh at once when a worker or request changes.

Pages: overview (fleet + recent requests), requests (submit form + live list), one request (hop
timeline), approvals, dead letters, login. Authentication is the gateway's: ``POST /login``
checks a token and keeps it in the ``agent_runtime_token`` cookie (HttpOnly, SameSite=Strict,
the CSRF defence), which the browser then sends with every same-origin API call. A page without
that cookie redirects to the login form; an API call answered 401 does too (from the script).

Every response of this router carries a Content-Security-Policy without ``unsafe-inline``:
scripts and styles come only from ``/static/`` files of this package, served from an allow-list
of names (never a path from the URL).
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Cookie, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from agent_runtime.gateway.auth import COOKIE

__all__ = ["COOKIE", "CSP", "router"]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

#: The only files ``/static/NAME`` serves: name -> media type.
STATIC = {
    "dashboard.css": "text/css; charset=utf-8",
    "common.js": "text/javascript; charset=utf-8",
    "overview.js": "text/javascript; charset=utf-8",
    "requests.js": "text/javascript; charset=utf-8",
    "request.js": "text/javascript; charset=utf-8",
    "approvals.js": "text/javascript; charset=utf-8",
    "dead_letters.js": "text/javascript; charset=utf-8",
    "login.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

#: Login errors by code (``/login?error=CODE``): never text from the URL on the page.
LOGIN_ERRORS = {
    "refused": "That token was not accepted.",
    "expired": "Your session ended; log in again.",
}

NAV = [
    ("/", "Overview"),
    ("/requests", "Requests"),
    ("/approvals", "Approvals"),
    ("/dead-letters", "Dead letters"),
]

_templates = Environment(
    loader=PackageLoader("agent_runtime.gateway.dashboard", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)

router = APIRouter(include_in_schema=False)
TokenCookie = Annotated[str | None, Cookie(alias=COOKIE)]


def _page(template: str, active: str, **context: object) -> HTMLResponse:
    html = _templates.get_template(template).render(nav=NAV, active=active, **context)
    return HTMLResponse(html, headers=SECURITY_HEADERS)


def _login_first(request: Request, token: str | None) -> RedirectResponse | None:
    """None when the visitor holds a token the gateway knows; else the way to the login
    form (and back here after it). A cookie whose token is no longer configured is dropped."""
    table = getattr(request.app.state, "tokens", None)
    if token and (table is None or table.find(token) is not None):
        return None
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    error = "&error=expired" if token else ""
    response = RedirectResponse(f"/login?next={quote(target, safe='')}{error}", status_code=303)
    if token:
        response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, token: TokenCookie = None) -> Response:
    if request.query_params.get("login") == "failed":  # POST /login refused the token
        return RedirectResponse("/login?error=refused", status_code=303)
    if redirect := _login_first(request, token):
        return redirect
    return _page("overview.html", "/", title="Overview", script="overview.js")


@router.get("/requests", response_class=HTMLResponse)
def requests_page(request: Request, token: TokenCookie = None) -> Response:
    if redirect := _login_first(request, token):
        return redirect
    return _page("requests.html", "/requests", title="Requests", script="requests.js")


@router.get("/requests/{cid}", response_class=HTMLResponse)
def request_page(request: Request, cid: str, token: TokenCookie = None) -> Response:
    if redirect := _login_first(request, token):
        return redirect
    return _page(
        "request.html", "/requests", title=f"Request {cid[:64]}", cid=cid, script="request.js"
    )


@router.get("/approvals", response_class=HTMLResponse)
def approvals_page(request: Request, token: TokenCookie = None) -> Response:
    if redirect := _login_first(request, token):
        return redirect
    return _page("approvals.html", "/approvals", title="Approvals", script="approvals.js")


@router.get("/dead-letters", response_class=HTMLResponse)
def dead_letters_page(request: Request, token: TokenCookie = None) -> Response:
    if redirect := _login_first(request, token):
        return redirect
    return _page(
        "dead_letters.html", "/dead-letters", title="Dead letters", script="dead_letters.js"
    )


@router.get("/login", response_class=HTMLResponse)
def login_page(
    next_: Annotated[str, Query(alias="next", max_length=2048)] = "/",
    error: Annotated[str, Query(max_length=20)] = "",
) -> Response:
    # only a local path: never redirect to another site after logging in
    safe_next = next_ if next_.startswith("/") and not next_.startswith(("//", "/\\")) else "/"
    return _page(
        "login.html",
        "",
        title="Log in",
        next=safe_next,
        error=LOGIN_ERRORS.get(error, ""),
        script="login.js",
    )


@router.get("/static/{name}")
def static(name: str) -> Response:
    media = STATIC.get(name)
    if media is None:
        return Response("not found\n", status_code=404, media_type="text/plain")
    body = resources.files(__package__).joinpath("static", name).read_bytes()
    headers = {**SECURITY_HEADERS, "Cache-Control": "public, max-age=300"}
    return Response(body, media_type=media, headers=headers)
