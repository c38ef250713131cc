"""The Redis users' rules and file, password files, credentials in URLs, TLS settings: pure
logic (the real servers enforcing them: tests/e2e/test_acl.py and tests/e2e/test_tls.py)."""

from __future__ import annotations

import hashlib
import re
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.connection import parse_url

from agent_runtime.config.acl import publish_targets
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.transport.acl import (
    AclUser,
    PasswordStore,
    agent_rules,
    render_file,
    with_credentials,
)
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.tls import TlsSettings, client_options, with_settings

ROOT = Path(__file__).resolve().parents[2]


def test_who_may_write_which_inbox_in_the_default_pipeline() -> None:
    targets = publish_targets(Pipeline.load(ROOT / "configs" / "default.yaml"))
    assert targets == {
        "intent_parser": ["planner", "reporter"],
        "planner": ["reporter", "safety_checker"],
        "safety_checker": ["reporter", "router"],
        "router": ["executor", "reporter", "router"],
        "executor": ["router"],
        "reporter": [],
    }


def test_no_rule_grants_administration_or_every_key() -> None:
    rules = agent_rules(Keys("ar"), "executor", ["router"], ["ext:replies"])
    text = " ".join(rules)
    assert "+@all" not in text and "~*" not in text and "allkeys" not in text
    assert rules[:3] == ("resetkeys", "resetchannels", "-@all")
    selectors = [r for r in rules if r.startswith("(")]
    assert selectors and all(s.endswith("-@admin -@dangerous)") for s in selectors)
    assert "~ext:replies" in text
    for forbidden in ("+keys", "+flushall", "+flushdb", "+config", "+debug", "+info", "+scan"):
        assert f"{forbidden} " not in f"{text} "


def test_glob_characters_of_a_reply_stream_are_literal() -> None:
    text = " ".join(agent_rules(Keys("ar"), "reporter", [], ["odd*[stream]?"]))
    assert r"~odd\*\[stream\]\?" in text


def test_a_reply_stream_with_a_space_is_refused() -> None:
    with pytest.raises(ValueError, match="whitespace"):
        agent_rules(Keys("ar"), "reporter", [], ["two words"])


def test_the_file_holds_hashes_and_switches_the_default_user_off() -> None:
    user = AclUser("ar-executor", "s3cret-password", ("resetkeys", "-@all"))
    text = render_file([user])
    assert text.splitlines()[0] == "user default off resetkeys resetchannels -@all"
    assert "s3cret-password" not in text
    assert f"#{hashlib.sha256(b's3cret-password').hexdigest()}" in text
    assert "user default" not in render_file([user], disable_default=False)


def test_passwords_are_private_files_made_once(tmp_path: Path) -> None:
    store = PasswordStore(tmp_path / "acl")
    first = store.get("ar-router")
    assert len(first) >= 40 and store.get("ar-router") == first
    assert store.get("ar-executor") != first
    assert stat.S_IMODE((tmp_path / "acl" / "ar-router").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "acl").stat().st_mode) == 0o700


@given(
    user=st.from_regex(r"[a-z][a-z0-9_\-]{0,20}", fullmatch=True),
    password=st.text(min_size=1, max_size=64).filter(lambda p: "\x00" not in p),
    url=st.sampled_from(
        [
            "unix:///run/x/redis.sock",
            "redis://host:6390/0",
            "rediss://old:pw@host:6390/1?ssl_ca_certs=/ca.pem",
            "unix://someone@/tmp/r.sock",
        ]
    ),
)
def test_credentials_survive_the_url(user: str, password: str, url: str) -> None:
    parsed = parse_url(with_credentials(url, user, password))
    assert parsed["username"] == user and parsed["password"] == password
    rest = {k: v for k, v in parsed.items() if k not in ("username", "password")}
    before = {k: v for k, v in parse_url(url).items() if k not in ("username", "password")}
    assert rest == before


