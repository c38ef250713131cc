"""Commit tokens (transport/streams.py): a replayed commit is refused by its token's mark,
so two different commits must never share a token -- within a process, across processes
and in a forked child (the supervisor's workers)."""

from __future__ import annotations

import os

from agent_runtime.transport.streams import Commit, CommitTokens


def test_tokens_of_one_process_differ() -> None:
    tokens = {Commit().token for _ in range(10_000)}
    assert len(tokens) == 10_000


def test_each_token_source_draws_its_own_process_part() -> None:
    a, b = CommitTokens(), CommitTokens()
    assert a.next() != b.next()  # both at count 0: the random parts differ


def test_a_renewed_source_does_not_repeat_earlier_tokens() -> None:
    tokens = CommitTokens()
    before = {tokens.next() for _ in range(100)}
    tokens.renew()  # what a forked child does
    assert not before & {tokens.next() for _ in range(100)}


def test_a_forked_child_makes_other_tokens_than_its_parent() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next token, exit
        os.write(write, Commit().token.encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    assert child
    assert child != Commit().token
