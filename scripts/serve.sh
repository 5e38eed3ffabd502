#!/usr/bin/env bash
# Sets up (if needed), then serves the default model: a balancer (inference on :50051,
# management on :50053, the OpenAI API on :8080, metrics on :8081) and one agent (:50052)
# registered with it. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

.venv/bin/paddler balancer "$@" &
balancer=$!
.venv/bin/paddler agent &
agent=$!
trap 'kill -TERM $agent $balancer 2>/dev/null; wait' INT TERM EXIT

for _ in $(seq 1 100); do
  if .venv/bin/paddler agents 2>/dev/null | grep -q " yes "; then break; fi
  sleep 0.3
done
cat <<'HOW'

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
wait
