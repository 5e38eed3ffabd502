#!/usr/bin/env bash
# A coding agent against a running balancer: opencode (the `opencode-ai` npm package, pinned,
# installed into .tools/ when missing) talks to the balancer's OpenAI-compatible API as an
# OpenAI-compatible provider and does one small task with tools, non-interactively. It passes
# when the streamed replies, a tool call and the final message all reach opencode with no
# protocol error (no HTTP error, no `error` event, no ERROR in opencode's log, exit status 0).
# What the model answers is not judged: the default model is a 135M toy.
#
#   bash scripts/check_coding_agent.sh [--base-url URL] [--model NAME] [--context-size N]
#                                      [--max-tokens N] [--timeout SECONDS] [--keep]
#
# Each flag has an environment variable (the flag wins):
#   --base-url      PADDLER_CHECK_BASE_URL      the OpenAI API (default http://127.0.0.1:8080/v1)
#   --model         PADDLER_CHECK_MODEL         default: the first model GET /models lists, else
#                                               SmolLM2-135M-Instruct.Q4_1
#   --context-size  PADDLER_CHECK_CONTEXT_SIZE  opencode's limit.context (default: the model's
#                                               context_length in GET /models, else 8192)
#   --max-tokens    PADDLER_CHECK_MAX_TOKENS    opencode's limit.output: the max_tokens of every
#                                               request (default 512; unset, opencode asks for
#                                               32000, which the API refuses above the context)
#   --timeout       PADDLER_CHECK_TIMEOUT       seconds for the two turns together (default 300)
#   --keep          PADDLER_CHECK_KEEP=1        keep the temporary folder (config, logs, events)
#   PADDLER_API_KEY, else OPENAI_API_KEY: the client API key, when the balancer asks for one.
#
# Two turns of one session, each an `opencode run --format json` in a fresh temporary project
# folder, with a fresh temporary HOME and XDG folders (the user's own opencode config and state
# are neither read nor written) and nothing fetched but the balancer (no update check, no
# models.dev catalogue, no sharing, no LSP or formatter downloads, no plugin install):
#   1. "List the files in this folder." with two of opencode's tools offered, `glob` and
#      `todowrite` (an array of objects with enums), whose permission is `ask`: a
#      non-interactive run rejects every permission request, and these two ask before anything
#      else, so the model's call is streamed, parsed and dispatched, then ends the run. (A
#      tool that ran would not end it: the toy model calls tools turn after turn until its
#      context is full; and the file tools can fail before they ask, which does not end it.)
#   2. The same session goes on with no tools: the request carries the call and its result in
#      the history, and the model's reply streams back as text, the final message.
#   Both turns must exit 0 with no `error` event and no ERROR in opencode's log, each after one
#   request (a second one is stopped and fails); turn 1 must end in a call of an offered tool
#   (finish reason tool-calls), turn 2 in text (stop or length); every reply must carry its
#   token usage. Exit status: 0 passed; 1 failed (what failed is printed; GET /models too);
#   2 not checked (bad arguments, no node or npm, opencode not installed).
# Needs node and npm (npm only to install opencode), and `timeout` (coreutils).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

OPENCODE_VERSION=1.18.33
DEFAULT_MODEL=SmolLM2-135M-Instruct.Q4_1

base_url=${PADDLER_CHECK_BASE_URL:-http://127.0.0.1:8080/v1}
model=${PADDLER_CHECK_MODEL:-}
context_size=${PADDLER_CHECK_CONTEXT_SIZE:-}
max_tokens=${PADDLER_CHECK_MAX_TOKENS:-512}
budget=${PADDLER_CHECK_TIMEOUT:-300}
keep=${PADDLER_CHECK_KEEP:-0}
api_key=${PADDLER_API_KEY:-${OPENAI_API_KEY:-}}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}
fail_usage() {
  echo "check_coding_agent: $1" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case $1 in
    --base-url) [ $# -ge 2 ] || usage; base_url=$2; shift 2 ;;
    --base-url=*) base_url=${1#*=}; shift ;;
    --model) [ $# -ge 2 ] || usage; model=$2; shift 2 ;;
    --model=*) model=${1#*=}; shift ;;
    --context-size) [ $# -ge 2 ] || usage; context_size=$2; shift 2 ;;
    --context-size=*) context_size=${1#*=}; shift ;;
    --max-tokens) [ $# -ge 2 ] || usage; max_tokens=$2; shift 2 ;;
    --max-tokens=*) max_tokens=${1#*=}; shift ;;
    --timeout) [ $# -ge 2 ] || usage; budget=$2; shift 2 ;;
    --timeout=*) budget=${1#*=}; shift ;;
    --keep) keep=1; shift ;;
    -h | --help) usage ;;
    *) fail_usage "unknown argument: $1 (see --help)" ;;
  esac
