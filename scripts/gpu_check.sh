#!/usr/bin/env bash
# The GPU check (issue 28): the agent against llama-server, both built here with CUDA from the
# llama-cpp-python sdist the agent pins, all layers on the GPU, on a random-weight GGUF in
# SmolLM2's shape; prints tokens/s and TTFT at concurrency 1, 16 and 64 and their ratio.
#
#   bash scripts/gpu_check.sh bundle [DIR]   on a machine with PyPI: gathers DIR (default
#                                            .gpu-check/, about 52 MiB) with
#                                            scripts/gpu_check_bundle.py (GPU_CHECK_PYTHON, 3.12)
#   bash scripts/gpu_check.sh run [DIR]      on the GPU machine (NVIDIA GPU, nvcc, cmake,
#                                            python3 of the bundle's version; no network)
#
# `run` settings (environment): GPU_CHECK_CONCURRENCY (1,16,64), GPU_CHECK_SLOTS (64),
# GPU_CHECK_TOKENS (128 per request), GPU_CHECK_REQUESTS (4 per worker), GPU_CHECK_JOBS (all
# cores), GPU_CHECK_WORK (a new temporary folder; a build already there is reused),
# GPU_CHECK_CUDA (on; `off` builds for the CPU and runs with no GPU options, to rehearse the
# whole script on a machine without a GPU).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STEP="${1:-}"
BUNDLE="$(realpath -m "${2:-$ROOT/.gpu-check}")"

if [ "$STEP" = bundle ]; then
  exec "$ROOT/.venv/bin/python" "$ROOT/scripts/gpu_check_bundle.py" --out "$BUNDLE" \
    --python-version "${GPU_CHECK_PYTHON:-3.12}"
fi
if [ "$STEP" != run ]; then
  echo "usage: $0 bundle|run [DIR]" >&2
  exit 2
fi

CUDA="${GPU_CHECK_CUDA:-on}"
JOBS="${GPU_CHECK_JOBS:-$(nproc)}"
WORK="${GPU_CHECK_WORK:-$(mktemp -d /tmp/paddler-gpu-check.XXXXXX)}"
started=$SECONDS
say() { echo "[gpu_check $((SECONDS - started))s] $*" >&2; }

for needed in cmake python3 "$BUNDLE/python-version" "$BUNDLE/llama_cpp_python.tar.gz"; do
  if [[ "$needed" == /* ]] && [ ! -e "$needed" ]; then
    echo "$needed is missing: run 'bash scripts/gpu_check.sh bundle' where PyPI answers" >&2
    exit 1
  elif [[ "$needed" != /* ]] && ! command -v "$needed" >/dev/null; then
    echo "$needed is not installed" >&2
    exit 1
  fi
done
want="$(cat "$BUNDLE/python-version")"
have="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$want" != "$have" ]; then
  echo "the bundle's wheels are for Python $want, python3 here is $have:" \
    "GPU_CHECK_PYTHON=$have bash scripts/gpu_check.sh bundle" >&2
  exit 1
fi
cmake_cuda=()
if [ "$CUDA" = on ]; then
  command -v nvcc >/dev/null || { echo "nvcc is not installed" >&2; exit 1; }
  # One architecture, this GPU's ("9.0" -> 90): a build for every one takes far longer.
  arch="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '. ')"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2
  cmake_cuda=(-DGGML_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=$arch")
fi

say "installing the wheels and the tree into $WORK"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$WORK/site" "$BUNDLE"/wheels/*.whl
rm -rf "$WORK/src" "$WORK/site/paddler"
mkdir -p "$WORK/src"
tar -xzf "$BUNDLE/llama_cpp_python.tar.gz" -C "$WORK/src"
sdist="$(echo "$WORK"/src/llama_cpp_python-*)"
# paddler from this tree, with its generated code where the installed package has it.
cp -r "$ROOT/paddler" "$WORK/site/paddler"
cp -r "$ROOT/generated/paddler/v1" "$WORK/site/paddler/v1"

say "building llama.cpp (${cmake_cuda[*]:-CPU}) with $JOBS jobs"
[ -x "$WORK/build/bin/llama-server" ] && say "reusing the build in $WORK/build"
cmake -S "$sdist/vendor/llama.cpp" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF "${cmake_cuda[@]}" >"$WORK/cmake.log" 2>&1 \
  || { tail -30 "$WORK/cmake.log" >&2; exit 1; }
cmake --build "$WORK/build" -j"$JOBS" --target llama-server llama mtmd >>"$WORK/cmake.log" 2>&1 \
  || { tail -30 "$WORK/cmake.log" >&2; exit 1; }
# The agent's llama_cpp (the sdist's own Python package) loads the same libraries that
# llama-server links: one build for both servers.
mkdir -p "$sdist/llama_cpp/lib"
cp -a "$WORK"/build/bin/*.so* "$sdist/llama_cpp/lib/"
export PYTHONPATH="$WORK/site:$sdist"
export LD_LIBRARY_PATH="$WORK/build/bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

say "writing a random-weight GGUF in SmolLM2's shape"
python3 "$ROOT/scripts/random_gguf.py" write "$BUNDLE/smollm2-shape.gguf" "$WORK/model.gguf"

placement=()
[ "$CUDA" = on ] && placement=(--n-gpu-layers all --flash-attention on)
say "benchmarking"
export TMPDIR="$WORK"
cd "$WORK"  # `python -m paddler` must find the copy in site/, not this tree's
python3 "$ROOT/scripts/bench_agent.py" --model "$WORK/model.gguf" \
  --llama-server "$WORK/build/bin/llama-server" "${placement[@]}" \
  --slots "${GPU_CHECK_SLOTS:-64}" --threads "$(( JOBS < 8 ? JOBS : 8 ))" \
  --concurrency "${GPU_CHECK_CONCURRENCY:-1,16,64}" --tokens "${GPU_CHECK_TOKENS:-128}" \
  --requests-per-worker "${GPU_CHECK_REQUESTS:-4}" --context-size 512
# Where the agent put the model, from its own log ("model placed": layers per device).
grep -h 'model placed' "$WORK"/paddler-bench-*/agent.log | tail -1 >&2 || true
say "done"
