"""Benchmark JSON-schema-constrained generation: the paddler agent against `llama-server`.

Both servers get the same GGUF, threads and slots, the same raw ChatML prompts and the same JSON
schemas (the agent as `GenerationInput.grammar.json_schema` over gRPC, llama-server as
`json_schema` on `POST /completion`), greedy with no repeat penalty. One server after the other,
each is driven with the same closed loop at each concurrency. Prints a markdown table (replies/s,
tokens/s, per-request decode speed, TTFT p50, ratio agent / llama-server) and how many replies
did not parse as JSON or validate against their schema. Tokens are counted as each server
reports them: llama-server's grammar allows whitespace between JSON tokens and SmolLM2 uses it,
the agent writes compact JSON, so the same reply takes llama-server more tokens.

A second part, `embeddings`, compares the agent's `Embed` with llama-server's `/v1/embeddings`
(texts/s, tokens/s, and the cosine between the two servers' vectors); it lives in
`scripts/bench_embeddings.py`. `--parts json embeddings` (the default) runs both.

Run: `.venv/bin/python scripts/bench_structured.py` (see `--help`).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import jsonschema

from paddler.agent.default_model import default_model_path
from paddler.v1 import agent_pb2, generation_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_embeddings
import bench_servers as bs
from bench_agent import RunResult, closed_loop
from llama_server_build import ensure_llama_server

Schema = dict[str, Any]


def text(max_length: int) -> Schema:
    return {"type": "string", "minLength": 1, "maxLength": max_length}


def integer(low: int, high: int) -> Schema:
    return {"type": "integer", "minimum": low, "maximum": high}


def strings(max_length: int, max_items: int) -> Schema:
    return {"type": "array", "items": text(max_length), "minItems": 1, "maxItems": max_items}


def record(**properties: Schema) -> Schema:
    """An object with exactly these properties, all required, in this order."""
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}  # fmt: skip


# (instruction, schema): every string and array is bounded, so replies close in ~40-100 tokens.
TASKS: tuple[tuple[str, Schema], ...] = (
    ("Describe the main character of the story that begins below.", record(
        name=text(24), age=integer(1, 99), traits=strings(16, 3), is_hero={"type": "boolean"},
        occupation={"enum": ["fisherman", "scholar", "baker", "traveler", "student", "other"]})),
    ("Classify the story that begins below.", record(
        genre={"enum": ["fairy tale", "history", "how-to", "mystery", "science", "diary"]},
        setting=text(32), mood={"enum": ["happy", "sad", "tense", "calm", "curious"]},
        keywords=strings(12, 3), reading_age=integer(6, 18))),
    ("Write a short review of the book that begins below.", record(
        title=text(32), rating=integer(1, 5), pros=strings(24, 2), summary=text(60),
        sentiment={"enum": ["positive", "neutral", "negative"]})),
)  # fmt: skip
# closed_loop hands each request one of PROMPTS: each opening maps to a schema and a prompt, a
# fixed ChatML rendering (SmolLM2's template) that both servers tokenize as the same raw text.
JOBS = {
    opening: (schema, f"<|im_start|>user\n{instruction} Answer in JSON.\n\n{opening}<|im_end|>\n"
              "<|im_start|>assistant\n")
    for opening, (instruction, schema) in zip(bs.PROMPTS, TASKS * len(bs.PROMPTS), strict=False)
}  # fmt: skip


def invalid(schema: Schema, reply: str) -> int:
    """1 (and a log line) if the reply is not JSON matching the schema, else 0."""
    try:
        jsonschema.validate(json.loads(reply), schema)
    except (ValueError, jsonschema.ValidationError) as error:
        bs.log(f"invalid reply {reply!r}: {str(error).splitlines()[0]}")
        return 1
    return 0


def llama_server_structured(
    port: int, prompt: str, schema: Schema, max_tokens: int, timeout: float
) -> tuple[bs.Sample, str]:
    """One streaming `POST /completion` under a JSON schema (blocking; runs in a thread)."""
    body = json.dumps({
        "prompt": prompt, "n_predict": max_tokens, "stream": True, "cache_prompt": False,
        "temperature": bs.BENCH_SAMPLING.temperature, "json_schema": schema,
        "repeat_penalty": bs.BENCH_SAMPLING.repeat_penalty,
    })  # fmt: skip
    connection = http.client.HTTPConnection(bs.HOST, port, timeout=timeout)
    try:
        start = time.perf_counter()
        connection.request("POST", "/completion", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"/completion: HTTP {response.status}: {response.read()[:300]!r}")
        ttft, pieces = 0.0, []
        for event in (json.loads(line[6:]) for line in response if line.startswith(b"data: ")):
            if event.get("content"):
                ttft = ttft or time.perf_counter() - start
                pieces.append(event["content"])
            if event.get("stop"):
                tokens = int(event["tokens_predicted"])
                return bs.Sample(ttft, tokens, time.perf_counter() - start), "".join(pieces)
        raise RuntimeError("/completion: stream ended without a final event")
    finally:
        connection.close()


async def measure(name: str, send: bs.RequestFn, args: argparse.Namespace) -> dict[int, RunResult]:
    """One warm-up request per schema, then the closed loop at each concurrency. `send` returns
    (sample, 1 if the reply was invalid); closed_loop sums the 1s into `RunResult.retries`."""
    for opening in bs.PROMPTS[: len(TASKS)]:
        await send(opening)
    results: dict[int, RunResult] = {}
    for c in args.concurrency:
        r = results[c] = await closed_loop(send, c, args.requests_per_worker)
        bs.log(f"{name} c={c}: {r.tokens_per_second:.1f} tok/s, TTFT p50 {r.ttft_ms(0.5):.0f} "
               f"ms, {r.mean_tokens:.1f} tokens/request, {r.retries} invalid")  # fmt: skip
    return results


async def bench_llama_server(
    binary: Path, args: argparse.Namespace, log_dir: Path
) -> dict[int, RunResult]:
    loop = asyncio.get_running_loop()
    # The server is stopped before the pool waits for its threads, so none is left hanging.
    with ThreadPoolExecutor(max(args.concurrency)) as pool:
        async with bs.serving_llama_server(binary, args, log_dir) as server:
            port = server.port

            async def send(opening: str) -> tuple[bs.Sample, int]:
                schema, prompt = JOBS[opening]
                sample, reply = await loop.run_in_executor(
                    pool, llama_server_structured, port, prompt, schema, args.max_tokens, 300.0
                )
                return sample, invalid(schema, reply)

            return await measure(server.name, send, args)


async def bench_agent(args: argparse.Namespace, log_dir: Path) -> dict[int, RunResult]:
    async with (
        bs.serving_agent(args, log_dir) as server,
        grpc.aio.insecure_channel(f"{bs.HOST}:{server.port}") as channel,
    ):
        generate: grpc.aio.UnaryStreamMultiCallable[
            agent_pb2.GenerateRequest, agent_pb2.GenerateResponse
        ] = channel.unary_stream(bs.GENERATE_METHOD, agent_pb2.GenerateRequest.SerializeToString,
                                 agent_pb2.GenerateResponse.FromString)  # fmt: skip

        async def send(opening: str) -> tuple[bs.Sample, int]:
            schema, prompt = JOBS[opening]
            grammar = generation_pb2.Grammar(json_schema=json.dumps(schema))
            request = agent_pb2.GenerateRequest(input=generation_pb2.GenerationInput(
                prompt=prompt, max_tokens=args.max_tokens, sampling=bs.BENCH_SAMPLING,
                grammar=grammar))  # fmt: skip
            start = time.perf_counter()
            # A slot freed a moment late answers RESOURCE_EXHAUSTED at concurrency == slots.
            for _ in range(100):
                ttft, pieces = 0.0, []
                try:
                    async for reply in generate(request, timeout=300.0):
                        if reply.text:
                            ttft = ttft or time.perf_counter() - start
                            pieces.append(reply.text)
                        if reply.HasField("summary"):
                            tokens = reply.summary.usage.completion_tokens
                            sample = bs.Sample(ttft, tokens, time.perf_counter() - start)
                            return sample, invalid(schema, "".join(pieces))
                except grpc.aio.AioRpcError as error:
                    if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or ttft:
                        raise
                    await asyncio.sleep(0.01)
                    continue
                raise RuntimeError("Generate: stream ended without a summary")
            raise RuntimeError("Generate: RESOURCE_EXHAUSTED 100 times in a row")

        return await measure(server.name, send, args)


def markdown_table(runs: dict[str, dict[int, RunResult]]) -> str:
    header = [
        "Server", "Concurrency", "Requests", "Tokens / reply", "Replies/s", "tok/s (all)",
        "Per-request decode tok/s (median)", "TTFT p50 (ms)", "Invalid replies",
        "tok/s agent / llama-server",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, by_concurrency in runs.items():
        for c, r in by_concurrency.items():
            baseline = runs[bs.LLAMA_SERVER][c].tokens_per_second
            row = [
                name, str(c), str(len(r.samples)), f"{r.mean_tokens:.1f}",
                f"{len(r.samples) / r.wall:.2f}", f"{r.tokens_per_second:.1f}",
                f"{statistics.median(s.decode_tokens_per_second for s in r.samples):.1f}",
                f"{r.ttft_ms(0.5):.0f}", str(r.retries),
                f"{r.tokens_per_second / baseline:.2f}" if name == bs.AGENT else "",
            ]  # fmt: skip
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, default=None, help="GGUF (default: SmolLM2)")
    parser.add_argument("--slots", type=int, default=4, help="agent slots = llama-server -np")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--context-size", type=int, default=512, help="context per slot")
    parser.add_argument("--concurrency", type=lambda s: [int(c) for c in s.split(",")],
                        default=[1, 4], help="comma-separated (default 1,4)")  # fmt: skip
    parser.add_argument("--requests-per-worker", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=192, help="cap per reply")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=["json", "embeddings"],
        default=["json", "embeddings"],
        help="what to compare (default both)",
    )
    bench_embeddings.add_arguments(parser)
    args = parser.parse_args(argv)
    args.model = args.model or default_model_path()
    # What serving_llama_server / serving_agent read besides the flags above.
    args.tokens, args.prompt_cache, args.startup_timeout, args.request_timeout = (
        args.max_tokens, False, 300.0, 300.0)  # fmt: skip
    args.n_gpu_layers = args.flash_attention = None
    if not args.model.is_file():
        parser.error(f"no model file at {args.model}")
    if min(*args.concurrency, args.requests_per_worker, args.max_tokens) < 1:
        parser.error("--concurrency, --requests-per-worker and --max-tokens must be >= 1")
    if max(args.concurrency) > args.slots:
        parser.error("--concurrency above --slots: the agent rejects requests beyond its slots")
    bench_embeddings.check_arguments(parser, args)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the servers are stopped either way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    log_dir = Path(tempfile.mkdtemp(prefix="paddler-bench-structured-"))
    binary = ensure_llama_server()
    if "json" in args.parts:
        run_json(binary, args, log_dir)
    if "embeddings" in args.parts:
        print(("\n" if "json" in args.parts else "") + bench_embeddings.run(binary, args, log_dir))


def run_json(binary: Path, args: argparse.Namespace, log_dir: Path) -> None:
    runs = {
        bs.LLAMA_SERVER: asyncio.run(bench_llama_server(binary, args, log_dir)),
        bs.AGENT: asyncio.run(bench_agent(args, log_dir)),
    }
    print(markdown_table(runs))
    print(
        f"\nModel `{args.model.name}`, {args.threads} thread(s), {args.slots} slots, context "
        f"{args.context_size} per slot, {len(TASKS)} JSON schemas, at most {args.max_tokens} "
        f"tokens per reply, {args.requests_per_worker} requests per worker, closed loop, one "
        "server at a time, greedy, no repeat penalty, no prompt cache."
    )
    for name, by_concurrency in runs.items():
        bad = sum(r.retries for r in by_concurrency.values())
        count = sum(len(r.samples) for r in by_concurrency.values())
        print(f"{name}: {bad} of {count} replies not valid JSON for their schema.")


if __name__ == "__main__":
    main()
