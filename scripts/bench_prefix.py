"""Benchmark prefix-cache-aware routing (issue 27): the same seeded conversations through our
balancer + agents and through the proxies people put in front of llama-server.

Fronts, each over the same fleet (by default 2 servers of SmolLM2-135M, 2 slots and 1 thread
each, prompt caches on: our agents' host-memory `--prompt-cache-mib`, llama-server's
`--cache-ram`, both at their defaults):

- `paddler`: our balancer (`--routing`, default: the balancer's own) and one agent per server;
- `nginx-round-robin`, `nginx-least-conn`: nginx over one llama-server per server;
- `haproxy-leastconn`: haproxy leastconn with maxconn = each server's slots;
- `haproxy-sticky`: haproxy hashing the `X-Session` header (`hash-type consistent`): sticky
  sessions, the best a static proxy does when clients cooperate.

Every request is a streaming `/v1/chat/completions` (greedy, `--tokens` at most, usage included)
with an `X-Session` header naming its user, sent by a blocking HTTP client in threads; our
balancer gets the header too and does not use it. Workloads (`prefix_workloads.py`):
`multi-turn` (users with their own system prompts, several rounds with think time, each round
resending the whole history), `shared-prefix` (a few system prompts, short unique questions,
Poisson arrivals), `coding-agent` (a long system prompt and tool schemas shared by all users,
growing histories) and `unique` (no shared prefixes: the control). A request that fails ends
nothing: its user goes on to the next round without it. Under `tools` the fronts do not
generate alike: our agents render the tools into a longer prompt than llama-server's template
and send a tool call whole once it parses (its first piece is its end), so read coding-agent's
tool-call replies and cached ratios beside its TTFT.

Each run (workload, seed, front) starts its fleet afresh, so every front starts with cold
caches, and the fronts of one workload and seed run one after another. Per front the tables
give completed, rejected (HTTP 429/502/503/504, or a stream ended by one of those errors) and
failed requests, TTFT p50/p90/p99 (and p50 of rounds 2 and later), end-to-end p99, tokens/s
and the share of prompt tokens served from a cache (`usage.prompt_tokens_details.cached_tokens`
over `usage.prompt_tokens`); percentiles count a request not served as slower than any served
one. Then the ratios of our TTFT p50 to nginx round robin's and to haproxy sticky's.

Runs are appended to `--results` (JSON lines, one per run; a rerun replaces the older in the
tables); `--report FILE` prints the tables of a results file and runs nothing.

Setup: `apt-get update && apt-get install -y nginx haproxy`; llama-server is built once, on
first use, from the llama-cpp-python sdist (`llama_server_build.py`, 10-20 minutes on 2 cores).

Full run: `.venv/bin/python scripts/bench_prefix.py`; a smoke run:
`.venv/bin/python scripts/bench_prefix.py --seeds 1 --users 2 --rounds 2 --think-s 1
--requests 6 --rate 1 --system-scale 0.3 --tokens 16`.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import math
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_servers import HOST, llama_server_ready, log
from llama_server_build import ensure_llama_server
from prefix_results import (
    FRONTS,
    PADDLER,
    Result,
    Stats,
    read_records,
    report,
    row_of,
    seconds,
)
from prefix_workloads import (
    CODING_AGENT,
    DEFAULT_ROUNDS,
    DEFAULT_USERS,
    WORKLOADS,
    Session,
    Sizes,
    sessions,
)
from routing_fronts import llama_servers, paddler_fleet, proxy

MODEL = "smollm2-135m"
CONTEXT_PER_SLOT = 4096
CODING_CONTEXT_PER_SLOT = 8192
REJECTED_STATUS = (429, 502, 503, 504)
# OpenAI error types of a stream that a refusal ended after it began.
REJECTED_TYPES = ("rate_limit_error", "service_unavailable_error", "timeout_error")
TOOL_RESULT = '{"status": "ok"}'
DEFAULT_RESULTS = Path(tempfile.gettempdir()) / "bench-prefix.jsonl"


@dataclass
class _Reply:
    """What a chat completion stream said so far."""

    text: list[str] = field(default_factory=list)
    calls: dict[int, dict[str, str]] = field(default_factory=dict)
    usage: tuple[int, int, int] | None = None  # prompt, cached, completion tokens
    failure: str | None = None  # "rejected" or "error": an error event ended the stream

    def read(self, event: dict[str, Any]) -> bool:
        """Take one event in; whether it carried generated text or a tool call."""
        if "error" in event:
            error = event["error"]
            kind = error.get("type") if isinstance(error, dict) else None
            self.failure = "rejected" if kind in REJECTED_TYPES else "error"
            log(f"stream error: {str(error)[:200]}")
            return False
        if event.get("usage"):
            usage = event["usage"]
            details = usage.get("prompt_tokens_details") or {}
            # llama-server builds without prompt_tokens_details say it in their timings.
            cached = details.get("cached_tokens", (event.get("timings") or {}).get("cache_n", 0))
            self.usage = (int(usage["prompt_tokens"]), int(cached), int(usage["completion_tokens"]))
        generated = False
        for choice in event.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self.text.append(delta["content"])
                generated = True
            for piece in delta.get("tool_calls") or ():
                call = self.calls.setdefault(int(piece.get("index", 0)), defaultdict(str))
                function = piece.get("function") or {}
                call["id"] += piece.get("id") or ""
                call["name"] += function.get("name") or ""
                call["arguments"] += function.get("arguments") or ""
                generated = True
        return generated

    def messages(self) -> list[dict[str, object]]:
        """The assistant's message for the history, and a result for each tool it called."""
        ids = [call["id"] or f"call_{index}" for index, call in sorted(self.calls.items())]
        reply: dict[str, object] = {"role": "assistant", "content": "".join(self.text)}
        if not self.calls:
            return [reply]
        reply["tool_calls"] = [
            {
                "id": id_,
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
            for id_, (_, c) in zip(ids, sorted(self.calls.items()), strict=True)
        ]
        results: list[dict[str, object]] = [
            {"role": "tool", "tool_call_id": id_, "content": TOOL_RESULT} for id_ in ids
        ]
        return [reply, *results]


def chat(
    port: int, session: Session, number: int, messages: list[dict[str, object]],
    args: argparse.Namespace,
) -> tuple[Result, list[dict[str, object]]]:  # fmt: skip
    """One streaming chat completion (blocking, in a thread): its result, and the messages its
    reply adds to the history (none if it failed)."""
    body: dict[str, object] = {
        "model": "any",
        "messages": messages,
        "max_tokens": args.tokens,
        "temperature": 0.0,
        "repeat_penalty": 1.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if session.tools:
        body["tools"] = list(session.tools)
    headers = {"Content-Type": "application/json", "X-Session": session.name}
    failed = Result(session.name, number, "error")
    start = time.perf_counter()
    connection = http.client.HTTPConnection(HOST, port, timeout=args.request_timeout)
    try:
        connection.request("POST", "/v1/chat/completions", json.dumps(body), headers)
        response = connection.getresponse()
        if response.status in REJECTED_STATUS:
            return Result(session.name, number, "rejected"), []
        if response.status != 200:
            log(f"HTTP {response.status}: {response.read()[:200]!r}")
            return failed, []
        reply, ttft = _Reply(), math.nan
        for line in response:
            payload = line.removeprefix(b"data: ").strip()
            if not line.startswith(b"data: ") or payload == b"[DONE]":
                continue
            if reply.read(json.loads(payload)) and math.isnan(ttft):
                ttft = time.perf_counter() - start
        total = time.perf_counter() - start
        if reply.failure or reply.usage is None:
            return Result(session.name, number, reply.failure or "error"), []
        # A reply with nothing generated (the end at once) had its first token at the end.
        ttft = total if math.isnan(ttft) else ttft
        result = Result(session.name, number, "ok", ttft, total, *reply.usage, len(reply.calls))
        return result, reply.messages()
    except (OSError, http.client.HTTPException, ValueError) as error:
        log(f"request failed: {error!r}")
        return failed, []
    finally:
        connection.close()


def converse(port: int, session: Session, start: float, args: argparse.Namespace) -> list[Result]:
    """One user's rounds, from its start time on: each sends the whole history and a new
    question; a failed round's question is dropped from the history."""
    time.sleep(max(0.0, start + session.start_s - time.perf_counter()))
    history: list[dict[str, object]] = [{"role": "system", "content": session.system}]
    results = []
    for number, question in enumerate(session.questions, start=1):
        asked: list[dict[str, object]] = [*history, {"role": "user", "content": question}]
        result, reply = chat(port, session, number, asked, args)
        results.append(result)
        if reply:
            history = asked + reply
        if number <= len(session.thinks_s):
            time.sleep(session.thinks_s[number - 1])
    return results


def drive(
    port: int, plan: Sequence[Session], args: argparse.Namespace
) -> tuple[list[Result], float]:
    """Every session through the front on ``port``, one thread each; the results and the
    seconds from the start to the last reply."""
    start = time.perf_counter()
    with ThreadPoolExecutor(len(plan)) as pool:
        done = pool.map(lambda session: converse(port, session, start, args), plan)
        results = [result for results in done for result in results]
    return results, time.perf_counter() - start


def context_per_slot(workload: str, args: argparse.Namespace) -> int:
    """Context per slot: the flag's, else enough for the workload at its default sizes."""
    if args.context_size:
        return int(args.context_size)
    return CODING_CONTEXT_PER_SLOT if workload == CODING_AGENT else CONTEXT_PER_SLOT


async def run_front(
    front: str, plan: Sequence[Session], context: int, args: argparse.Namespace, log_dir: Path
) -> tuple[list[Result], float]:
    """Start the fleet behind ``front``, drive ``plan`` through it, stop it."""
    fleet = [(MODEL, args.slots)] * args.servers
    if front == PADDLER:
        async with paddler_fleet(
            fleet, args.routing, args, log_dir, context_per_slot=context, prompt_cache=True
        ) as ours:
            return await asyncio.to_thread(drive, ours.openai_port, plan, args)
    with llama_servers(fleet, ensure_llama_server(), log_dir, context) as (ports, _):
        deadline = time.monotonic() + 180
        while not all(llama_server_ready(port) for port in ports):
            if time.monotonic() > deadline:
                raise RuntimeError("llama-servers did not become healthy")
            await asyncio.sleep(0.5)
        with proxy(front, ports, [args.slots] * args.servers, log_dir) as (listen, _):
            return await asyncio.to_thread(drive, listen, plan, args)


def front_label(front: str, args: argparse.Namespace) -> str:
    """The front's name in the results: ours names its routing policy when one is given."""
    return f"{PADDLER}-{args.routing}" if front == PADDLER and args.routing else front


def setting(workload: str, sizes: Sizes, context: int, args: argparse.Namespace) -> str:
    """What a run measured besides its workload, seed and front: runs compare only within it."""
    return (
        f"{sizes.describe(workload)}; {args.tokens} tokens; {args.servers} servers x "
        f"{args.slots} slots, {context} tokens/slot"
    )


async def bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every run asked for, appended to the results file as it ends; returns their records."""
    log_dir = Path(tempfile.mkdtemp(prefix="bench-prefix-"))
    log(f"logs in {log_dir}; results in {args.results}")
    if any(front != PADDLER for front in args.fronts):
        ensure_llama_server()  # built before the first run, not in the middle of one
    records = []
    for workload in args.workloads:
        sizes = Sizes(
            users=args.users or DEFAULT_USERS.get(workload, 0),
            rounds=args.rounds or DEFAULT_ROUNDS.get(workload, 1),
            think_s=args.think_s, rate=args.rate, requests=args.requests, groups=args.groups,
            system_scale=args.system_scale,
        )  # fmt: skip
        context = context_per_slot(workload, args)
        for seed in args.seeds:
            plan = sessions(workload, sizes, seed)
            for front in args.fronts:
                label = front_label(front, args)
                log(f"{workload} seed {seed}: {label}")
                run_dir = log_dir / f"{workload}-{seed}-{label}"
                results, wall = await run_front(front, plan, context, args, run_dir)
                record = {
                    "workload": workload, "setting": setting(workload, sizes, context, args),
                    "seed": seed, "front": label, "wall": round(wall, 3),
                    "results": [row_of(result) for result in results],
                }  # fmt: skip
                args.results.parent.mkdir(parents=True, exist_ok=True)
                with args.results.open("a") as file:
                    file.write(json.dumps(record) + "\n")
                records.append(record)
                stats = Stats(tuple(results), wall)
                log(
                    f"{workload} seed {seed} {label}: ok {stats.completed} of {len(results)}, "
                    f"TTFT p50 {seconds(stats.ttft(0.5))} s, cached {stats.cached_ratio:.2f}"
                )
    return records


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--fronts", nargs="+", choices=FRONTS, default=list(FRONTS))
    parser.add_argument("--routing", help="our balancer's --routing (default: its default)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--users", type=int,
        help="users of multi-turn and coding-agent (default: "
        + ", ".join(f"{w} {n}" for w, n in DEFAULT_USERS.items()) + ")",
    )  # fmt: skip
    parser.add_argument(
        "--rounds", type=int,
        help="rounds per user (default: "
        + ", ".join(f"{w} {n}" for w, n in DEFAULT_ROUNDS.items()) + ")",
    )  # fmt: skip
    parser.add_argument(
        "--think-s", type=float, default=3.0, help="mean think time between a user's rounds"
    )
    parser.add_argument(
        "--rate", type=float, default=0.5,
        help="Poisson arrivals per second: of requests (shared-prefix, unique) or of users' "
        "first rounds (multi-turn, coding-agent)",
    )  # fmt: skip
    parser.add_argument(
        "--requests", type=int, default=32, help="requests of shared-prefix and unique"
    )
    parser.add_argument("--groups", type=int, default=4, help="system prompts of shared-prefix")
    parser.add_argument(
        "--system-scale", type=float, default=1.0,
        help="multiplies the system prompts' sizes (multi-turn 700 tokens, shared-prefix 800, "
        "coding-agent 4096 and its tools, unique 700)",
    )  # fmt: skip
    parser.add_argument("--tokens", type=int, default=48, help="max_tokens of every request")
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--slots", type=int, default=2, help="slots per server")
    parser.add_argument(
        "--context-size", type=int,
        help=f"context per slot (default {CONTEXT_PER_SLOT}, coding-agent "
        f"{CODING_CONTEXT_PER_SLOT})",
    )  # fmt: skip
    parser.add_argument("--request-timeout", type=float, default=600.0,
        help="seconds a request may take; also our balancer's buffer timeout, like the "
        "proxies' queue timeouts")  # fmt: skip
    parser.add_argument(
        "--results", type=Path, default=DEFAULT_RESULTS, help="JSON lines, appended"
    )
    parser.add_argument(
        "--report", type=Path, metavar="FILE", help="print FILE's tables; run nothing"
    )
    args = parser.parse_args(argv)
    counts = (args.users, args.rounds, args.requests, args.groups, args.servers, args.slots)
    if any(n is not None and n < 1 for n in counts) or min(args.rate, args.system_scale) <= 0:
        parser.error("sizes and --rate must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run what is asked and print its tables, or print a results file's."""
    args = parse_args(argv)
    records = read_records(args.report) if args.report else asyncio.run(bench(args))
    print(report(records))


if __name__ == "__main__":
    main()
