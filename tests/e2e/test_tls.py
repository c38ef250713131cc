"""TLS to Redis (docs/security.md, "TLS"): Debian's ``redis-server`` (built with TLS), started
here on a free port with TLS only and client certificates required, certificates made here
with ``openssl``. The six-agent default pipeline runs over ``rediss://`` with mutual TLS
(workers configured by the pipeline's ``redis_tls:``); plaintext and certificate-less
clients, a wrong CA and a host name the certificate does not name are refused, the CLI
saying so in one line."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
import redis

from agent_runtime.client import Client
from agent_runtime.testing import wait_until
from agent_runtime.transport.connect import connect
from protocols.pipeline import Report
from tests.e2e.test_cli import CLI, ROOT
from tests.fixtures.pipeline import LivePipeline, child_env, default_pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

FAST = {"block_ms": 100, "heartbeat_interval": 0.3, "drain_timeout": 2, "retry_backoff": 0.05}
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True)


def _ca(folder: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt",
        "ec_paramgen_curve:prime256v1", "-keyout", f"{name}.key", "-out", f"{name}.pem",
        "-days", "2", "-subj", f"/CN={name}",
        cwd=folder,
    )  # fmt: skip


def _signed(folder: Path, name: str, ca: str, extensions: str) -> None:
    (folder / f"{name}.ext").write_text(extensions + "\n")
    _openssl(
        "req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        cwd=folder,
    )  # fmt: skip


def make_certificates(folder: Path) -> None:
    """ca (signs the server's and the client's certificates) and other-ca (signs nothing)."""
    folder.mkdir(parents=True)
    _ca(folder, "ca")
    _ca(folder, "other-ca")
    _signed(folder, "server", "ca", "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth")
    _signed(folder, "client", "ca", "extendedKeyUsage=clientAuth")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class TlsServer:
    port: int
    certs: Path
    process: subprocess.Popen[bytes]

    def url(self, host: str = "localhost", *, client_cert: bool = True, ca: str = "ca") -> str:
        query = f"ssl_ca_certs={self.certs / f'{ca}.pem'}"
        if client_cert:
            query += f"&ssl_certfile={self.certs / 'client.pem'}"
            query += f"&ssl_keyfile={self.certs / 'client.key'}"
        return f"rediss://{host}:{self.port}/0?{query}"


def _start(root: Path, certs: Path, *, client_certs: str = "yes") -> TlsServer:
    port = _free_port()
    argv = [
        REDIS_SERVER,
        "--port", "0",  # no plaintext listener at all
        "--tls-port", str(port),
        "--bind", "127.0.0.1", "-::1",
        "--tls-cert-file", str(certs / "server.pem"),
        "--tls-key-file", str(certs / "server.key"),
        "--tls-ca-cert-file", str(certs / "ca.pem"),
        "--tls-auth-clients", client_certs,
        "--save", "", "--appendonly", "no",
        "--maxmemory-policy", "noeviction",
        "--dir", str(root),
        "--logfile", str(root / "server.log"),
    ]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return TlsServer(port, certs, process)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    root = tmp_path_factory.mktemp("tls")
    make_certificates(root / "certs")
    server = _start(root, root / "certs")
    try:
        client = redis.Redis.from_url(server.url())
        wait_until(lambda: _answers(client, server), 20, message="redis-server with TLS")
        client.close()
        yield server
    finally:
        server.process.terminate()
        server.process.wait(10)


def _answers(client: redis.Redis, server: TlsServer) -> bool:
    assert server.process.poll() is None, "redis-server exited (see server.log)"
    with contextlib.suppress(redis.ConnectionError):
        return bool(client.ping())
    return False


def test_the_default_pipeline_runs_over_mutual_tls(tls_server: TlsServer, tmp_path: Path) -> None:
    """Workers get a bare ``rediss://localhost:PORT`` URL; the CA, client certificate and key
    come from the pipeline file's ``redis_tls:`` (relative paths)."""
    (tmp_path / "tls").symlink_to(tls_server.certs)
    settings = default_pipeline(**FAST)
    settings["redis_tls"] = {
        "ca_file": "tls/ca.pem",
        "cert_file": "tls/client.pem",
        "key_file": "tls/client.key",
    }
    full_url = tls_server.url()
    pipe = LivePipeline(
        tmp_path, full_url, child_env(), prefix="tls" + uuid.uuid4().hex[:8], **settings
    )
    pipe.env["AGENT_RUNTIME_APPROVAL_KEY"] = secrets.token_hex(32)
    pipe.url = f"rediss://localhost:{tls_server.port}"  # what the workers are given

    async def run() -> Report:
        async with Client.connect(full_url, pipe.pipeline) as client:
            reply = await client.request(
                "list files in configs and read configs/policy.yaml", timeout=60
            )
            assert isinstance(reply.payload, Report)
            return reply.payload

    try:
        pipe.start_all()
        report = anyio.run(run)
    finally:
        pipe.close()
    assert report.status == "succeeded", report.reasons
    assert [s.tool for s in report.steps] == ["file_list", "file_read"]


