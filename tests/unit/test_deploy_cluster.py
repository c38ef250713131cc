"""Local cluster planning: slot ranges cover 0..16383 exactly once, ports leave room for the
cluster bus (+10000) and stay <= 55535."""

from __future__ import annotations

import random

import pytest

from agent_runtime.transport.cluster import MAX_PORT, SLOTS, free_cluster_ports, slot_ranges


@pytest.mark.parametrize("masters", [1, 2, 3, 5, 7])
def test_slot_ranges_cover_every_slot_once(masters: int) -> None:
    ranges = slot_ranges(masters)
    covered = [slot for first, last in ranges for slot in range(first, last + 1)]
    assert covered == list(range(SLOTS))
    sizes = [last - first + 1 for first, last in ranges]
    assert max(sizes) - min(sizes) <= 1


def test_slot_ranges_need_a_master() -> None:
    with pytest.raises(ValueError):
        slot_ranges(0)


def test_ports_leave_room_for_the_cluster_bus() -> None:
    ports = free_cluster_ports(6, rng=random.Random(7))
    assert len(set(ports)) == 6
    assert all(port + 10_000 <= MAX_PORT + 10_000 and port <= MAX_PORT for port in ports)
    used = {p for port in ports for p in (port, port + 10_000)}
    assert len(used) == 12, "no node's port is another node's bus port"