done
for pair in "context-size:${context_size:-0}" "max-tokens:$max_tokens" "timeout:$budget"; do
  case ${pair#*:} in
    '' | *[!0-9]*) fail_usage "--${pair%%:*} must be a whole number, got '${pair#*:}'" ;;
  esac
done
[ "$budget" -ge 1 ] || fail_usage "--timeout must be at least 1 second"
base_url=${base_url%/}
command -v node >/dev/null || fail_usage "node is missing: install Node.js and npm (Debian: apt-get install -y npm)"
command -v timeout >/dev/null || fail_usage "timeout (coreutils) is missing"

work=$(mktemp -d "${TMPDIR:-/tmp}/paddler-coding-agent.XXXXXX")
cleanup() {
  if [ "$keep" = 1 ]; then
    echo "check_coding_agent: kept $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
mkdir -p "$work/home/.config/opencode/node_modules" "$work/home/.local/share" "$work/home/.cache" \
  "$work/home/.local/state" "$work/tmp" "$work/project"
# At every start opencode installs @opencode-ai/plugin from npm into its config folder (for
# plugins there) unless that folder has node_modules/ and a package-lock.json that lists it.
echo '{"packages": {"": {"dependencies": {"@opencode-ai/plugin": "*"}}}}' \
  >"$work/home/.config/opencode/package-lock.json"

# opencode, pinned, into .tools/ (as scripts/setup.sh installs buf): only when missing or another
# version. The npm cache stays the user's own (HOME is swapped only for opencode below).
opencode=$root/.tools/node_modules/opencode-ai/bin/opencode.exe
installed() {
  node -e 'try { process.stdout.write(require(process.argv[1]).version) } catch { }' \
    "$root/.tools/node_modules/opencode-ai/package.json"
}
if [ "$(installed)" != "$OPENCODE_VERSION" ] || [ ! -x "$opencode" ]; then
  command -v npm >/dev/null ||
    fail_usage "npm is missing: it installs opencode-ai (Debian: apt-get install -y npm)"
  mkdir -p .tools
  if command -v flock >/dev/null; then  # two checks at once install it once
    exec 9>.tools/.opencode-install.lock
    flock -w 600 9
  fi
  if [ "$(installed)" != "$OPENCODE_VERSION" ] || [ ! -x "$opencode" ]; then
    echo "check_coding_agent: installing opencode-ai@$OPENCODE_VERSION into .tools/ (about 120 MB from npm)" >&2
    # Its postinstall runs `opencode --version`, which makes opencode's XDG folders: the
    # temporary ones, not the user's.
    if ! XDG_CONFIG_HOME="$work/home/.config" XDG_DATA_HOME="$work/home/.local/share" \
      XDG_CACHE_HOME="$work/home/.cache" XDG_STATE_HOME="$work/home/.local/state" \
      npm install --no-audit --no-fund --save-exact --prefix .tools \
      "opencode-ai@$OPENCODE_VERSION" >"$work/npm.log" 2>&1; then
      cat "$work/npm.log" >&2
      fail_usage "npm install opencode-ai@$OPENCODE_VERSION failed"
    fi
  fi
  exec 9>&- || true
fi

# opencode sees only this environment: a fresh HOME and XDG folders, no OPENCODE_* of the
# user's, and the switches that keep it off the network and on our config alone.
opencode_env=(env)
for name in $(compgen -e); do
  case $name in OPENCODE_*) opencode_env+=(-u "$name") ;; esac
done
opencode_env+=(
  HOME="$work/home"
  XDG_CONFIG_HOME="$work/home/.config"
  XDG_DATA_HOME="$work/home/.local/share"
  XDG_CACHE_HOME="$work/home/.cache"
  XDG_STATE_HOME="$work/home/.local/state"
  TMPDIR="$work/tmp"
  OPENCODE_CONFIG="$work/opencode.json"
  OPENCODE_DISABLE_AUTOUPDATE=1
  OPENCODE_DISABLE_MODELS_FETCH=1
  OPENCODE_DISABLE_SHARE=1
  OPENCODE_DISABLE_LSP_DOWNLOAD=1
  OPENCODE_DISABLE_CLAUDE_CODE=1
  OPENCODE_DISABLE_EXTERNAL_SKILLS=1
  OPENCODE_DISABLE_PROJECT_CONFIG=1
  OPENCODE_DISABLE_AUTOCOMPACT=1
  PADDLER_CHECK_API_KEY="$api_key"
)
version=$("${opencode_env[@]}" "$opencode" --version 2>/dev/null || true)
[ "$version" = "$OPENCODE_VERSION" ] ||
  fail_usage "$opencode says version '$version', not $OPENCODE_VERSION: remove .tools/node_modules/opencode-ai and run this again"

