#!/bin/sh
# Container health of the one worker this container runs, from its heartbeat key in Redis
# (P:hb:AGENT:CONSUMER, TTL = 3 heartbeats). Exit 0 = live, 1 = not live.
# The consumer name is the worker's: AGENT_RUNTIME_CONSUMER_NAME (docker-compose.yml sets one
# per service), else AGENT-HOSTNAME-SLOT (slot 0 in a container); AGENT_RUNTIME_CONSUMER
# overrides both.
set -eu
agent="${AGENT_RUNTIME_AGENT:?set AGENT_RUNTIME_AGENT to the agent type this container runs}"
consumer="${AGENT_RUNTIME_CONSUMER:-${AGENT_RUNTIME_CONSUMER_NAME:-${agent}-$(uname -n)-0}}"
exec agent-runtime health --agent "$agent" --consumer "$consumer"
