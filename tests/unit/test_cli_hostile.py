"""Hostile input to what the CLI reads before anything starts: config files (any bytes, deep
nesting, YAML built from random mappings) and Redis URLs. ``validate`` always answers with a
list of problems, never an exception; a URL is accepted or refused as a usage error, and its
password never survives masking.

Examples per test: ``AGENT_RUNTIME_HYPOTHESIS_EXAMPLES`` (default 200); seed: hypothesis's
``--hypothesis-seed``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import redis.exceptions as redis_errors
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_runtime.cli.common import check_url
from agent_runtime.cli.failures import UsageError, describe, mask_url
from agent_runtime.config.validation import problems

EXAMPLES = int(os.environ.get("AGENT_RUNTIME_HYPOTHESIS_EXAMPLES", "200"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
KEYS = st.sampled_from(
    [
        "agents",
        "class",
        "config",
        "llm",
        "provider",
        "worker",
        "replicas",
        "policy_file",
        "routes",
        "allowed_modules",
        "python_paths",
        "key_prefix",
        "x",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(["agents.planner:Planner", "os:system", "anthropic", "../../etc/passwd"]),
)
DOCS = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=40,
)


def check(text: bytes) -> list[str]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "pipeline.yaml")
        path.write_bytes(text)
        found = problems(path, environ={})
    assert isinstance(found, list) and all(isinstance(p, str) for p in found)
    return found


@SETTINGS
@given(st.binary(max_size=2_000))
def test_any_bytes_give_a_list_of_problems(raw: bytes) -> None:
    check(raw)


@SETTINGS
@given(DOCS)
def test_any_yaml_document_gives_a_list_of_problems(doc: Any) -> None:
    found = check(yaml.safe_dump(doc).encode())
    if not isinstance(doc, dict) or "agents" not in doc:
        assert found, "a config without agents is never valid"


def test_deep_nesting_and_huge_files_are_problems_not_crashes() -> None:
    for text in ("[" * 100_000, "a: " + "{b: " * 20_000, "x: &a [*a]\nagents: {}"):
        assert check(text.encode())
    (big,) = check(b"# " + b"x" * (2 << 20))
    assert "larger than" in big


@SETTINGS
@given(st.text(max_size=80), st.text(max_size=20))
def test_urls_are_checked_and_their_password_masked(url: str, password: str) -> None:
    try:
        check_url(url)
    except UsageError:
        pass
    secret = "S3cr" + "".join(c for c in password if c not in "/?#@")  # a URL's user info
    with_password = f"redis://user:{secret}@host:6379/0"
    masked = mask_url(with_password)
    assert secret not in masked
    error = redis_errors.ConnectionError(f"Error connecting to {with_password}: {secret}")
    failure = describe(error, with_password)
    assert failure is not None
    assert secret not in failure.lines[0]
