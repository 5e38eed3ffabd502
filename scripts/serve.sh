#!/usr/bin/env bash
# Sets up (if needed), then serves the default model: a balancer (inference on :50051,
# management on :50053, the OpenAI API on :8080, metrics and the panel on :8081) and one agent
# (:50052) registered with it. Ctrl-C or SIGTERM stops both; the exit status is 0 when both
# stopped cleanly, else the failed server's (when one ends, the other is stopped).
#
#   scripts/serve.sh [BALANCER FLAG ...] [--agent-arg AGENT_FLAG ...]
#
# Arguments go to `paddler balancer`, except each one after --agent-arg, which goes to
# `paddler agent` (--agent-arg --context-size --agent-arg 16384, or --agent-arg=--slots=2).
# PADDLER_* variables reach both servers; each reads its own flags' (see `paddler agent --help`,
# e.g. PADDLER_CONTEXT_SIZE=16384 bash scripts/serve.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

balancer_args=()
agent_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --agent-arg)
      [ $# -ge 2 ] || { echo "serve.sh: --agent-arg needs a value" >&2; exit 2; }
      agent_args+=("$2"); shift 2 ;;
    --agent-arg=*) agent_args+=("${1#--agent-arg=}"); shift ;;
    *) balancer_args+=("$1"); shift ;;
  esac
done

bash scripts/setup.sh

stopping=false
stop() {
  stopping=true
  kill -TERM "$balancer" "$agent" 2>/dev/null || true
}
trap stop INT TERM HUP

.venv/bin/paddler balancer "${balancer_args[@]}" &
balancer=$!
.venv/bin/paddler agent "${agent_args[@]}" &
agent=$!

# The exit status of server $1, waiting through the signals that interrupt `wait`.
status_of() {
  local code
  while :; do
    code=0
    wait "$1" || code=$?
    if ! kill -0 "$1" 2>/dev/null; then
      return "$code"
    fi
  done
}

# Both running and one ready agent: say how to talk to them.
for _ in $(seq 1 200); do
  if "$stopping" || ! kill -0 "$balancer" 2>/dev/null || ! kill -0 "$agent" 2>/dev/null; then
    break
  fi
  if .venv/bin/paddler agents 2>/dev/null | grep -q " yes "; then
    cat <<'HOW' >&2

Serving SmolLM2-135M-Instruct through a balancer. In another terminal:
  .venv/bin/paddler generate "Write a haiku about the sea."
  .venv/bin/paddler chat
  .venv/bin/paddler agents
  curl http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{"model": "SmolLM2-135M-Instruct.Q4_1", "messages": [{"role": "user", "content": "Hi"}]}'
  curl http://127.0.0.1:8081/metrics
  the admin panel: http://127.0.0.1:8081/
Ctrl-C stops the balancer and the agent.
HOW
    break
  fi
  sleep 0.3
done

# Until one server ends: on a signal both were told to stop; a server that ends on its own
# (it failed, or was signalled alone) has the other stopped too.
while kill -0 "$balancer" 2>/dev/null && kill -0 "$agent" 2>/dev/null; do
  wait -n "$balancer" "$agent" || true
done
if ! "$stopping"; then
  echo "serve.sh: a server ended; stopping the other" >&2
  stop
fi
balancer_code=0
status_of "$balancer" || balancer_code=$?
agent_code=0
status_of "$agent" || agent_code=$?
if [ "$balancer_code" -ne 0 ] || [ "$agent_code" -ne 0 ]; then
  echo "serve.sh: the balancer exited $balancer_code, the agent $agent_code" >&2
  exit $((balancer_code != 0 ? balancer_code : agent_code))
fi
