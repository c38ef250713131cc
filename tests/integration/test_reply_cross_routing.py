"""A reply is signed for its own reply stream: the exact entry of request A's answer copied to
request B's reply stream is not an answer to B. B's waiter skips it (it does not verify there)
and gets B's real reply. Real server, the real Client and codec."""

from __future__ import annotations

import uuid

import pytest

from agent_runtime.client import Client
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.errors import DecodeError
from agent_runtime.transport.connect import connect
from protocols.core import UserRequest
from protocols.envelope import AgentMessage, utcnow
from tests.fixtures.agents import EchoReply, echo_sink_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def reply(request: AgentMessage, text: str) -> AgentMessage:
    return AgentMessage(
        message_id=uuid.uuid4(),
        correlation_id=request.correlation_id,
        causation_id=request.message_id,
        from_agent="sink",
        to_agent="client",
        message_type=EchoReply.message_type,
        schema_version=EchoReply.schema_version,
        payload=EchoReply(text=text).model_dump(mode="json"),
        timestamp=utcnow(),
    )


async def test_a_reply_copied_to_another_requests_stream_is_not_its_answer(
    redis_url: str, prefix: str
) -> None:
    pipeline: Pipeline = echo_sink_pipeline(prefix)
    async with Client(connect(redis_url).redis, pipeline) as client:
        a = client.new_message(UserRequest(text="a"), to="echo")
        b = client.new_message(UserRequest(text="b"), to="echo")
        assert a.reply_to and b.reply_to
        answer_a = client.codec.encode(reply(a, "for A"), a.reply_to)
        await client.redis.xadd(a.reply_to, answer_a)
        await client.redis.xadd(b.reply_to, answer_a)  # copied: bytes and signature unchanged
        with pytest.raises(DecodeError) as info:
            client.codec.decode(answer_a, b.reply_to)
        assert info.value.reason == "bad_signature"
        await client.redis.xadd(b.reply_to, client.codec.encode(reply(b, "for B"), b.reply_to))
        got = await client.wait_reply(b, timeout=10)
        assert got.payload == EchoReply(text="for B")
        assert (await client.wait_reply(a, timeout=10)).payload == EchoReply(text="for A")
