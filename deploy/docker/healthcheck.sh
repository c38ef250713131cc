#!/bin/bash
# Container health of the worker this container runs: GET /healthz (default) or the path given
# (/readyz) on its metrics port (AGENT_RUNTIME_METRICS_PORT, 9100 in the image), over bash's
# /dev/tcp: no Python start, no Redis, about 2 ms of CPU (docs/benchmarks.md "Probes").
# /healthz is 200 while the worker's event loop turns, so a Redis outage does not make the
# container unhealthy; /readyz is 200 while Redis answers and the consumer group exists.
# Exit 0 = HTTP 200, 1 = anything else (refused, timeout, 503, 404).
set -u
path="${1:-/healthz}"
port="${AGENT_RUNTIME_METRICS_PORT:-9100}"
case "$port" in '' | *[!0-9]*) echo "AGENT_RUNTIME_METRICS_PORT=$port is not a port" >&2; exit 1 ;; esac
case "$path" in /healthz | /readyz) ;; *) echo "usage: $0 [/healthz|/readyz]" >&2; exit 1 ;; esac
exec 3<>"/dev/tcp/127.0.0.1/$port" || { echo "nothing listens on port $port" >&2; exit 1; }
printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$path" >&3
IFS= read -r -t 5 status <&3 || { echo "no answer on port $port" >&2; exit 1; }
IFS= read -r -t 5 -d '' rest <&3  # headers and the reason, for the health log
exec 3<&-
body="${rest##*$'\r\n\r\n'}"
echo "${status%$'\r'}: ${body%$'\n'}"
case "$status" in "HTTP/"*" 200 "*) exit 0 ;; *) exit 1 ;; esac
