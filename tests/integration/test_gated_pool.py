"""The pool's lean check-out and send (transport/connect.py, issue 17): connections come
back to the pool and their slots free up, a connection the server dropped is replaced at the
next check-out, a send on a dead socket is a ConnectionError (redis-py retries it on a new
connection), and a credential provider keeps redis-py's own check-out. Real embedded server."""

from __future__ import annotations

import pytest
from redis.credentials import UsernamePasswordCredentialProvider
from redis.exceptions import ConnectionError as RedisConnectionError

from agent_runtime.transport.connect import GatedPool, connect

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_connections_return_to_the_pool_and_free_their_slots(redis_url: str) -> None:
    redis = connect(redis_url).redis
    pool: GatedPool = redis.connection_pool
    try:
        assert pool._lean
        for _ in range(25):
            assert await redis.ping()
        assert not pool._in_use_connections
        assert len(pool._available_connections) == 1  # one socket, reused
        assert pool._slots._value == pool.max_connections
    finally:
        await redis.aclose()


async def test_a_dropped_connection_is_replaced(redis_url: str) -> None:
    redis = connect(redis_url).redis
    admin = connect(redis_url).redis
    try:
        await redis.client_setname("gated-pool-victim")
        assert await admin.client_kill_filter(_type="normal", skipme=True) >= 1
        assert await redis.set("gated-pool-key", b"1")  # reconnects (check-out or retry)
        assert await redis.get("gated-pool-key") == b"1"
        assert redis.connection_pool.gate.attempts >= 2
    finally:
        await redis.delete("gated-pool-key")
        await redis.aclose()
        await admin.aclose()


async def test_a_send_on_a_closed_socket_is_a_connection_error(redis_url: str) -> None:
    redis = connect(redis_url).redis
    pool: GatedPool = redis.connection_pool
    try:
        assert await redis.ping()
        connection = await pool.get_connection()
        connection._writer.transport.abort()  # the socket is gone, redis-py does not know yet
        with pytest.raises(RedisConnectionError):
            await connection.send_packed_command(connection.pack_command("PING"))
            await connection.read_response()
        await pool.release(connection)
        assert await redis.ping()  # the pool hands out a working connection again
    finally:
        await redis.aclose()


def test_a_credential_provider_keeps_redis_py_check_out() -> None:
    provider = UsernamePasswordCredentialProvider("user", "secret")
    pool = GatedPool.from_url("redis://localhost:1", credential_provider=provider)
    assert not pool._lean
