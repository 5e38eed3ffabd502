"""Benchmark the OpenAI API's cost: the same closed loop through the balancer's
`/v1/chat/completions` (streaming SSE) and its gRPC `InferenceService/Generate`, side by side.

One balancer and one agent (`bench_balancer.py`'s setup, flags and placements). Both paths send
the same conversations (one user message, the numbered prompts of `bench_agent.py`, greedy, the
same token counts), alternating gRPC, HTTP, gRPC, HTTP... for `--rounds` rounds per
concurrency. Per path tokens/s is the median of its rounds; the paired ratio is the median over
the rounds of each HTTP round / the gRPC round just before it; the added time to first token is
the difference of the two paths' transport p50 (time to first token at the client less the
agent's own, which a gRPC summary and each finished OpenAI choice's `paddler` field carry), so
queueing and prefill, which swing from round to round at 8 streams, cancel out.
Targets: ratio >= 0.97 and < 3 ms added TTFT p50 with the balancer on its own core
(`--placement balancer-core`).

Run: `.venv/bin/python scripts/bench_openai.py --placement balancer-core` (see `--help`).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import statistics
import sys
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from pathlib import Path

import grpc
import httpx
from google.protobuf.duration_pb2 import Duration

from paddler.v1 import agent_pb2, generation_pb2, inference_pb2, inference_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_agent import RunResult, closed_loop
from bench_balancer import (
    BALANCER,
    OPENAI,
    balanced_agent,
    itl_p50_ms,
    median_rate,
    parse_args,
    pooled,
    requester,
    transport_p50_ms,
)
from bench_servers import log

GRPC = "grpc"
TARGET_RATIO = 0.97
TARGET_ADDED_TTFT_MS = 3.0


def conversation(generation_input: generation_pb2.GenerationInput) -> list[dict[str, str]]:
    """The bench's prompt as a one-message conversation."""
    return [{"role": "user", "content": generation_input.prompt}]


async def sse_replies(
    client: httpx.AsyncClient,
    model: str,
    generation_input: generation_pb2.GenerationInput,
    limit_s: float,
) -> AsyncIterator[agent_pb2.GenerateResponse]:
    """One streamed chat completion, as the pieces and summary `requester` times."""
    body = {
        "model": model,
        "messages": conversation(generation_input),
        "max_tokens": generation_input.max_tokens,
        "temperature": generation_input.sampling.temperature,
        "repeat_penalty": generation_input.sampling.repeat_penalty,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    agent_ttft = Duration()
    async with client.stream("POST", "/v1/chat/completions", json=body, timeout=limit_s) as reply:
        reply.raise_for_status()
        async for line in reply.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line.removeprefix("data: "))
            if chunk.get("usage"):
                usage = generation_pb2.Usage(completion_tokens=chunk["usage"]["completion_tokens"])
                summary = generation_pb2.GenerationSummary(
                    usage=usage, time_to_first_token=agent_ttft
                )
                yield agent_pb2.GenerateResponse(summary=summary)
            elif chunk["choices"] and "paddler" in chunk["choices"][0]:
                served = chunk["choices"][0]["paddler"]
                agent_ttft.FromNanoseconds(round(served["time_to_first_token_ms"] * 1e6))
            elif chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                yield agent_pb2.GenerateResponse(text=chunk["choices"][0]["delta"]["content"])


