"""Benchmark embeddings: the paddler agent's `Embed` against llama-server's `POST /v1/embeddings`.

The `embeddings` part of `scripts/bench_structured.py` (`--parts embeddings`). Both servers get
the same GGUF, threads, slots and context; llama-server runs with `--embeddings --pooling mean`
(L2-normalized, its default) and `-kvu`, the agent is asked for mean pooling and L2. The same
deterministic sentences (8-40 words) go out in batches of `--embed-batch` texts from each of
`--embed-concurrency` clients, which take the next batch until all are sent, one server after
the other. Prints texts/s, tokens/s (as each server counts them), batch latency and the ratio
agent / llama-server of texts/s; then how well the two servers' vectors for the same text agree
(cosine similarity, min and median).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import random
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import bench_servers as bs
import grpc
import numpy as np
import numpy.typing as npt

from paddler.v1 import agent_pb2, embedding_pb2

EMBED_METHOD = "/paddler.v1.AgentService/Embed"
Vector = npt.NDArray[np.float32]
# One batch of texts in, its vectors and (when the server says) its tokens out.
EmbedFn = Callable[[Sequence[str]], Awaitable[tuple[list[Vector], int | None]]]
VOCABULARY = (
    "the river morning light village old quiet road ship harbor market bread winter green "
    "mountain small story children teacher garden window letter music evening train station "
    "machine library ancient careful bright dark slowly across under between because while "
    "finds carries builds remembers opens watches writes listens walks returns forgets shares"
)


def sentences(count: int, seed: int = 13) -> tuple[str, ...]:
    """`count` sentences of 8-40 words, the same on every run."""
    rng, vocabulary = random.Random(seed), VOCABULARY.split()
    made = []
    for _ in range(count):
        words = [rng.choice(vocabulary) for _ in range(rng.randint(8, 40))]
        made.append(" ".join(words).capitalize() + ".")
    return tuple(made)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embed-texts", type=int, default=256, help="sentences per round")
    parser.add_argument("--embed-batch", type=int, default=32, help="texts per request")
    parser.add_argument("--embed-kv-unified", action=argparse.BooleanOptionalAction, default=True,
                        help="llama-server -kvu (default; see serving_llama_server)")  # fmt: skip
    parser.add_argument("--embed-concurrency", type=lambda s: [int(c) for c in s.split(",")],
                        default=[1, 2], help="comma-separated clients (default 1,2)")  # fmt: skip


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if min(args.embed_texts, args.embed_batch, *args.embed_concurrency) < 1:
        parser.error("--embed-texts, --embed-batch and --embed-concurrency must be >= 1")
    if max(args.embed_concurrency) > args.slots:
        parser.error("--embed-concurrency above --slots: each Embed call holds an agent slot")


@dataclass(frozen=True)
class EmbedRun:
    """One server at one concurrency: every text embedded once."""

    texts: int
    tokens: int | None
    wall: float
    latencies: tuple[float, ...]


@dataclass(frozen=True)
class Side:
    """One server's runs by concurrency, and its vector for each text (from the first run)."""

    name: str
    runs: dict[int, EmbedRun]
    vectors: tuple[Vector, ...]


async def client(
    send: EmbedFn,
    pending: Iterator[tuple[int, tuple[str, ...]]],
    out: dict[int, tuple[list[Vector], int | None, float]],
) -> None:
    """Send batches from `pending` one at a time; each one's vectors, tokens, seconds to `out`."""
    for index, batch in pending:
        start = time.perf_counter()
        vectors, tokens = await send(batch)
        out[index] = vectors, tokens, time.perf_counter() - start


async def measure(name: str, send: EmbedFn, args: argparse.Namespace) -> Side:
    texts = sentences(args.embed_texts)
    batches = [texts[i : i + args.embed_batch] for i in range(0, len(texts), args.embed_batch)]
    await send(batches[0])  # warm-up: the agent makes its embedding context on first use
    runs: dict[int, EmbedRun] = {}
    vectors: tuple[Vector, ...] = ()
    for c in args.embed_concurrency:
        out: dict[int, tuple[list[Vector], int | None, float]] = {}
        shared = enumerate(batches)  # each client takes the next batch until none is left
        start = time.perf_counter()
        await asyncio.gather(*(client(send, shared, out) for _ in range(c)))
        wall = time.perf_counter() - start
        counts = [out[i][1] for i in range(len(batches))]
        tokens = None if None in counts else sum(n or 0 for n in counts)
        latencies = tuple(out[i][2] for i in range(len(batches)))
        runs[c] = run = EmbedRun(len(texts), tokens, wall, latencies)
        vectors = vectors or tuple(v for i in range(len(batches)) for v in out[i][0])
        bs.log(f"{name} c={c}: {run.texts / wall:.1f} texts/s, "
               f"{'-' if tokens is None else f'{tokens / wall:.0f}'} tok/s")  # fmt: skip
    return Side(name, runs, vectors)


def llama_server_embed(
    port: int, texts: Sequence[str], timeout: float
) -> tuple[list[Vector], int | None]:
    """One `POST /v1/embeddings` (blocking; runs in a thread)."""
    connection = http.client.HTTPConnection(bs.HOST, port, timeout=timeout)
    try:
        body = json.dumps({"input": list(texts), "encoding_format": "float"})
        connection.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"/v1/embeddings: HTTP {response.status}: {payload[:300]!r}")
        reply = json.loads(payload)
        data = sorted(reply["data"], key=lambda item: int(item["index"]))
        vectors = [np.asarray(item["embedding"], dtype=np.float32) for item in data]
        usage = reply.get("usage") or {}
        return vectors, int(usage["prompt_tokens"]) if "prompt_tokens" in usage else None
    finally:
        connection.close()


