"""Gateway settings, tokens and the ``serve`` command's token helpers."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from agent_runtime.cli import main
from agent_runtime.errors import ConfigError
from agent_runtime.gateway.auth import TokenTable, hash_token
from agent_runtime.gateway.settings import TOKENS_ENV, load_settings

H1, H2 = hash_token("one"), hash_token("two")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_tokens_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"tokens:\n  - {{name: ci, sha256: {H1}, scopes: [submit, read],"
        " rate_limit: {requests: 5, per_seconds: 10}}\n"
        "max_body_bytes: 2048\ncors_origins: [https://ops.example.com]\n",
    )
    settings = load_settings(path, {TOKENS_ENV: f"ops:{H2.upper()}:read+approve+admin\n"})
    table = TokenTable(settings)
    ci, ops = table.find("one"), table.find("two")
    assert ci is not None and ci.scopes == {"submit", "read"} and ci.rate_limit.requests == 5
    assert ops is not None and ops.scopes == {"read", "approve", "admin"}
    assert ops.rate_limit.requests == 600  # the default
    assert table.find("three") is None and table.find("") is None
    assert settings.max_body_bytes == 2048 and settings.cors_origins == ("https://ops.example.com",)


def test_defaults_without_a_file(tmp_path: Path) -> None:
    settings = load_settings(None, {})
    assert settings.tokens == () and settings.cors_origins == ()
    assert TokenTable(settings).find("anything") is None


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("bogus: 1\n", "", "bogus"),
        (f"tokens: [{{name: a, sha256: {H1}, scopes: [root]}}]\n", "", "scopes"),
        ("tokens: [{name: a, sha256: abc, scopes: [read]}]\n", "", "SHA-256"),
        (f"tokens: [{{name: a, sha256: {H1}, scopes: [read]}}]\n", f"a:{H2}:read", "duplicate"),
        ("- a list\n", "", "mapping"),
        ("", "a:b", "entry 1"),
        ("", f"ok:{H1}:read;bad:{H2}:write", "entry 2"),
    ],
)
def test_bad_settings_are_one_clear_error(
    tmp_path: Path, text: str, env: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, text), {TOKENS_ENV: env})


def test_hash_token_reads_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
    assert main(["serve", "--hash-token"]) == 0
    assert capsys.readouterr().out.strip() == hashlib.sha256(b"s3cret").hexdigest()


def test_new_token_prints_a_token_and_its_hash(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--new-token"]) == 0
    token, digest = capsys.readouterr().out.split()
    assert len(token) > 40 and digest == hash_token(token)
    assert main(["serve", "--new-token"]) == 0
    assert capsys.readouterr().out.split()[0] != token


def test_serve_refuses_a_bad_port(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "70000"]) == 2
    assert "--port 70000" in capsys.readouterr().err
