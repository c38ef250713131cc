#!/usr/bin/env python3
"""Build the project's Dockerfile with podman and no network during the build, without any
registry: the image test (tests/image/) and docs/deployment.md "Building the image without a
registry" use it.

1. base: a Debian bookworm root file system made with ``mmdebstrap`` (python3, python3-venv,
   procps, ca-certificates: what the Dockerfile's stages need), ``podman import``ed under the
   Dockerfile's base image name (``debian:bookworm-slim``) in a private podman storage;
2. wheelhouse: the project's dependencies as wheels for Debian's Python (3.11, manylinux,
   this machine's architecture), fetched on the host with ``pip download``;
3. ``podman build --network=none --pull=never --build-arg PIP_OFFLINE=1`` of a build context
   holding the Dockerfile's inputs and that wheelhouse.

Steps 1 and 2 need the network the first time (Debian mirror, package index) and are cached
under ``$AGENT_RUNTIME_IMAGE_CACHE`` (default ``~/.cache/agent-runtime-image``), keyed by a
hash of their inputs; podman's storage lives there too, so its layer cache makes a rebuild of
unchanged sources quick. podman runs with ``--runtime runc --cgroup-manager cgroupfs`` and
``default_ulimits = []`` (containers.conf): it works on cgroup v1 hosts, where crun does not.

    python deploy/docker/build_offline.py --tag agent-runtime:dev
    eval "$(python deploy/docker/build_offline.py --print-env)"   # then: podman images

Needs: podman, runc, mmdebstrap (Debian packages), root (or a working rootless podman).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BASE_NAME = "docker.io/library/debian:bookworm-slim"  # the Dockerfile's BASE_IMAGE default
SUITE = "bookworm"
MIRROR = os.environ.get("AGENT_RUNTIME_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = ("python3", "python3-venv", "procps", "ca-certificates")
PYTHON_VERSION = "3.11"  # bookworm's python3
CONTEXT_PATHS = (
    "Dockerfile",
    ".dockerignore",
    "pyproject.toml",
    "README.md",
    "agent_runtime",
    "agents",
    "protocols",
    "configs",
    "deploy/docker",
)
KEY_LABEL = "io.agent-runtime.base-key"


class BuildError(RuntimeError):
    """A step failed; the message says which and why (with the tool's output tail)."""


def cache_dir() -> Path:
    base = os.environ.get("AGENT_RUNTIME_IMAGE_CACHE") or str(
        Path.home() / ".cache" / "agent-runtime-image"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 1800,
    check: bool = True,
    quiet: bool = False,
) -> subprocess.CompletedProcess[str]:
    if not quiet:
        print("+", " ".join(argv), file=sys.stderr, flush=True)
    result = subprocess.run(  # noqa: S603 - argv list, no shell
        list(argv),
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        tail = (result.stdout + result.stderr)[-3000:]
        raise BuildError(f"{argv[0]} {argv[1]} failed (exit {result.returncode}):\n{tail}")
    return result


@dataclass
class Podman:
    """podman with a private storage and configuration under ``root``."""

    root: Path
    driver: str = "overlay"
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "containers.conf"
        conf.write_text(
            "[containers]\n"
            "default_ulimits = []\n"
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
        )
        storage = self.root / "storage.conf"
        storage.write_text(
            "[storage]\n"
            f'driver = "{self.driver}"\n'
            f'graphroot = "{self.root / "storage"}"\n'
            f'runroot = "{self.root / "run"}"\n'
        )
        registries = self.root / "registries.conf"
        registries.write_text('unqualified-search-registries = []\nshort-name-mode = "disabled"\n')
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(conf),
            "CONTAINERS_STORAGE_CONF": str(storage),
            "CONTAINERS_REGISTRIES_CONF": str(registries),
        }

    def argv(self, *args: str) -> list[str]:
        return ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", *args]

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 1800, quiet: bool = False
    ) -> subprocess.CompletedProcess[str]:
        return _run(self.argv(*args), env=self.env, check=check, timeout=timeout, quiet=quiet)


