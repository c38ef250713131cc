"""The dashboard in a real browser (Debian's chromium via Playwright) against a real gateway
(``agent-runtime serve`` as a child process) in front of real worker processes on the session's
server. Each test logs in with a token like a person would, and waits with Playwright's
auto-retrying ``expect`` (no sleeps); a screenshot of each lands in the test's tmp dir."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.fixtures.gateway import LiveGateway
from tests.fixtures.pipeline import echo_sink

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

CID_URL = re.compile(r"/requests/[0-9a-f-]{36}$")
ALL_AGENTS = ["intent_parser", "planner", "safety_checker", "router", "executor", "reporter"]

# Records, in every document of the page, each change of the hop timeline and the state badge
# (run by the browser before the page's own scripts; a reload would start a new record).
RECORDER = """
window.__record = [];
window.__loadedAt = performance.timeOrigin;
document.addEventListener("DOMContentLoaded", () => {
  const rows = document.querySelector("#timeline tbody");
  const state = document.getElementById("state");
  if (!rows || !state) return;
  const note = () => window.__record.push([rows.children.length, state.textContent]);
  new MutationObserver(note).observe(rows, {childList: true});
  new MutationObserver(note).observe(state, {childList: true, characterData: true, subtree: true});
});
"""


def log_in(page: Page, gateway: LiveGateway, token: str = "all") -> None:
    page.goto(gateway.url + "/")
    expect(page).to_have_url(re.compile(r"/login\?next=%2F$"))
    page.get_by_label("API token").fill(gateway.tokens[token])
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", level=1, name="Overview")).to_be_visible()


def timeline_agents(page: Page) -> list[str]:
    return page.locator("#timeline tbody th").all_inner_texts()


def snap(page: Page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    return path


class HeldResponse:
    """A local HTTP server whose answer waits until the test releases it: a request fetching
    it stays running for as long as the test needs to watch it."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0
        held = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                held.calls += 1
                held.release.wait(60)
                body = b"released\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/held"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def held() -> Iterator[HeldResponse]:
    server = HeldResponse()
    yield server
    server.close()


def test_log_in_submit_from_the_form_and_watch_it_succeed_hop_by_hop(
    gateway: LiveGateway, page: Page, held: HeldResponse, tmp_path: Path
) -> None:
    page.add_init_script(RECORDER)
    log_in(page, gateway)
    page.get_by_role("link", name="Requests").click()
    expect(page.get_by_role("heading", level=1, name="Requests")).to_be_visible()
    page.get_by_label("Request text").fill(
        f"list files in data and fetch {held.url} then count words in data/notes.txt"
    )
    page.get_by_role("button", name="Submit").click()
    expect(page).to_have_url(CID_URL)
    loaded_at = page.evaluate("window.__loadedAt")
    state = page.locator("#state")

    # the fetch is held: the page shows the hops so far while the request runs
    expect(page.locator("#timeline tbody th", has_text="router").first).to_be_visible()
    expect(state).to_have_text("running")
    assert "reporter" not in timeline_agents(page)
    before = len(timeline_agents(page))
    snap(page, tmp_path, "request-running")

    held.release.set()
    expect(state).to_have_text("succeeded", timeout=60_000)
    expect(page.get_by_role("heading", name="Report")).to_be_visible()
    agents = timeline_agents(page)
    assert set(ALL_AGENTS) <= set(agents) and agents[:2] == ["client", "intent_parser"]
    assert agents[-1] == "reporter" and len(agents) > before
    # the same document all along, filled one hop at a time
    assert page.evaluate("window.__loadedAt") == loaded_at
    record = page.evaluate("window.__record")
    counts = [count for count, _ in record]
    assert counts == sorted(counts) and len(set(counts)) >= len(agents) - 1
    assert any(text == "running" and 0 < count < len(agents) for count, text in record)
    expect(page.locator("#hop-count")).to_have_text(str(len(agents)))
    snap(page, tmp_path, "request-succeeded")

    # the live list on the requests page knows it too
    cid = page.url.rsplit("/", 1)[1]
    page.get_by_role("link", name="Requests").click()
    row = page.locator(f'#requests tbody tr[data-cid="{cid}"]')
    expect(row.locator(".state")).to_have_text("succeeded")
    page.get_by_role("link", name="Overview").click()
    expect(page.locator(f'#requests tbody tr[data-cid="{cid}"] .state')).to_have_text("succeeded")
    expect(page.locator("#fleet tbody tr")).to_have_count(len(ALL_AGENTS))
    expect(page.locator('#fleet tbody tr[data-agent="executor"] .workers')).not_to_have_text("0")
    snap(page, tmp_path, "overview")


def test_approve_a_waiting_high_risk_step_and_see_the_request_finish(
    gateway: LiveGateway, page: Page, tmp_path: Path
) -> None:
    log_in(page, gateway)
    with gateway.client("submit") as api:
        answer = api.post("/v1/requests", json={"text": "run echo ready then deploy web to prod"})
    assert answer.status_code == 202, answer.text
    cid = answer.json()["correlation_id"]

    # the request's own page stays open in a second tab
    watcher = page.context.new_page()
    watcher.add_init_script(RECORDER)
    watcher.goto(f"{gateway.url}/requests/{cid}")
    expect(watcher.locator("#approval")).to_be_visible()
    expect(watcher.locator("#state")).to_have_text("waiting_approval")
    waiting_hops = len(timeline_agents(watcher))
    loaded_at = watcher.evaluate("window.__loadedAt")

    page.get_by_role("link", name="Approvals").click()
    row = page.locator(f'#approvals tbody tr[data-cid="{cid}"]')
    expect(row).to_have_count(1)
    expect(row).to_contain_text("deploy")
    page.get_by_label("Approver").fill("Ada")
    snap(page, tmp_path, "approvals")
    approve = row.get_by_role("button", name=re.compile(r"^Approve step"))
    approve.focus()
    page.keyboard.press("Enter")  # keyboard usable
    expect(page.locator("#notice")).to_contain_text("Approved step")
    expect(row).to_have_count(0)

    expect(watcher.locator("#state")).to_have_text("succeeded", timeout=60_000)
    expect(watcher.locator("#approval")).to_be_hidden()
    assert len(timeline_agents(watcher)) > waiting_hops
    assert watcher.evaluate("window.__loadedAt") == loaded_at, "no reload"
    report = watcher.locator("#result-body").inner_text()
    assert '"tool": "deploy"' in report and '"status": "succeeded"' in report
    snap(watcher, tmp_path, "approved-request")