@contextlib.asynccontextmanager
async def serving_llama_server(
    binary: Path, args: argparse.Namespace, log_dir: Path
) -> AsyncIterator[int]:
    """`llama-server --embeddings --pooling mean` with the agent's GGUF, threads and slots."""
    port = bs.free_port()
    command = [
        str(binary), "-m", str(args.model), "-t", str(args.threads), "-np", str(args.slots),
        "-c", str(args.slots * args.context_size), "--no-repack", "--embeddings",
        "--pooling", "mean", "--host", bs.HOST, "--port", str(port),
    ]  # fmt: skip
    # One KV buffer for all slots, as the agent's embedding context has. Without it llama-server
    # 0.3.36 decodes the texts of several slots together on split KV streams, and a text's
    # vector depends on its neighbours (cosine 0.80 to the same text sent alone); with it, or
    # with -np 1, the vector is the same either way.
    command += ["-kvu"] if args.embed_kv_unified else []
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1) as pool, bs.started(bs.LLAMA_SERVER, command, log_dir) as process:

        async def probe() -> bool:
            return await loop.run_in_executor(pool, bs.llama_server_ready, port)

        await bs.wait_ready(process, probe, args.startup_timeout)
        yield port


async def bench_llama_server(binary: Path, args: argparse.Namespace, log_dir: Path) -> Side:
    loop = asyncio.get_running_loop()
    # The server is stopped before the pool waits for its threads, so none is left hanging.
    with ThreadPoolExecutor(max(args.embed_concurrency)) as pool:
        async with serving_llama_server(binary, args, log_dir) as port:

            async def send(texts: Sequence[str]) -> tuple[list[Vector], int | None]:
                return await loop.run_in_executor(pool, llama_server_embed, port, texts, 300.0)

            return await measure(bs.LLAMA_SERVER, send, args)


async def bench_agent(args: argparse.Namespace, log_dir: Path) -> Side:
    async with (
        bs.serving_agent(args, log_dir) as server,
        grpc.aio.insecure_channel(f"{bs.HOST}:{server.port}") as channel,
    ):
        embed: grpc.aio.UnaryUnaryMultiCallable[agent_pb2.EmbedRequest, agent_pb2.EmbedResponse]
        embed = channel.unary_unary(EMBED_METHOD, agent_pb2.EmbedRequest.SerializeToString,
                                    agent_pb2.EmbedResponse.FromString)  # fmt: skip

        async def send(texts: Sequence[str]) -> tuple[list[Vector], int | None]:
            request = agent_pb2.EmbedRequest(input=embedding_pb2.EmbeddingInput(
                texts=texts, pooling=embedding_pb2.POOLING_MEAN,
                normalization=embedding_pb2.NORMALIZATION_L2))  # fmt: skip
            # A slot freed a moment late answers RESOURCE_EXHAUSTED at concurrency == slots.
            for _ in range(100):
                try:
                    reply = await embed(request, timeout=300.0)
                except grpc.aio.AioRpcError as error:
                    if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
                    await asyncio.sleep(0.01)
                    continue
                result = reply.result
                vectors = [np.asarray(e.values, dtype=np.float32) for e in result.embeddings]
                return vectors, result.prompt_tokens
            raise RuntimeError("Embed: RESOURCE_EXHAUSTED 100 times in a row")

        return await measure(server.name, send, args)


def report(llama: Side, agent: Side, args: argparse.Namespace) -> str:
    header = [
        "Server", "Concurrency", "Texts", "Tokens / text", "Texts/s", "tok/s",
        "Batch latency p50 (ms)", "texts/s agent / llama-server",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for side in (llama, agent):
        for c, r in side.runs.items():
            baseline = llama.runs[c].texts / llama.runs[c].wall
            row = [
                side.name, str(c), str(r.texts),
                "-" if r.tokens is None else f"{r.tokens / r.texts:.1f}",
                f"{r.texts / r.wall:.1f}", "-" if r.tokens is None else f"{r.tokens / r.wall:.0f}",
                f"{1000 * statistics.median(r.latencies):.0f}",
                f"{r.texts / r.wall / baseline:.2f}" if side is agent else "",
            ]  # fmt: skip
            lines.append("| " + " | ".join(row) + " |")
    cosines = [
        float(np.dot(a, b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))
        for a, b in zip(agent.vectors, llama.vectors, strict=True)
    ]
    worst = min(range(len(cosines)), key=cosines.__getitem__)
    widths = {len(v) for v in (*agent.vectors, *llama.vectors)}
    lines += [
        "",
        f"Embeddings: model `{args.model.name}`, {args.threads} thread(s), {args.slots} slots, "
        f"context {args.context_size} per slot, {args.embed_texts} sentences of 8-40 words in "
        f"batches of {args.embed_batch}, mean pooling, L2, llama-server "
        f"{'-kvu' if args.embed_kv_unified else '-no-kvu'}, one server at a time.",
        f"Cosine agent vs llama-server over {len(cosines)} texts (width {sorted(widths)}): "
        f"min {min(cosines):.6f} (text {worst}), median {statistics.median(cosines):.6f}.",
    ]
    return "\n".join(lines)


def run(binary: Path, args: argparse.Namespace, log_dir: Path) -> str:
    """Both servers, one after the other; the report to print."""
    llama = asyncio.run(bench_llama_server(binary, args, log_dir))
    agent = asyncio.run(bench_agent(args, log_dir))
    return report(llama, agent, args)
