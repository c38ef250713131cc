"""The HTTP gateway end to end: ``agent-runtime serve`` as a child process in front of the six
built-in agent types' real worker processes on the session's server, driven with httpx."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from agent_runtime.transport.embedded import EmbeddedServer
from tests.fixtures.gateway import LIMITED_CALLS, LiveGateway
from tests.fixtures.pipeline import echo_sink

pytestmark = pytest.mark.e2e

Event = tuple[str, str | None, Any]  # (event, id, data)


def wait_until(check: Callable[[], Any], timeout: float = 30, message: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {message}")


def submit(gw: LiveGateway, text: str, token: str = "all", **headers: str) -> httpx.Response:
    with gw.client(token) as http:
        return http.post("/v1/requests", json={"text": text}, headers=headers)


def events(
    gw: LiveGateway, cid: str, *, last_event_id: str | None = None, token: str = "read"
) -> list[Event]:
    """Every SSE event of the request until the stream ends (after its ``end`` event)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    out: list[Event] = []
    with (
        gw.client(token) as http,
        http.stream("GET", f"/v1/requests/{cid}/events", headers=headers, timeout=90) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        name, ident, data = "message", None, []
        for line in response.iter_lines():
            if line == "":
                if data:
                    out.append((name, ident, json.loads("\n".join(data))))
                name, ident, data = "message", None, []
            elif line.startswith("event: "):
                name = line[7:]
            elif line.startswith("id: "):
                ident = line[4:]
            elif line.startswith("data: "):
                data.append(line[6:])
    return out


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["detail"]
    return body


def test_probes_answer(gateway: LiveGateway) -> None:
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{gateway.url}/readyz").status_code == 200
    schema = httpx.get(f"{gateway.url}/v1/openapi.json").json()
    assert "/v1/requests" in schema["paths"]
    assert httpx.get(f"{gateway.url}/v1/docs").status_code == 200
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert (
        'agent_runtime_gateway_http_requests_total{method="GET",route="/readyz",status="200"}'
        in metrics
    )


def test_submit_then_every_hop_then_the_report(gateway: LiveGateway) -> None:
    response = submit(gateway, "list files in data and read data/notes.txt", token="submit")
    assert response.status_code == 202, response.text
    cid = response.json()["correlation_id"]
    assert response.headers["location"] == f"/v1/requests/{cid}"
    stream = events(gateway, cid)
    hops = [data for name, _, data in stream if name == "hop"]
    assert [i for _, i, _ in stream if i not in (None, "end")] == [str(h["index"]) for h in hops]
    agents = [h["agent"] for h in hops]
    for agent in ("client", "intent_parser", "planner", "safety_checker", "router", "executor"):
        assert agent in agents, agents
    assert "reporter" in agents
    name, ident, end = stream[-1]
    assert (name, ident) == ("end", "end")
    assert end["state"] == "succeeded" and end["failure"] is None
    outputs = {s["id"]: s["output"] for s in end["report"]["steps"]}
    assert outputs["s2"] == "alpha beta gamma\ndelta\n"
    with gateway.client("read") as http:
        view = http.get(f"/v1/requests/{cid}").json()
    assert view["state"] == "succeeded" and len(view["hops"]) == len(hops)
    # resumable: after the third hop, the rest and the end again
    again = events(gateway, cid, last_event_id=str(hops[2]["index"]))
    assert [d["index"] for n, _, d in again if n == "hop"] == [h["index"] for h in hops[3:]]
    assert again[-1][0] == "end"


def test_wait_returns_the_finished_request(gateway: LiveGateway) -> None:
    cid = submit(gateway, "count words in data/notes.txt").json()["correlation_id"]
    with gateway.client("read") as http:
        view = http.post(f"/v1/requests/{cid}:wait", params={"timeout": 60}).json()
        assert view["state"] == "succeeded", view
        assert view["report"]["steps"][0]["output"]["words"] == 4
        again = http.get(f"/v1/requests/{cid}", params={"wait": 1}).json()
    assert again["state"] == "succeeded"


def test_a_retried_post_publishes_once(gateway: LiveGateway) -> None:
    key = str(uuid.uuid4())
    first = submit(gateway, "run echo once", **{"Idempotency-Key": key})
    second = submit(gateway, "run echo once", **{"Idempotency-Key": key})
    assert first.status_code == second.status_code == 202
    cid = first.json()["correlation_id"]
    assert second.json()["correlation_id"] == cid
    assert second.headers["location"] == first.headers["location"]
    inbox = gateway.pipeline.inbox("intent_parser")
    assert [m["correlation_id"] for m in inbox].count(cid) == 1
    problem(submit(gateway, "run echo twice", **{"Idempotency-Key": key}), 409)
    other = submit(gateway, "run echo once", **{"Idempotency-Key": key + "-b"})
    assert other.json()["correlation_id"] != cid


def pending(gw: LiveGateway, cid: str) -> dict[str, Any] | None:
    with gw.client("read") as http:
        waiting = http.get("/v1/approvals").json()
    return next((p["steps"] for p in waiting if p["correlation_id"] == cid), None)


def test_approving_from_the_api_unblocks_the_step(gateway: LiveGateway) -> None:
    cid = submit(gateway, "deploy web to prod version 7").json()["correlation_id"]
    steps = wait_until(lambda: pending(gateway, cid), 30, "the approval")
    assert list(steps) == ["s1"]
    with gateway.client("read") as http:
        assert http.get(f"/v1/requests/{cid}").json()["state"] == "waiting_approval"
    with gateway.client("approve") as http:
        decided = http.post(
            f"/v1/requests/{cid}/approvals",
            json={"approve": True, "approver": "ops-alice", "reason": "planned"},
        )
    assert decided.status_code == 200, decided.text
    assert decided.json()["steps"] == ["s1"]
    assert decided.json()["approver"] == "ops-alice via approve"
    name, _, end = events(gateway, cid)[-1]
    assert name == "end" and end["state"] == "succeeded", end
    assert end["report"]["steps"][0]["output"]["version"] == "7"


def test_a_rejected_step_ends_with_a_failure(gateway: LiveGateway) -> None:
    cid = submit(gateway, "deploy db to staging").json()["correlation_id"]
    wait_until(lambda: pending(gateway, cid), 30, "the approval")
    with gateway.client("approve") as http:
        decided = http.post(
            f"/v1/requests/{cid}/approvals", json={"approve": False, "reason": "not today"}
        )
        assert decided.status_code == 200, decided.text
        # a request with nothing waiting: a conflict, named
        unknown = http.post(f"/v1/requests/{uuid.uuid4()}/approvals", json={"approve": True})
        assert "waiting for approval" in problem(unknown, 409)["detail"]
    name, _, end = events(gateway, cid)[-1]
    assert name == "end" and end["state"] == "rejected"
    assert "not today" in end["report"]["reasons"][0]


def test_a_dead_lettered_request_ends_with_a_failure_and_can_be_replayed(
    make_gateway: Callable[..., LiveGateway],
) -> None:
    gw = make_gateway(echo_sink({"invalid_when_text_contains": "poison"}))
    cid = submit(gw, "poison pill").json()["correlation_id"]
    name, _, end = events(gw, cid)[-1]
    assert name == "end" and end["state"] == "failed" and end["report"] is None
    failure = end["failure"]
    assert failure["agent"] == "echo" and failure["dead_letter_id"]
    with gw.client("read") as http:
        letters = http.get("/v1/dead-letters").json()
        assert [x["correlation_id"] for x in letters] == [cid]
        letter_id = letters[0]["id"]
        shown = http.get(f"/v1/dead-letters/{letter_id}").json()
        assert shown["original"] and shown["reason"]
        problem(http.post(f"/v1/dead-letters/{letter_id}:replay"), 403)  # admin only
        problem(http.get("/v1/dead-letters/1-1"), 404)
    with gw.client("admin") as http:
        problem(http.post("/v1/dead-letters:purge", json={}), 422)  # select something
        problem(http.post("/v1/dead-letters:purge", json={"all": True}), 409)  # confirm
        dry = http.post("/v1/dead-letters:purge", json={"all": True, "dry_run": True}).json()
        assert [x["id"] for x in dry["would_purge"]] == [letter_id]
        replayed = http.post(f"/v1/dead-letters/{letter_id}:replay").json()
        assert replayed["new_id"] and replayed["correlation_id"] == cid
    with gw.client("all") as http:
        # the replayed poison is dead-lettered again; purge it for good
        again = wait_until(lambda: http.get("/v1/dead-letters").json(), 30, "the second letter")
        assert again[0]["correlation_id"] == cid and again[0]["id"] != letter_id
        purged = http.post("/v1/dead-letters:purge", json={"all": True, "confirm": True})
        assert purged.json()["purged"] == 1
        assert http.get("/v1/dead-letters").json() == []


def test_tokens_scopes_and_limits(gateway: LiveGateway) -> None:
    missing = problem(httpx.get(f"{gateway.url}/v1/status"), 401)
    assert "missing" in missing["detail"]
    bad = httpx.get(f"{gateway.url}/v1/status", headers={"Authorization": "Bearer nope"})
    problem(bad, 401)
    assert bad.headers["www-authenticate"].startswith("Bearer")
    with gateway.client("read") as http:
        assert http.get("/v1/status").status_code == 200
        denied = problem(http.post("/v1/requests", json={"text": "run echo x"}), 403)
        assert "'submit'" in denied["detail"]
    with gateway.client("limited") as http:
        for _ in range(LIMITED_CALLS):
            assert http.get("/v1/status").status_code == 200
        limited = http.get("/v1/status")
    problem(limited, 429)
    assert 0 < int(limited.headers["retry-after"]) <= 3600


def test_an_oversize_body_is_refused_before_parsing(gateway: LiveGateway) -> None:
    with gateway.client("submit") as http:
        big = http.post("/v1/requests", content=b'{"text": "' + b"a" * 200_000 + b'"}')
        problem(big, 413)

        def chunks() -> Any:  # no Content-Length: counted as it arrives
            yield b'{"text": "'
            for _ in range(100):
                yield b"a" * 1_000
            yield b'"}'

        problem(http.post("/v1/requests", content=chunks()), 413)
        deep = b"[" * 10_000 + b"]" * 10_000
        problem(
            http.post("/v1/requests", content=deep, headers={"content-type": "application/json"}),
            400,
        )


def test_status_shows_every_agent_type(gateway: LiveGateway) -> None:
    with gateway.client("read") as http:
        status = http.get("/v1/status").json()
    agents = {a["agent"]: a for a in status["agents"]}
    assert set(agents) == set(gateway.pipeline.pipeline.agents)
    assert all(a["workers_alive"] >= 1 for a in agents.values())
    assert {"msg_per_s", "lag", "pending", "oldest_pending_age_s", "dead_letters"} <= set(
        agents["planner"]
    )


def test_the_websocket_broadcasts_fleet_events(gateway: LiveGateway) -> None:
    ws_url = gateway.url.replace("http://", "ws://") + "/v1/events"
    with ws_connect(ws_url) as ws:
        ws.send(json.dumps({"token": gateway.tokens["read"]}))
        time.sleep(0)  # the feed starts on the first listener
        cid = submit(gateway, "run echo broadcast").json()["correlation_id"]
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            event = json.loads(ws.recv(timeout=60))
            if event.get("correlation_id") == cid:
                seen.append(event)
                if event["type"] == "request.finished":
                    break
    assert [e["type"] for e in seen] == ["request.started", "request.finished"]
    assert seen[-1]["state"] == "succeeded"


def test_a_websocket_without_a_token_is_closed(gateway: LiveGateway) -> None:
    ws_url = gateway.url.replace("http://", "ws://") + "/v1/events"
    with ws_connect(ws_url) as ws:
        ws.send(json.dumps({"token": "wrong"}))
        with pytest.raises(Exception) as closed:
            ws.recv(timeout=10)
    assert "4401" in str(closed.value)


def test_healthz_stays_up_while_redis_is_down(
    make_gateway: Callable[..., LiveGateway], tmp_path: Any
) -> None:
    server = EmbeddedServer(tmp_path / "own-redis", persistent=False)
    server.start()
    try:
        gw = make_gateway(url=server.url, start_workers=False)
        assert httpx.get(f"{gw.url}/readyz").status_code == 200
    finally:
        server.stop()
    wait_until(lambda: httpx.get(f"{gw.url}/readyz", timeout=10).status_code == 503, 30, "503")
    assert httpx.get(f"{gw.url}/healthz").status_code == 200
    body = httpx.get(f"{gw.url}/readyz", timeout=10).json()
    assert body["status"] == "unavailable"
    with gw.client("all", timeout=30) as http:  # a call that needs Redis: 503, retry later
        refused = http.get("/v1/status")
    assert problem(refused, 503)["detail"].startswith("the runtime's Redis server")
    assert refused.headers["retry-after"] == "1"


def test_login_sets_a_strict_cookie_that_the_api_accepts(gateway: LiveGateway) -> None:
    with httpx.Client(base_url=gateway.url, follow_redirects=False) as browser:
        failed = browser.post("/login", data={"token": "wrong"})
        assert (failed.status_code, failed.headers["location"]) == (303, "/?login=failed")
        assert "agent_runtime_token" not in browser.cookies
        problem(browser.get("/v1/status"), 401)
        ok = browser.post("/login", data={"token": gateway.tokens["read"]})
        assert (ok.status_code, ok.headers["location"]) == (303, "/")
        cookie = ok.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        assert browser.get("/v1/status").status_code == 200
        problem(browser.post("/v1/requests", json={"text": "run echo x"}), 403)
        assert browser.post("/logout").status_code == 303
        problem(browser.get("/v1/status"), 401)


def test_recent_requests_and_typed_payloads(gateway: LiveGateway) -> None:
    with gateway.client("all") as http:
        typed = http.post(
            "/v1/requests",
            json={"payload": {"text": "run echo typed"}, "message_type": "user.request"},
        )
        assert typed.status_code == 202, typed.text
        cid = typed.json()["correlation_id"]
        problem(http.post("/v1/requests", json={"payload": {"nope": 1}}), 422)
        problem(http.post("/v1/requests", json={"payload": {}, "message_type": "no.such"}), 422)
        problem(http.post("/v1/requests", json={"text": "x", "payload": {}}), 422)
        problem(http.post("/v1/requests", json={"text": "   "}), 422)
        problem(http.get(f"/v1/requests/{uuid.uuid4()}"), 404)
        assert http.post(f"/v1/requests/{cid}:wait").json()["state"] == "succeeded"
        recent = http.get("/v1/requests", params={"limit": 100}).json()
    mine = next(r for r in recent if r["correlation_id"] == cid)
    assert mine["state"] == "succeeded" and mine["text"] == "run echo typed"
    times = [r["published_at"] for r in recent]
    assert times == sorted(times, reverse=True)