def test_reject_from_the_approvals_page_ends_the_request_rejected(
    gateway: LiveGateway, page: Page
) -> None:
    log_in(page, gateway)
    with gateway.client("submit") as api:
        answer = api.post("/v1/requests", json={"text": "deploy cache to dev"})
    cid = answer.json()["correlation_id"]
    page.get_by_role("link", name="Approvals").click()
    row = page.locator(f'#approvals tbody tr[data-cid="{cid}"]')
    expect(row).to_have_count(1)
    page.get_by_label("Reason (optional)").fill("not today")  # no approver: the token's name
    row.get_by_role("button", name=re.compile(r"^Reject step")).click()
    expect(page.locator("#notice")).to_contain_text("Rejected step")
    expect(row).to_have_count(0)
    page.goto(f"{gateway.url}/requests/{cid}")
    expect(page.locator("#state")).to_have_text("rejected")
    expect(page.get_by_role("heading", name="Report")).to_be_visible()
    expect(page.locator("#result-body")).to_contain_text("rejected by human:all: not today")


@pytest.fixture
def poisoned(make_gateway: Any) -> LiveGateway:
    return make_gateway(echo_sink({"fail_always": True}))  # type: ignore[no-any-return]


def test_replay_a_dead_letter_from_the_dead_letter_page(
    poisoned: LiveGateway, page: Page, tmp_path: Path
) -> None:
    pipe = poisoned.pipeline
    with poisoned.client("submit") as api:
        cid = api.post("/v1/requests", json={"text": "poison pill"}).json()["correlation_id"]
    log_in(page, poisoned)
    page.get_by_role("link", name="Dead letters").click()
    row = page.locator("#dead-letters tbody tr", has_text="max_deliveries")
    expect(row).to_have_count(1, timeout=60_000)
    expect(row.get_by_role("link")).to_have_attribute("href", f"/requests/{cid}")

    row.get_by_role("button", name=re.compile(r"^Show")).click()
    expect(page.locator("#letter-body")).to_contain_text("poison pill")
    expect(page.locator("#letter-heading")).to_be_focused()
    snap(page, tmp_path, "dead-letter")

    # the cause is fixed: an echo worker without the bug
    pipe.stop("echo")
    pipe.configure(echo_sink())
    pipe.start("echo")
    row.get_by_role("button", name=re.compile(r"^Replay")).click()
    expect(page.locator("#notice")).to_contain_text("Replayed")
    expect(page.locator("#dead-letters tbody tr")).to_have_count(0)
    expect(page.locator("#dead-letters-empty")).to_be_visible()

    # the replayed message went through: the request's timeline has echo handled -> sink
    page.goto(f"{poisoned.url}/requests/{cid}")
    expect(page.locator("#timeline tbody tr.outcome-handled th", has_text="sink")).to_have_count(
        1, timeout=60_000
    )
    outcomes = page.locator("#timeline tbody tr td.outcome").all_inner_texts()
    assert "dead_lettered" in outcomes and "handled" in outcomes


def test_overview_shows_a_worker_disappearing_after_sigkill(
    make_gateway: Any, page: Page, tmp_path: Path
) -> None:
    gateway: LiveGateway = make_gateway()  # echo -> sink, one worker each
    log_in(page, gateway)
    echo = page.locator('#fleet tbody tr[data-agent="echo"]')
    expect(echo.locator(".workers")).to_have_text("1")
    expect(page.locator('#fleet tbody tr[data-agent="sink"] .workers')).to_have_text("1")
    expect(page.locator("#fleet tbody tr")).to_have_count(2)
    snap(page, tmp_path, "overview")

    gateway.kill_worker("echo")
    # the worker's heartbeat key lives three heartbeats (1.5 s here): then it is gone
    expect(echo.locator(".workers")).to_have_text("0", timeout=15_000)
    expect(echo).to_have_class(re.compile(r"\bdown\b"))
    expect(page.locator('#fleet tbody tr[data-agent="sink"] .workers')).to_have_text("1")
    snap(page, tmp_path, "overview-worker-down")


def test_a_wrong_token_is_refused_and_the_cookie_stays_out_of_scripts_reach(
    gateway: LiveGateway, page: Page
) -> None:
    page.goto(gateway.url + "/approvals")
    page.get_by_label("API token").fill("not-a-token")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert").filter(has_text="not accepted")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/login"))
    page.get_by_label("API token").fill(gateway.tokens["read"])
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", level=1, name="Approvals")).to_be_visible()
    # the cookie is HttpOnly and SameSite=Strict: scripts cannot read it
    (cookie,) = page.context.cookies()
    assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == (
        "agent_runtime_token",
        True,
        "Strict",
    )
    assert page.evaluate("document.cookie") == ""
    response = httpx.get(gateway.url + "/", follow_redirects=False)
    assert response.status_code == 303  # no cookie: the login form first
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login"))
    assert page.context.cookies() == []
