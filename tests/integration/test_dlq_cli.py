"""Dead letters end to end: a poison message shows in ``status`` and ``dlq list``, and
``dlq replay`` delivers it again after the cause is fixed; ``purge`` asks first."""

from __future__ import annotations

import pytest

from agent_runtime.testing import wait_until
from tests.fixtures.pipeline import LivePipeline, MakePipeline, echo_sink

pytestmark = pytest.mark.integration


@pytest.fixture
def poisoned(make_pipeline: MakePipeline) -> LivePipeline:
    return make_pipeline(echo_sink({"fail_always": True}))


def test_dead_letter_shows_in_status_and_list_and_replays_after_the_fix(
    poisoned: LivePipeline,
) -> None:
    p = poisoned
    p.start("echo")
    p.start("sink")
    message = p.publish("poison pill")
    cid = str(message.correlation_id)
    wait_until(lambda: p.r.xlen(p.keys.dlq("echo")), 20, message="dead letter")

    status = p.cli_json("status")
    dlq = {d["stream"]: d for d in status["dead_letters"]}[p.keys.dlq("echo")]
    assert dlq["length"] == 1 and dlq["by_reason"] == {"max_deliveries": 1}
    inbox = {s["stream"]: s for s in status["streams"]}[p.keys.inbox("echo")]
    assert inbox["groups"][0]["pending"] == 0  # acked: a poison message never blocks
    code, text = p.cli("status")
    assert code == 0 and "max_deliveries=1" in text

    [letter] = p.cli_json("dlq", "list")
    assert (
        letter["agent"],
        letter["reason"],
        letter["message_type"],
        letter["correlation_id"],
        letter["message_id"],
        letter["delivery_count"],
    ) == ("echo", "max_deliveries", "user.request", cid, str(message.message_id), 2)
    assert "poison: poison pill" in letter["error"]
    [detail] = p.cli_json("dlq", "show", letter["id"])
    assert detail["original"]["m"]["payload"]["text"] == "poison pill"
    assert p.cli_json("dlq", "list", "--reason", "expired") == []

    # the cause is fixed: a new echo worker without the bug
    p.stop("echo")
    p.configure(echo_sink())
    p.start("echo")
    dry = p.cli_json("dlq", "replay", "--agent", "echo", "--dry-run")
    assert [d["id"] for d in dry] == [letter["id"]] and p.r.xlen(p.keys.dlq("echo")) == 1
    [replayed] = p.cli_json("dlq", "replay", letter["id"])
    assert replayed["new_id"] and replayed["stream"] == p.keys.inbox("echo")

    # the requester was told it failed; the replay reopens the request and it succeeds
    wait_until(lambda: len(p.replies(message)) == 2, 20, message="reply after replay")
    failed, succeeded = p.replies(message)
    assert (
        failed["code"] == "max_deliveries" and failed["dead_letter_id"] == letter["dead_letter_id"]
    )
    assert succeeded == {"text": "POISON PILL"}
    assert p.cli_json("dlq", "list") == []
    wait_until(lambda: p.r.llen(p.keys.trace(cid)) >= 4, message="trace of the replay")
    steps = p.cli_json("trace", cid)
    echo_steps = [(s["outcome"], s["delivery_count"]) for s in steps if s["agent"] == "echo"]
    assert echo_steps == [("dead_lettered", 2), ("handled", 1)]
    assert steps[-1]["agent"] == "sink" and steps[-1]["outcome"] == "handled"


def test_purge_asks_unless_yes_and_dry_run_changes_nothing(poisoned: LivePipeline) -> None:
    p = poisoned
    p.start("echo")
    for text in ("one", "two"):
        p.publish(text)
    wait_until(lambda: p.r.xlen(p.keys.dlq("echo")) == 2, 20, message="two dead letters")

    code, out = p.cli("dlq", "purge", "--agent", "echo")  # stdin is not a terminal
    assert code == 1 and p.r.xlen(p.keys.dlq("echo")) == 2
    code, out = p.cli("dlq", "purge", "--all", "--dry-run")
    assert code == 0 and "would purge 2" in out and p.r.xlen(p.keys.dlq("echo")) == 2
    code, out = p.cli("dlq", "purge", "--reason", "max_deliveries", "--yes")
    assert code == 0 and "purged 2" in out
    assert p.r.xlen(p.keys.dlq("echo")) == 0
    with pytest.raises(SystemExit):  # replay/purge need a selection
        p.cli("dlq", "replay")