# GET /models: the balancer must answer it (with the key, if any) before opencode starts (which
# would retry an unreachable address for a minute). Its first model is the default model, and
# the model's context_length the default context size.
# shellcheck disable=SC2016 # JavaScript's ${...}, not the shell's
listed=$(PADDLER_CHECK_API_KEY=$api_key node -e '
  const [url, wanted] = process.argv.slice(1);
  const headers = process.env.PADDLER_CHECK_API_KEY
    ? { authorization: `Bearer ${process.env.PADDLER_CHECK_API_KEY}` } : {};
  fetch(`${url}/models`, { headers, signal: AbortSignal.timeout(30000) })
    .then(async (reply) => {
      const text = await reply.text();
      if (!reply.ok) throw new Error(`HTTP ${reply.status}: ${text.slice(0, 300)}`);
      const models = JSON.parse(text).data ?? [];
      const model = wanted ? models.find((m) => m.id === wanted) : models[0];
      process.stdout.write(`${model?.id ?? ""} ${model?.context_length ?? ""}`);
    })
    .catch((error) => {
      process.stderr.write(`check_coding_agent: GET ${url}/models failed: ${error.cause?.message ?? error.message}\n`);
      process.exit(1);
    });' "$base_url" "$model") || exit 1
read -r listed_model listed_context <<<"$listed" || true
model=${model:-${listed_model:-$DEFAULT_MODEL}}
case ${listed_context:-x} in *[!0-9]*) listed_context=8192 ;; esac
context_size=${context_size:-$listed_context}
[ "$max_tokens" -ge 1 ] && [ "$max_tokens" -lt "$context_size" ] ||
  fail_usage "--max-tokens ($max_tokens) must be at least 1 and below the context size ($context_size)"

# The provider: @ai-sdk/openai-compatible (bundled in opencode) at the balancer. Two agents: one
# offered glob and todowrite (asked, so rejected), one with no tools; temperature 0 for a steady
# run (opencode sends a temperature only for a model marked `temperature: true`).
# Compaction is off: a conversation near the context fails loudly instead of being summarised.
CHECK_BASE_URL=$base_url CHECK_MODEL=$model CHECK_CONTEXT=$context_size \
  CHECK_OUTPUT=$max_tokens CHECK_KEY=$api_key node scripts/check_coding_agent_config.js "$work/opencode.json"

# One `opencode run`, within what is left of the time limit; its events go to $work/NAME.jsonl,
# its log to $work/NAME.log. Each turn is one step (one request): a second one means the first
# did not end the run as planned, and opencode is stopped there rather than left to loop until
# the time limit. Returns opencode's exit status (124: out of time).
run_turn() {
  local name=$1
  shift
  local left=$((budget - (SECONDS - started)))
  if [ "$left" -le 0 ]; then
    echo "out of time" >"$work/$name.log"
    return 124
  fi
  (cd "$work/project" && exec "${opencode_env[@]}" timeout -k 10 "$left" "$opencode" run \
    --format json --print-logs --log-level INFO "$@" </dev/null) \
    >"$work/$name.jsonl" 2>"$work/$name.log" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$(grep -c '"type":"step_finish"' "$work/$name.jsonl")" -gt 1 ]; then
      touch "$work/$name.stopped"
      kill "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.5
  done
  wait "$pid"
}

started=$SECONDS  # --timeout covers the two turns, not the install
echo "check_coding_agent: opencode $OPENCODE_VERSION -> $base_url, model $model" \
  "(limit.context $context_size, limit.output $max_tokens)" >&2
status1=0
# The words go one by one: opencode quotes a message given as one argument with spaces.
run_turn tools --agent paddler-tools --title paddler-check List the files in this folder. ||
  status1=$?
session=$(node -e '
  const fs = require("fs");
  const text = fs.existsSync(process.argv[1]) ? fs.readFileSync(process.argv[1], "utf8") : "";
  for (const line of text.split("\n")) {
    try { const id = JSON.parse(line).sessionID; if (id) { process.stdout.write(id); break } }
    catch { }
  }' "$work/tools.jsonl")
status2=skipped  # when no reply reached turn 1: turn 2 would only repeat its failure
if [ -n "$session" ] && grep -q '"type":"step_finish"' "$work/tools.jsonl"; then
  status2=0
  run_turn reply --agent paddler-reply --session "$session" Say in one sentence what you did. ||
    status2=$?
fi

# The verdict, from opencode's events and logs.
node scripts/check_coding_agent_verdict.js "$work" "$status1" "$status2" "$((SECONDS - started))"