def podman(cache: Path | None = None) -> Podman:
    driver = os.environ.get("AGENT_RUNTIME_PODMAN_DRIVER", "overlay")
    return Podman((cache or cache_dir()) / f"podman-{driver}", driver)


# ------------------------------------------------------------------------------- base
def base_tarball(cache: Path) -> Path:
    """The mmdebstrap root file system (cached by suite, mirror, packages, architecture)."""
    arch = _debian_arch()
    key = _key(SUITE, MIRROR, PACKAGES, arch, "minbase")
    path = cache / f"base-{SUITE}-{key}.tar"
    if path.exists():
        return path
    if shutil.which("mmdebstrap") is None:
        raise BuildError("mmdebstrap is not installed (apt-get install mmdebstrap)")
    tmp = path.with_suffix(".tmp.tar")
    _run(
        [
            "mmdebstrap",
            "--variant=minbase",
            f"--architectures={arch}",
            f"--include={','.join(PACKAGES)}",
            "--format=tar",
            SUITE,
            str(tmp),
            MIRROR,
        ],
        timeout=1800,
    )
    tmp.replace(path)
    return path


def import_base(pm: Podman, tarball: Path) -> str:
    """``podman import`` the tarball under BASE_NAME unless that image is already it."""
    key = tarball.stem
    found = pm("image", "inspect", "--format", "{{json .Labels}}", BASE_NAME, check=False)
    if found.returncode == 0 and (json.loads(found.stdout or "null") or {}).get(KEY_LABEL) == key:
        return BASE_NAME
    pm(
        "import",
        "--change",
        'CMD ["/bin/bash"]',
        "--change",
        f"LABEL {KEY_LABEL}={key}",
        str(tarball),
        BASE_NAME,
    )
    return BASE_NAME


def _debian_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


# -------------------------------------------------------------------------- wheelhouse
def requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    data = tomllib.loads(pyproject.read_text())
    build = list(data["build-system"]["requires"])
    return [*data["project"]["dependencies"], *build, "wheel"]


def manylinux_platforms(machine: str | None = None) -> list[str]:
    """Every manylinux tag Debian bookworm (glibc 2.36) runs, newest first."""
    arch = machine or platform.machine()
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(36, 16, -1)]
    return [*tags, f"manylinux2014_{arch}", f"linux_{arch}"]


def wheelhouse(cache: Path, pm: Podman) -> Path:
    """The dependencies' wheels for Debian's Python (cached by requirements and platform).

    ``pip download`` runs on the host (the network is there) for the target's Python version
    and platforms, but evaluates environment markers with the host's interpreter (redis needs
    async-timeout below Python 3.11.3; bookworm has 3.11.2). So the set is then resolved
    offline by the base image's own pip, and what it misses is fetched, until complete."""
    reqs = requirements()
    platforms = manylinux_platforms()
    path = cache / f"wheelhouse-{_key(reqs, platforms, PYTHON_VERSION)}"
    if path.exists():
        return path
    tmp = Path(tempfile.mkdtemp(prefix="wheelhouse-", dir=cache))
    argv = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet"]
    argv += ["--only-binary=:all:", "--python-version", PYTHON_VERSION]
    argv += ["--implementation", "cp", "--dest", str(tmp)]
    for tag in platforms:
        argv += ["--platform", tag]
    try:
        _run([*argv, *reqs], timeout=1800)
        for _ in range(10):
            missing = _missing_in_base(pm, tmp, reqs)
            if not missing:
                break
            _run([*argv, "--no-deps", missing], timeout=600)
        else:
            raise BuildError("the wheelhouse stays incomplete for the base image's Python")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.replace(path)
    return path


