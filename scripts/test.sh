#!/usr/bin/env bash
# Sets up (if needed), then runs the linters, the type checker and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The admin panel's browser test drives Debian's chromium (Playwright's own browser download
# cannot work here).
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "chromium is missing: run 'sudo apt-get install -y chromium', then this again" >&2
    exit 1
  fi
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
.tools/node_modules/.bin/buf lint
# The API has shipped: the protos must stay wire- and source-compatible with the last commit.
if git rev-parse -q --verify HEAD~1 >/dev/null; then
  .tools/node_modules/.bin/buf breaking --against '.git#ref=HEAD~1'
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