def test_tls_from_the_environment_and_the_url_query_wins() -> None:
    env = {
        "AGENT_RUNTIME_REDIS_TLS_CA_FILE": "/env/ca.pem",
        "AGENT_RUNTIME_REDIS_TLS_CERT_FILE": "/env/client.pem",
        "AGENT_RUNTIME_REDIS_TLS_KEY_FILE": "/env/client.key",
        "AGENT_RUNTIME_REDIS_TLS_CHECK_HOSTNAME": "false",
    }
    options = client_options("rediss://h:1", env)
    assert options == {
        "ssl_cert_reqs": "required",
        "ssl_ca_certs": "/env/ca.pem",
        "ssl_certfile": "/env/client.pem",
        "ssl_keyfile": "/env/client.key",
        "ssl_check_hostname": False,
    }
    assert client_options("redis://h:1", env) == {}  # no TLS, nothing
    assert client_options("unix:///x.sock", env) == {}


@pytest.mark.parametrize("reqs", ["none", "optional", "CERT_NONE"])
def test_turning_verification_off_is_refused(reqs: str) -> None:
    with pytest.raises(ValueError, match="verifies"):
        client_options(f"rediss://h:1/?ssl_cert_reqs={reqs}", {})


def test_a_bad_hostname_flag_is_named() -> None:
    with pytest.raises(ValueError, match="AGENT_RUNTIME_REDIS_TLS_CHECK_HOSTNAME"):
        client_options("rediss://h:1", {"AGENT_RUNTIME_REDIS_TLS_CHECK_HOSTNAME": "maybe"})


def test_config_tls_fills_only_what_the_url_and_environment_leave_open() -> None:
    settings = TlsSettings("/cfg/ca.pem", "/cfg/c.pem", "/cfg/c.key", False)
    url = with_settings("rediss://h:1/0?ssl_ca_certs=/url/ca.pem", settings, {})
    parsed = parse_url(url)
    assert parsed["ssl_ca_certs"] == "/url/ca.pem"  # type: ignore[typeddict-item]
    assert parsed["ssl_certfile"] == "/cfg/c.pem"  # type: ignore[typeddict-item]
    assert parsed["ssl_check_hostname"] is False  # type: ignore[typeddict-item]
    env = {"AGENT_RUNTIME_REDIS_TLS_KEY_FILE": "/env/c.key"}
    assert "ssl_keyfile" not in with_settings("rediss://h:1", settings, env)
    assert with_settings("redis://h:1", settings, {}) == "redis://h:1"


@given(path=st.text(min_size=1, max_size=80).filter(lambda p: "\x00" not in p))
def test_any_config_path_reaches_redis_py_unchanged(path: str) -> None:
    url = with_settings("rediss://h:1/0", TlsSettings(ca_file=path), {})
    assert parse_url(url)["ssl_ca_certs"] == path  # type: ignore[typeddict-item]


def test_every_command_the_scripts_call_is_granted() -> None:
    """A command added to a Lua script of the transport must be added to the agents' rules too
    (else a worker's script fails with NOPERM under its user). The e2e test finds the ones the
    pipeline sends from Python (ACL LOG)."""
    granted = {
        token[1:].lower()
        for rule in agent_rules(Keys("ar"), "router", ["executor"])
        for token in rule.strip("()").split()
        if token.startswith("+")
    }
    called: set[str] = set()
    for path in (ROOT / "agent_runtime" / "transport").glob("*.py"):
        if not path.name.startswith("memory"):  # the in-memory transport's Lua emulation
            for name, sub in re.findall(
                r"redis\.call\(\s*'([A-Za-z]+)'(?:\s*,\s*'([A-Za-z]+)')?", path.read_text()
            ):
                # a container command (XGROUP DELCONSUMER) is granted by its subcommand
                container = name.upper() in ("XGROUP", "XINFO", "CLIENT", "OBJECT")
                called.add(f"{name}|{sub}" if container and sub else name)
    assert {"XADD", "XACK", "SADD", "HSETNX", "TIME"} <= called  # the scan finds them
    assert {c.lower() for c in called} - granted == set()