def _wait_exited(pm: Podman, name: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The exit code and output of a detached container, once it exited. (An attached
    ``podman run`` or ``podman wait`` can take 20 s more to return on a host whose init reaps
    orphans slowly: podman waits for conmon.)"""
    deadline = time.monotonic() + timeout
    while True:
        state = pm("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name, quiet=True)
        status, code = state.stdout.split()
        if status in ("exited", "stopped"):
            logs = pm("logs", name, quiet=True)
            return subprocess.CompletedProcess([name], int(code), logs.stdout, logs.stderr)
        if time.monotonic() > deadline:
            raise BuildError(f"container {name} still {status} after {timeout}s")
        time.sleep(0.2)


def _missing_in_base(pm: Podman, wheels: Path, reqs: Sequence[str]) -> str | None:
    """Resolve ``reqs`` from ``wheels`` with the base image's pip, offline: the first
    requirement it cannot satisfy (marker dropped), or None when all resolve."""
    (wheels / "requirements.txt").write_text("\n".join(reqs) + "\n")
    script = (
        "python3 -m venv /tmp/v && /tmp/v/bin/pip download --disable-pip-version-check -q "
        "--no-index --find-links /w --only-binary=:all: -d /tmp/d -r /w/requirements.txt"
    )
    name = f"agent-runtime-wheelcheck-{os.getpid()}"
    pm("rm", "--force", name, check=False, quiet=True)
    volume = f"{wheels}:/w:ro,Z"
    pm(
        "run",
        "--detach",
        "--name",
        name,
        "--network=none",
        "-v",
        volume,
        BASE_NAME,
        "sh",
        "-c",
        script,
    )
    try:
        result = _wait_exited(pm, name)
    finally:
        pm("rm", "--force", name, check=False, quiet=True)
    (wheels / "requirements.txt").unlink()
    if result.returncode == 0:
        return None
    output = result.stdout + result.stderr  # `podman logs` keeps the container's two streams
    match = re.search(r"No matching distribution found for ([^\s;]+)", output)
    if match is None:
        raise BuildError(f"the base image's pip cannot resolve the wheelhouse:\n{output[-3000:]}")
    return match.group(1)


# ------------------------------------------------------------------------------- build
def build_context(wheels: Path, into: Path) -> Path:
    """The Dockerfile's inputs from this checkout, and the wheelhouse, in ``into``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache", ".ruff_cache")
    for rel in CONTEXT_PATHS:
        source, target = ROOT / rel, into / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=ignore)
        else:
            shutil.copy2(source, target)
    shutil.copytree(wheels, into / "wheelhouse")
    return into


@dataclass
class Built:
    tag: str
    seconds: dict[str, float]
    podman: Podman


def build(tag: str, *, cache: Path | None = None) -> Built:
    """Base, wheelhouse, then ``podman build`` with no network: the image ``tag``."""
    cache = cache or cache_dir()
    seconds: dict[str, float] = {}
    started = time.monotonic()
    pm = podman(cache)
    tarball = base_tarball(cache)
    import_base(pm, tarball)
    seconds["base"] = time.monotonic() - started
    started = time.monotonic()
    wheels = wheelhouse(cache, pm)
    seconds["wheelhouse"] = time.monotonic() - started
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="context-", dir=cache) as tmp:
        context = build_context(wheels, Path(tmp))
        pm(
            "build",
            "--network=none",
            "--pull=never",
            "--format=docker",  # HEALTHCHECK is a Docker-format field (OCI drops it)
            "--build-arg",
            "PIP_OFFLINE=1",
            "--tag",
            tag,
            str(context),
        )
    seconds["build"] = time.monotonic() - started
    return Built(tag, seconds, pm)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", default="localhost/agent-runtime:dev", help="image name")
    parser.add_argument(
        "--print-env",
        action="store_true",
        help="print the environment that points podman at this script's storage and exit",
    )
    args = parser.parse_args(argv)
    if args.print_env:
        pm = podman()
        for name in ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF", "CONTAINERS_REGISTRIES_CONF"):
            print(f"export {name}={pm.env[name]}")
        return 0
    try:
        built = build(args.tag)
    except BuildError as exc:
        print(f"build_offline: {exc}", file=sys.stderr)
        return 1
    steps = ", ".join(f"{name} {s:.1f}s" for name, s in built.seconds.items())
    print(f"built {built.tag} ({steps})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
