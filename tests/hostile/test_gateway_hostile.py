"""Hostile input to what the gateway parses: request bodies, headers (Authorization,
Idempotency-Key, Last-Event-ID, Content-Type, Content-Length), the login form, WebSocket
first messages, the token settings, and trace records shown as hops. Nothing may answer a
5xx, raise out of a parser, or echo a token."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect as ws_connect

from agent_runtime.errors import ConfigError
from agent_runtime.gateway.auth import TokenTable, hash_token
from agent_runtime.gateway.events import _start
from agent_runtime.gateway.problems import Problem
from agent_runtime.gateway.settings import GatewaySettings, TokenSpec, parse_tokens_env
from agent_runtime.gateway.views import hop
from tests.fixtures.gateway import LiveGateway
from tests.fixtures.pipeline import echo_sink
from tests.hostile.strategies import json_values

latin1 = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=300)
#: Any header value HTTP/1.1 can carry (visible ASCII, obs-text, inner spaces and tabs).
header_bytes = st.lists(
    st.integers(0x20, 0x7E) | st.integers(0x80, 0xFF) | st.just(0x09), max_size=300
).map(lambda codes: bytes(codes).strip(b" \t"))
LOOSE = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


# ------------------------------------------------------------------ parsers, in process
@given(st.binary(max_size=2_000) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_trace_record_is_a_hop_or_nothing(record: bytes) -> None:
    shown = hop(3, record)
    if shown is not None:
        assert shown["index"] == 3
        json.dumps(shown, allow_nan=False)  # always valid JSON for an SSE data line


def test_a_record_nested_past_the_cap_is_not_parsed() -> None:
    assert hop(0, b"[" * 100_000 + b"]" * 100_000) is None
    assert hop(0, b'{"agent": ' * 50_000) is None


@given(st.text(max_size=500))
def test_the_tokens_variable_parses_or_says_which_entry(value: str) -> None:
    try:
        specs = parse_tokens_env(value)
    except ConfigError as exc:
        assert "entry" in str(exc)
    else:
        assert all(len(s.sha256) == 64 for s in specs)


def test_a_malformed_tokens_entry_never_shows_its_text() -> None:
    secret = "plain-secret-token-by-mistake"
    for value in (secret, f"ci:{secret}:submit", f"ci:{hash_token('x')}:{secret}"):
        with pytest.raises(ConfigError) as caught:
            parse_tokens_env(value)
        assert secret not in str(caught.value)


@given(st.text(max_size=600))
def test_any_presented_token_is_found_or_not(token: str) -> None:
    table = TokenTable(
        GatewaySettings(tokens=(TokenSpec(name="a", sha256=hash_token("right"), scopes=("read",)),))
    )
    assert table.find(token) is None or token == "right"
    assert table.find("right") is not None


@given(st.text(max_size=40))
@example("\u00b9")  # a Unicode digit: isdigit() says yes, int() says no (once a 500)
def test_any_last_event_id_is_a_position_or_a_400(value: str) -> None:
    try:
        start = _start(value)
    except Problem as exc:
        assert exc.status == 400
    else:
        assert 0 <= start < 10**9 + 1


# ------------------------------------------------------------------ over HTTP
@pytest.fixture
def hostile_gateway(make_gateway: Callable[..., LiveGateway]) -> LiveGateway:
    """A gateway without workers: what it parses is the same, requests just wait."""
    return make_gateway(
        echo_sink(),
        start_workers=False,
        rate_limit={"requests": 1_000_000, "per_seconds": 60},
        max_wait_seconds=0.2,
    )


def assert_answer(response: httpx.Response, gw: LiveGateway) -> None:
    assert response.status_code < 500, f"{response.status_code} {response.text}\n{gw.log()}"
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json"
    for token in gw.tokens.values():
        assert token not in response.text


def test_hostile_bodies_and_headers(hostile_gateway: LiveGateway) -> None:
    gw = hostile_gateway
    auth = {"Authorization": f"Bearer {gw.tokens['all']}"}
    with httpx.Client(base_url=gw.url, timeout=30) as http:

        @LOOSE
        @given(
            body=st.binary(max_size=3_000)
            | json_values.map(lambda v: json.dumps(v).encode())
            | st.fixed_dictionaries(
                {"text": st.text(max_size=50)},
                optional={
                    "payload": json_values,
                    "deadline_seconds": json_values,
                    "budget": json_values,
                    "message_type": st.text(max_size=30),
                },
            ).map(lambda d: json.dumps(d).encode()),
            content_type=st.sampled_from(
                [
                    "application/json",
                    "text/plain",
                    "application/x-www-form-urlencoded",
                    "",
                    "application/json; charset=latin-1",
                ]
            ),
            idem=st.none() | header_bytes,
        )
        def post(body: bytes, content_type: str, idem: bytes | None) -> None:
            headers: dict[str, Any] = {**auth, "content-type": content_type}
            if idem is not None:
                headers["idempotency-key"] = idem
            assert_answer(http.post("/v1/requests", content=body, headers=headers), gw)

        post()

        @LOOSE
        @given(
            authorization=header_bytes,
            cookie=header_bytes,
            last=header_bytes,
            path=st.sampled_from(
                [
                    "/v1/status",
                    "/v1/requests",
                    "/v1/approvals",
                    "/v1/dead-letters",
                    f"/v1/requests/{uuid.uuid4()}/events",
                ]
            ),
        )
        def get(authorization: bytes, cookie: bytes, last: bytes, path: str) -> None:
            headers = {"authorization": authorization, "cookie": cookie, "last-event-id": last}
            assert_answer(http.get(path, headers=headers), gw)

        get()

        @LOOSE
        @given(
            form=st.binary(max_size=2_000)
            | st.lists(
                st.sampled_from([b"token=", b"a=1", b"&", b"=", b"%", b"%zz"]), max_size=40
            ).map(b"".join)
        )
        def login(form: bytes) -> None:
            response = http.post(
                "/login",
                content=form,
                headers={"content-type": "application/x-www-form-urlencoded"},
                follow_redirects=False,
            )
            assert response.status_code == 303
            assert response.headers["location"] == "/?login=failed"

        login()


def test_hostile_websocket_first_messages(hostile_gateway: LiveGateway) -> None:
    url = hostile_gateway.url.replace("http://", "ws://") + "/v1/events"
    for message in (
        "",
        "null",
        "[]",
        '{"token": 5}',
        '{"token": "' + "a" * 10_000 + '"}',
        "{" * 5_000,
        "\udcff"[:0] + "x" * 100_000,
    ):
        with ws_connect(url, max_size=None) as ws:
            ws.send(message)
            with pytest.raises(Exception) as closed:
                ws.recv(timeout=10)
            assert "4401" in str(closed.value)
    assert httpx.get(f"{hostile_gateway.url}/healthz").status_code == 200


def raw_status(gw: LiveGateway, request: bytes) -> int | None:
    """The status of the answer to ``request`` sent as raw bytes (None: connection closed)."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=15) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    if not data:
        return None
    return int(data.split(b" ", 2)[1])


LENGTHS = [b"-1", b"abc", b"99999999999999999999", b"1e3", b"10, 12", b"100000", b" 13"]


def test_broken_or_oversize_content_lengths(hostile_gateway: LiveGateway) -> None:
    for length in LENGTHS:
        check_length(hostile_gateway, length)


def check_length(gw: LiveGateway, length: bytes) -> None:
    token = gw.tokens["all"].encode()
    request = (
        b"POST /v1/requests HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
        + token
        + b"\r\nContent-Type: application/json\r\nContent-Length: "
        + length
        + b'\r\nConnection: close\r\n\r\n{"text": "x"}'
    )
    status = raw_status(gw, request)
    assert status is None or 400 <= status < 500, (length, status)
    if length == b"100000":  # announced over the cap: refused before reading
        assert status == 413
    assert httpx.get(f"{gw.url}/healthz").status_code == 200
