#!/usr/bin/env bash
# Sets up (if needed) and serves the default model on one agent at 127.0.0.1:50052.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cat <<'HOW'
Serving SmolLM2-135M-Instruct on 127.0.0.1:50052 (Ctrl-C stops). In another terminal:
  .venv/bin/python scripts/example_client.py "Write a haiku about the sea."
HOW
exec .venv/bin/paddler agent --host 127.0.0.1 --port 50052 "$@"
