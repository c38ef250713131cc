"""What an attacker with Redis write access can put where approvals are read: arbitrary bytes
and JSON in a pending-approval record, arbitrary arguments and approval fields in a task. The
readers never raise, and accept nothing but what the safety checker itself wrote or signed."""

from __future__ import annotations

import json
import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent_runtime.approval import signer, verifier
from agents import approvals
from protocols.pipeline import PlanStep
from tests.fixtures.approvals import key_pair

SIGNER = signer(key_pair())
VERIFIER = verifier(key_pair())
CID = str(uuid.uuid4())
STEP = PlanStep(id="s1", tool="deploy", args={"service": "web", "environment": "prod"})
SEALED = approvals.sealed_record(SIGNER, CID, STEP, 1_000.0)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode()))
def test_a_pending_record_of_any_bytes_is_refused_with_a_reason(raw: bytes) -> None:
    opened = approvals.unseal(SIGNER, CID, "s1", raw)
    assert isinstance(opened, str) and opened


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["step", "expires_at", "seal"]), JSON)
def test_changing_any_part_of_a_sealed_record_breaks_its_seal(part: str, value: Any) -> None:
    record = json.loads(SEALED)
    if record[part] == value:
        return
    record[part] = value
    opened = approvals.unseal(SIGNER, CID, "s1", json.dumps(record).encode())
    assert isinstance(opened, str)


def test_the_untouched_record_opens() -> None:
    assert approvals.unseal(SIGNER, CID, "s1", SEALED.encode()) == (STEP, 1_000.0)
    assert isinstance(approvals.unseal(SIGNER, str(uuid.uuid4()), "s1", SEALED.encode()), str)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.text(max_size=6), JSON, max_size=4),
    st.text(max_size=20),
    st.floats(allow_nan=True),
    st.text(alphabet="0123456789abcdef", min_size=128, max_size=128),
)
def test_no_forged_grant_verifies(
    args: dict[str, Any], approver: str, expires: float, signature: str
) -> None:
    step = PlanStep(id="s1", tool="deploy", args=args)
    grant = approvals.grant_for(CID, step, approver, expires, key="k", message="m")
    assert not VERIFIER.verify(grant, SIGNER.key_id, signature)