def test_plaintext_clients_are_refused(tls_server: TlsServer) -> None:
    client = redis.Redis(host="127.0.0.1", port=tls_server.port, socket_timeout=5)
    try:
        with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
            client.ping()
    finally:
        client.close()


def test_clients_without_a_certificate_are_refused(tls_server: TlsServer) -> None:
    client = redis.Redis.from_url(tls_server.url(client_cert=False), socket_timeout=5)
    try:
        with pytest.raises(redis.ConnectionError):
            client.ping()
    finally:
        client.close()


def test_a_certificate_for_another_host_name_is_refused(tls_server: TlsServer) -> None:
    """The certificate names ``localhost``, not ``127.0.0.1``: checked by default."""

    async def ping() -> None:
        connection = connect(tls_server.url("127.0.0.1"))
        try:
            await connection.redis.ping()
        finally:
            await connection.redis.aclose()

    with pytest.raises(redis.ConnectionError, match=r"match|mismatch|IP address"):
        anyio.run(ping)


def test_a_wrong_ca_fails_with_one_line(tls_server: TlsServer, tmp_path: Path) -> None:
    """The CLI, given a CA that did not sign the server's certificate (environment), says so in
    one line and exits 4."""
    env = {
        **child_env(),
        "AGENT_RUNTIME_HOME": str(tmp_path),
        "AGENT_RUNTIME_REDIS_TLS_CA_FILE": str(tls_server.certs / "other-ca.pem"),
        "AGENT_RUNTIME_REDIS_TLS_CERT_FILE": str(tls_server.certs / "client.pem"),
        "AGENT_RUNTIME_REDIS_TLS_KEY_FILE": str(tls_server.certs / "client.key"),
    }
    result = subprocess.run(
        [CLI, "status", "--redis-url", f"rediss://localhost:{tls_server.port}"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 4, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "certificate verify failed" in lines[0] and "Traceback" not in result.stderr


def test_verification_cannot_be_turned_off(tls_server: TlsServer) -> None:
    with pytest.raises(ValueError, match="ssl_cert_reqs"):
        connect(tls_server.url() + "&ssl_cert_reqs=none")


def test_a_client_certificate_is_optional_where_the_server_does_not_ask(
    tls_server: TlsServer, tmp_path: Path
) -> None:
    """One-way TLS (``tls-auth-clients no``): the CA alone is enough, from the environment."""
    server = _start(tmp_path, tls_server.certs, client_certs="no")
    url = f"rediss://localhost:{server.port}"
    env = {"AGENT_RUNTIME_REDIS_TLS_CA_FILE": str(tls_server.certs / "ca.pem")}

    async def ping() -> bool:
        connection = connect(url)
        try:
            return bool(await connection.redis.ping())
        finally:
            await connection.redis.aclose()

    def answers() -> bool:
        assert server.process.poll() is None, "redis-server exited (see server.log)"
        with contextlib.suppress(redis.ConnectionError):
            return anyio.run(ping)
        return False

    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            assert wait_until(answers, 20, message="one-way TLS")
    finally:
        server.process.terminate()
        server.process.wait(10)
