#!/bin/sh
# Container health of the one worker this container runs, from its heartbeat key in Redis
# (P:hb:AGENT:CONSUMER, TTL = 3 heartbeats). Exit 0 = live, 1 = not live.
# The consumer name is the worker's default: AGENT-HOSTNAME-SLOT (slot 0 in a container);
# AGENT_RUNTIME_CONSUMER overrides it.
set -eu
agent="${AGENT_RUNTIME_AGENT:?set AGENT_RUNTIME_AGENT to the agent type this container runs}"
consumer="${AGENT_RUNTIME_CONSUMER:-${agent}-$(uname -n)-0}"  # uname -n == gethostname()
exec agent-runtime health --agent "$agent" --consumer "$consumer"
