"""The one URL parser (agents/urls.py) under generated input: it never raises anything but its
refusal, the safety policy and the http tool reach the same verdict (with the same reason) on
every input, and a URL it accepts is read to the same host and port by urllib and by httpx,
the library that connects."""

from __future__ import annotations

import string
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.executors.base import ToolError
from agents.executors.http import Http, HttpOptions
from agents.policy import HttpPolicy, _http_problems
from agents.urls import BadUrl, Url, parse_url

HOSTS = ["example.com", "127.0.0.1", "127.0.0.1:8080", "[::1]:8443", "xn--bcher-kva.example"]
DEFAULT_PORTS = {"http": 80, "https": 443}

_PIECES = st.sampled_from(
    [
        "http://",
        "https://",
        "HTTP://",
        "ftp://",
        "javascript:",
        "http:/",
        "//",
        "example.com",
        "127.0.0.1",
        "[::1]",
        "[fe80::1%25eth0]",
        "xn--bcher-kva.example",
        "bücher.example",
        "0x7f.1",
        "2130706433",
        "@",
        ":",
        ":8080",
        ":0",
        ":65536",
        ":-1",
        ":+80",
        ":\uff18\uff10",
        "\\",
        "/",
        "?",
        "#",
        "%2e",
        "%40",
        " ",
        "\t",
        "\x00",
        ".",
        "-",
        "user:pw",
        "\uff45xample.com",
        "\u200b",
    ]
)
_ASCII = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@%[]/?#"
_HOST = st.sampled_from(
    ["example.com", "127.0.0.1", "[::1]", "xn--bcher-kva.example", "[::ffff:7f00:1]", "0x7f.1"]
) | st.from_regex(r"[A-Za-z0-9.\-]{1,24}", fullmatch=True)
_PORT = st.sampled_from(["", ":80", ":8080", ":", ":8a", ":+1", "::1"]) | st.integers(
    -1, 99_999
).map(lambda p: f":{p}")
_STRUCTURED = st.tuples(
    st.sampled_from(["http", "https", "HTTPS", "ftp", "h"]),
    st.sampled_from(["://", "://", ":/", ":///"]),
    st.sampled_from(["", "", "", "user@", "a:b@", "x\\@"]),
    _HOST,
    _PORT,
    st.text(alphabet=_ASCII, max_size=16).map(lambda rest: "/" + rest),
).map("".join)


@st.composite
def _mutated(draw: st.DrawFn) -> str:
    """A well-formed URL with a hostile piece spliced in somewhere."""
    url = draw(_STRUCTURED)
    at = draw(st.integers(0, len(url)))
    return url[:at] + draw(_PIECES) + url[at:]


URLISH = (
    _STRUCTURED | _mutated() | st.lists(_PIECES | st.text(max_size=6), max_size=10).map("".join)
)
ANY_INPUT = URLISH | st.text(max_size=80) | st.none() | st.integers() | st.lists(st.text())


def tool_verdict(url: Any) -> str | None:
    tool = Http(HttpOptions(hosts=HOSTS))
    try:
        tool.check({"url": url, "method": "GET"})
    except ToolError as exc:
        return str(exc)
    return None


def policy_verdict(url: Any) -> str | None:
    problems = _http_problems(HttpPolicy(hosts=HOSTS), {"url": url, "method": "GET"})
    return "; ".join(problems) or None


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_INPUT)
def test_the_parser_only_ever_refuses(value: Any) -> None:
    try:
        url = parse_url(value)
    except BadUrl as exc:
        assert str(exc)
        return
    assert isinstance(url, Url) and url.scheme in DEFAULT_PORTS


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(URLISH | st.text(max_size=60) | st.none())
def test_policy_and_tool_agree_on_every_input(value: Any) -> None:
    policy, tool = policy_verdict(value), tool_verdict(value)
    assert (policy is None) == (tool is None), (value, policy, tool)
    if policy is not None and policy.startswith("url refused"):
        assert policy == tool


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(_STRUCTURED | _mutated())
def test_an_accepted_url_means_the_same_host_to_urllib_and_httpx(value: str) -> None:
    try:
        url = parse_url(value)
    except BadUrl:
        return
    port = url.port or DEFAULT_PORTS[url.scheme]
    split = urlsplit(url.text)
    assert (split.hostname, split.port or DEFAULT_PORTS[url.scheme]) == (url.host, port)
    fetched = httpx.URL(url.text)
    # raw_host: the name httpx connects to (``host`` shows an IDNA name decoded, "bücher")
    host = fetched.raw_host.decode("ascii")
    assert (host, fetched.port or DEFAULT_PORTS[url.scheme]) == (url.host, port)
    assert not fetched.userinfo


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8080\\@example.com/", "backslash"),
        ("http://user:pw@example.com/", "credentials"),
        ("http://example.com@127.0.0.1/", "credentials"),
        ("http://example.com:99999/", "out of range"),
        ("http://example.com:0/", "out of range"),
        ("http://example.com:80a/", "not a number"),
        ("http://example.com:/", "not a number"),
        ("http://bücher.example/", "non-ASCII"),
        ("http://\uff45xample.com/", "non-ASCII"),
        ("http://0x7f.1/", "dotted-quad"),
        ("http://2130706433/", "dotted-quad"),
        ("http://127.000.0.1/", "dotted-quad"),
        ("http://exa%6dple.com/", "valid host name"),
        ("http://[fe80::1%25eth0]/", "IPv6"),
        ("http:///path", "no host"),
        ("file:///etc/passwd", "scheme"),
        ("http://example.com /", "space"),
    ],
)
def test_odd_urls_are_refused_with_a_reason_by_both(url: str, reason: str) -> None:
    with pytest.raises(BadUrl, match=reason):
        parse_url(url)
    assert reason in (policy_verdict(url) or "")
    assert policy_verdict(url) == tool_verdict(url)


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("http://Example.COM/a?b#c", "example.com", None),
        ("https://127.0.0.1:8080", "127.0.0.1", 8080),
        ("http://[::1]:8443/x", "::1", 8443),
        ("http://xn--bcher-kva.example/", "xn--bcher-kva.example", None),
    ],
)
def test_plain_urls_are_read_and_allowed(url: str, host: str, port: int | None) -> None:
    parsed = parse_url(url)
    assert (parsed.host, parsed.port) == (host, port)
    assert policy_verdict(url) is None and tool_verdict(url) is None
