"""The dashboard's pages as served (no browser): every page is one template with semantic
landmarks and labelled inputs, scripts only from allow-listed /static/ files under a CSP without
'unsafe-inline', a login redirect for visitors without the cookie, and hostile URL parts
rendered as text. The browser tests (tests/browser/) drive the same pages against a real
gateway."""

from __future__ import annotations

from html.parser import HTMLParser
from importlib import resources
from typing import Any
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from agent_runtime.gateway.auth import TokenTable, hash_token
from agent_runtime.gateway.dashboard import COOKIE, STATIC, router
from agent_runtime.gateway.settings import GatewaySettings, TokenSpec

PAGES = [
    "/",
    "/requests",
    "/requests/0b0e6c0e-2f5c-4d7e-9d39-4a4f6f0f7a11",
    "/approvals",
    "/dead-letters",
]


class Page(HTMLParser):
    """The parts of a page the checks need: tags with attributes, text of <code id=cid>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.inline_scripts = 0
        self._in_script = False
        self._in_cid = False
        self.cid = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        self.tags.append((tag, found))
        self._in_script = tag == "script"
        self._in_cid = found.get("id") == "cid"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_cid = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1
        if self._in_cid:
            self.cid += data

    def all(self, tag: str) -> list[dict[str, str]]:
        return [attrs for name, attrs in self.tags if name == tag]


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    app.include_router(router)
    return TestClient(app)


def logged_in(client: TestClient, path: str) -> Any:
    client.cookies.set(COOKIE, "t0ken")
    try:
        return client.get(path, follow_redirects=False)
    finally:
        client.cookies.clear()


@pytest.mark.parametrize("path", PAGES)
def test_pages_without_the_cookie_go_to_the_login_form_and_come_back(
    client: TestClient, path: str
) -> None:
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/login?next={quote(path, safe='')}"
    login = parse(client.get(response.headers["location"]).text)
    (back,) = [i for i in login.all("input") if i.get("name") == "next"]
    assert back["value"] == path


@pytest.mark.parametrize("path", [*PAGES, "/login"])
def test_pages_are_accessible_and_run_no_inline_code(client: TestClient, path: str) -> None:
    response = logged_in(client, path)
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert (
        "frame-ancestors 'none'" in csp and response.headers["x-content-type-options"] == "nosniff"
    )
    page = parse(response.text)
    assert page.inline_scripts == 0
    for tag, attrs in page.tags:
        assert not [a for a in attrs if a.startswith("on") or a == "style"], (tag, attrs)
    scripts = [s["src"] for s in page.all("script")]
    assert scripts and all(s.startswith("/static/") and s[8:] in STATIC for s in scripts)
    names = [t for t, _ in page.tags]
    assert "main" in names and names.count("h1") == 1 and page.all("html")[0]["lang"] == "en"
    if path != "/login":
        assert "nav" in names
    labelled = {label["for"] for label in page.all("label")}
    fields = [*page.all("input"), *page.all("textarea")]
    for field in fields:
        if field.get("type") != "hidden":
            assert field["id"] in labelled, f"unlabelled input {field}"
    for th in page.all("th"):
        assert th.get("scope") in ("col", "row"), th


@pytest.mark.parametrize("name", sorted(STATIC))
def test_static_files_are_served_from_the_allow_list(client: TestClient, name: str) -> None:
    response = client.get(f"/static/{name}")
    assert response.status_code == 200 and response.content
    assert response.headers["content-type"] == STATIC[name]
    assert response.headers["x-content-type-options"] == "nosniff"
    if name.endswith(".js"):
        assert ".innerHTML" not in response.text, "values reach the page as text only"


@pytest.mark.parametrize(
    "path", ["/static/__init__.py", "/static/..%2F__init__.py", "/static/templates", "/static/x.js"]
)
def test_nothing_else_is_served_as_static(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example"])
def test_login_returns_only_to_a_local_path(client: TestClient, target: str) -> None:
    page = parse(client.get("/login", params={"next": target}).text)
    (back,) = [i for i in page.all("input") if i.get("name") == "next"]
    assert back["value"] == "/"


def test_login_errors_are_fixed_texts_never_the_url(client: TestClient) -> None:
    assert "That token was not accepted." in client.get("/login?error=refused").text
    hostile = client.get("/login", params={"error": "<b>call 555</b>"}).text
    assert "call 555" not in hostile
    # POST /login refuses a token by sending the browser to /?login=failed
    response = client.get("/?login=failed", follow_redirects=False)
    assert response.headers["location"] == "/login?error=refused"


@given(st.text(min_size=1, max_size=300).filter(lambda s: "/" not in s and s not in (".", "..")))
def test_a_hostile_request_id_is_shown_as_text(cid: str) -> None:
    app = FastAPI()
    app.include_router(router)
    with TestClient(app, cookies={COOKIE: "t0ken"}) as client:
        response = client.get("/requests/" + quote(cid, safe=""), follow_redirects=False)
    assert response.status_code == 200
    page = parse(response.text)
    assert page.cid == cid
    assert [s["src"] for s in page.all("script")] == ["/static/common.js", "/static/request.js"]


def test_a_cookie_whose_token_is_not_configured_is_dropped_at_the_login_form() -> None:
    known = "t-known-token"
    app = FastAPI()
    app.include_router(router)
    settings = GatewaySettings(
        tokens=(TokenSpec(name="ops", sha256=hash_token(known), scopes=("read",)),)
    )
    app.state.tokens = TokenTable(settings)
    with TestClient(app, cookies={COOKIE: "t-revoked-token"}) as client:
        response = client.get("/approvals", follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == "/login?next=%2Fapprovals&error=expired"
        assert f'{COOKIE}=""' in response.headers["set-cookie"]
        assert "Your session ended" in client.get(response.headers["location"]).text
    with TestClient(app, cookies={COOKIE: known}) as client:
        assert client.get("/approvals", follow_redirects=False).status_code == 200


def test_the_allow_list_names_exactly_the_shipped_static_files() -> None:
    shipped = resources.files("agent_runtime.gateway.dashboard").joinpath("static")
    assert {f.name for f in shipped.iterdir()} == set(STATIC)