async def bench(args: argparse.Namespace, log_dir: Path) -> dict[int, dict[str, list[RunResult]]]:
    """Per concurrency and path, the runs of every round, the paths alternating."""
    async with (
        balanced_agent(args, log_dir) as addresses,
        grpc.aio.insecure_channel(addresses[BALANCER]) as channel,
        httpx.AsyncClient(
            base_url=f"http://{addresses[OPENAI]}",
            limits=httpx.Limits(max_connections=max(args.concurrency) + 1),
        ) as client,
    ):
        inference = inference_pb2_grpc.InferenceServiceStub(channel)
        model = (await client.get("/v1/models")).json()["data"][0]["id"]

        def by_grpc(
            generation_input: generation_pb2.GenerationInput, timeout: float
        ) -> AsyncIterable[inference_pb2.InferenceServiceGenerateResponse]:
            messages = [
                generation_pb2.ChatMessage(role=m["role"], content=m["content"])
                for m in conversation(generation_input)
            ]
            chat = generation_pb2.GenerationInput(
                conversation=generation_pb2.Conversation(messages=messages),
                max_tokens=generation_input.max_tokens,
                sampling=generation_input.sampling,
            )
            request = inference_pb2.InferenceServiceGenerateRequest(input=chat)
            return inference.Generate(request, timeout=timeout)

        def by_http(
            generation_input: generation_pb2.GenerationInput, timeout: float
        ) -> AsyncIterable[agent_pb2.GenerateResponse]:
            return sse_replies(client, model, generation_input, timeout)

        numbers = itertools.count()
        paths = {GRPC: requester(by_grpc, args, numbers), OPENAI: requester(by_http, args, numbers)}
        for request in paths.values():  # warm-up: connections, every slot's first decode
            await closed_loop(request, max(args.concurrency), 1)
        results: dict[int, dict[str, list[RunResult]]] = {}
        for concurrency in args.concurrency:
            results[concurrency] = {name: [] for name in paths}
            for round_number in range(1, args.rounds + 1):
                for name, request in paths.items():
                    run = await closed_loop(request, concurrency, args.requests_per_worker)
                    log(
                        f"c={concurrency} round {round_number}/{args.rounds} {name}: "
                        f"{run.tokens_per_second:.1f} tok/s, TTFT p50 {run.ttft_ms(0.5):.1f} ms, "
                        f"transport p50 {transport_p50_ms(run):.1f} ms"
                    )
                    results[concurrency][name].append(run)
        return results


def markdown_table(results: dict[int, dict[str, list[RunResult]]]) -> str:
    """One row per concurrency: both paths over their rounds, the ratio, the verdict."""
    header = [
        "Concurrency",
        "gRPC tok/s",
        "OpenAI SSE tok/s",
        f"paired ratio (target >= {TARGET_RATIO})",
        "TTFT p50 gRPC / SSE (ms)",
        "transport p50 gRPC / SSE (ms)",
        f"added TTFT p50: SSE transport - gRPC's (ms, target < {TARGET_ADDED_TTFT_MS:g})",
        "ITL p50 gRPC / SSE (ms)",
        "result",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for concurrency, runs in results.items():
        by_grpc, by_http = pooled(runs[GRPC]), pooled(runs[OPENAI])
        pairs = list(zip(runs[GRPC], runs[OPENAI], strict=True))
        ratio = statistics.median(h.tokens_per_second / g.tokens_per_second for g, h in pairs)
        transport_grpc, transport_http = transport_p50_ms(by_grpc), transport_p50_ms(by_http)
        added = transport_http - transport_grpc
        passed = ratio >= TARGET_RATIO and added < TARGET_ADDED_TTFT_MS
        row = [
            str(concurrency),
            f"{median_rate(runs[GRPC]):.1f}",
            f"{median_rate(runs[OPENAI]):.1f}",
            f"{ratio:.3f}",
            f"{by_grpc.ttft_ms(0.5):.1f} / {by_http.ttft_ms(0.5):.1f}",
            f"{transport_grpc:.1f} / {transport_http:.1f}",
            f"{added:+.1f}",
            f"{itl_p50_ms(by_grpc):.1f} / {itl_p50_ms(by_http):.1f}",
            "PASS" if passed else "FAIL",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    log_dir = Path(tempfile.mkdtemp(prefix="paddler-bench-openai-"))
    results = asyncio.run(bench(args, log_dir))
    print(markdown_table(results))
    print()
    print(
        f"Model `{args.model.name}`, one agent ({args.threads} threads, {args.slots} slots; "
        f"{args.placed}), {args.tokens} +- {args.length_spread} tokens per request, "
        f"{args.requests_per_worker} requests per worker, {args.rounds} rounds per path."
    )


if __name__ == "__main__":
    main()
