"""Built-in tools: sandboxing, allow-lists, caps, timeouts, idempotency. No network: the http
tool talks to a local server started by the test."""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from agents.executors.base import ToolContext, ToolError, TransientToolError
from agents.executors.deploy import Deploy, DeployOptions
from agents.executors.files import FileList, FileListOptions, FileRead, FileReadOptions
from agents.executors.http import Http, HttpOptions
from agents.executors.python import Python, PythonOptions
from agents.executors.shell import Shell, ShellOptions


def context(sandbox: Path, step: str = "s1") -> ToolContext:
    return ToolContext(
        correlation_id="cid", step_id=step, idempotency_key=f"cid:{step}", sandbox=sandbox.resolve()
    )


def run(tool: Any, args: dict[str, Any], sandbox: Path) -> Any:
    return anyio.run(tool.run, args, context(sandbox))


# ------------------------------------------------------------------ files
def test_file_read_reads_inside_the_sandbox_and_caps(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x" * 100)
    out = run(FileRead(FileReadOptions(max_bytes=10)), {"path": "a.txt"}, tmp_path)
    assert out.output == "x" * 10 and out.truncated


@pytest.mark.parametrize(
    "path",
    ["../outside.txt", "/etc/passwd", "link.txt", ".env", "sub/../../outside.txt", "key.pem"],
)
def test_file_read_refuses_escapes_and_secrets(tmp_path: Path, path: str) -> None:
    sandbox = tmp_path / "box"
    sandbox.mkdir()
    (tmp_path / "outside.txt").write_text("secret")
    (sandbox / "link.txt").symlink_to(tmp_path / "outside.txt")
    (sandbox / ".env").write_text("TOKEN=1")
    (sandbox / "key.pem").write_text("k")
    with pytest.raises(ToolError):
        run(FileRead(FileReadOptions()), {"path": path}, sandbox)


def test_file_list_lists_entries_and_hides_denied_names(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("12")
    (tmp_path / "dir").mkdir()
    (tmp_path / ".env").write_text("x")
    out = run(FileList(FileListOptions()), {"path": "."}, tmp_path)
    assert out.output == [
        {"name": "b.txt", "type": "file", "size": 2},
        {"name": "dir", "type": "dir", "size": None},
    ]


# ------------------------------------------------------------------ shell
def test_shell_runs_argv_in_the_sandbox_with_a_stripped_environment(
    tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("AGENT_RUNTIME_APPROVAL_PUBLIC_KEY", "must-not-leak-0123456789")
    shell = Shell(ShellOptions(commands=["env", "pwd"]))
    env_out = run(shell, {"argv": ["env"]}, tmp_path).output["stdout"]
    assert "must-not-leak" not in env_out and "PATH=" in env_out
    assert run(shell, {"argv": ["pwd"]}, tmp_path).output["stdout"].strip() == str(
        tmp_path.resolve()
    )


def test_shell_never_uses_a_shell(tmp_path: Path) -> None:
    out = run(Shell(ShellOptions(deny_args=[])), {"argv": ["echo", "$HOME;", "`id`"]}, tmp_path)
    assert out.output["stdout"] == "$HOME; `id`\n"


@pytest.mark.parametrize(
    "argv",
    [["rm", "-rf", "x"], ["/bin/echo", "x"], ["echo", "../x"], ["echo", "/etc"], [], "echo hi"],
)
def test_shell_refuses_what_is_not_allowed(tmp_path: Path, argv: Any) -> None:
    with pytest.raises(ToolError):
        run(Shell(ShellOptions()), {"argv": argv}, tmp_path)


def test_shell_timeout_kills_the_process(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="timed out"):
        run(Shell(ShellOptions(timeout=0.3)), {"argv": ["sleep", "30"]}, tmp_path)


def test_shell_caps_output_and_reports_failure(tmp_path: Path) -> None:
    out = run(Shell(ShellOptions(max_output_bytes=5)), {"argv": ["echo", "0123456789"]}, tmp_path)
    assert out.output["stdout"] == "01234" and out.truncated
    with pytest.raises(ToolError, match="exited with code 1"):
        run(Shell(ShellOptions()), {"argv": ["false"]}, tmp_path)


# ------------------------------------------------------------------ http
class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/fail":
            self.send_response(503)
            self.end_headers()
            return
        body = (self.headers.get("Idempotency-Key", "") + "|" + "y" * 50).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def local_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_fetches_allowed_hosts_with_the_idempotency_key(
    tmp_path: Path, local_server: str
) -> None:
    tool = Http(HttpOptions(hosts=["127.0.0.1"], max_bytes=20))
    out = run(tool, {"url": f"http://{local_server}/x"}, tmp_path)
    assert out.output["status"] == 200
    assert out.output["body"].startswith("cid:s1|") and len(out.output["body"]) == 20
    assert out.truncated


def test_http_refuses_other_hosts_and_flags_server_errors(
    tmp_path: Path, local_server: str
) -> None:
    with pytest.raises(ToolError, match="allow-list"):
        run(Http(HttpOptions(hosts=["example.com"])), {"url": f"http://{local_server}/"}, tmp_path)
    with pytest.raises(TransientToolError):
        run(
            Http(HttpOptions(hosts=["127.0.0.1"])), {"url": f"http://{local_server}/fail"}, tmp_path
        )


# ------------------------------------------------------------------ python, deploy
def test_python_calls_only_listed_functions(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("one two\nthree\n")
    tool = Python(PythonOptions())
    out = run(tool, {"function": "word_count", "kwargs": {"path": "t.txt"}}, tmp_path)
    assert out.output == {"path": "t.txt", "lines": 2, "words": 3, "bytes": 14}
    with pytest.raises(ToolError, match="not allowed"):
        run(tool, {"function": "os.system", "kwargs": {}}, tmp_path)


def test_python_functions_come_only_from_the_allow_list() -> None:
    from agent_runtime.errors import ImportNotAllowedError

    with pytest.raises(ImportNotAllowedError):
        Python(PythonOptions(functions={"sys": "os:system"}))


def test_deploy_honours_the_idempotency_key(tmp_path: Path) -> None:
    tool = Deploy(DeployOptions(state_dir=str(tmp_path / "deploys"), duration=0))
    args = {"service": "web", "environment": "prod", "version": "2"}
    first = run(tool, args, tmp_path).output
    again = run(tool, args, tmp_path).output
    assert not first["already_applied"] and again["already_applied"]
    assert again["deployed_at"] == first["deployed_at"]
    assert os.listdir(tmp_path / "deploys") == ["web@prod.json"]
