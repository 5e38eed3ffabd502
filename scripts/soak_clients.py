"""The clients of a chaos soak (`soak.py`): each request takes one behaviour (gRPC or OpenAI,
streaming or not, cancelled, bad, with a deadline, a slow reader) and ends in exactly one
outcome. Requests refused before any piece because the balancer is away or drains are sent again
after the delay RetryInfo gives (a request never started cannot be served twice)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
import httpx
from google.rpc import error_details_pb2, status_pb2
from grpc import aio

from paddler.v1 import generation_pb2, inference_pb2, inference_pb2_grpc

MODEL = "SmolLM2-135M-Instruct.Q4_1"
PROMPT = "Count from one to fifty in words: one, two, three,"
MAX_TOKENS = 24
SLOW_READER_TOKENS = 400
REQUEST_TIMEOUT_S = 240.0
RETRY_DEFAULT_S = 0.5
RETRY_BUDGET_S = 90.0
# gRPC's flow-control window stays small until the client reads: a slow reader blocks the
# balancer's sends at once.
SMALL_WINDOW = [("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]

# Outcomes: what each is. Anything else a request ends in fails the soak.
EXPECTED = {
    "completed": "served to its end",
    "cancelled": "the client cancelled it after its first piece",
    "refused_bad_input": "a bad input refused with INVALID_ARGUMENT / 400",
    "deadline_exceeded": "the client's deadline passed",
    "cut_slow_reader": "the client stopped reading: cut (CLIENT_IDLE)",
    "broken_by_balancer_restart": "a stream that outlived the balancer's drain",
}


class RetryableError(Exception):
    """Refused before any piece (the balancer away or draining): send again after ``delay_s``."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(delay_s)
        self.delay_s = delay_s


@dataclass(frozen=True)
class Behaviour:
    """What one request does."""

    api: str  # grpc, openai-stream, openai-whole
    cancel: bool = False
    bad: bool = False
    deadline_s: float | None = None
    slow_reader: bool = False


def draw(rng: random.Random) -> Behaviour:
    """10 % cancels, 1 % bad input, 5 % with a short deadline, 2 % slow readers."""
    api = rng.choice(["grpc", "openai-stream", "openai-whole"])
    roll = rng.random()
    if roll < 0.01:
        return Behaviour(api, bad=True)
    if roll < 0.11 and api != "openai-whole":
        return Behaviour(api, cancel=True)
    if roll < 0.16 and api == "grpc":
        return Behaviour(api, deadline_s=rng.uniform(0.5, 3.0))
    if roll < 0.18 and api == "grpc":
        return Behaviour(api, slow_reader=True)
    return Behaviour(api)


def _retry_delay(error: aio.AioRpcError) -> float:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    return float(info.retry_delay.ToNanoseconds()) / 1e9
    return RETRY_DEFAULT_S


class Clients:
    """Sends requests at the balancer and counts their outcomes."""

    def __init__(self, inference: str, openai: str, idle_s: float) -> None:
        self._channel = aio.insecure_channel(inference)
        self._slow_channel = aio.insecure_channel(inference, options=SMALL_WINDOW)
        self._stub = inference_pb2_grpc.InferenceServiceStub(self._channel)
        self._slow_stub = inference_pb2_grpc.InferenceServiceStub(self._slow_channel)
        self._http = httpx.AsyncClient(base_url=f"http://{openai}/v1", timeout=REQUEST_TIMEOUT_S)
        self._idle_s = idle_s
        self.outcomes: dict[str, int] = {}
        self.started = 0
        self.retries = 0
        self.migrated = 0
        self.unexpected: list[str] = []

    async def one(self, behaviour: Behaviour) -> None:
        """Run one request to its single outcome, retrying a refusal before its first piece."""
        self.started += 1
        deadline = time.monotonic() + RETRY_BUDGET_S
        while True:
            try:
                outcome = await asyncio.wait_for(self._attempt(behaviour), REQUEST_TIMEOUT_S)
            except RetryableError as refused:
                if time.monotonic() > deadline:
                    outcome = "unexpected: still refused after the retry budget"
                else:
                    self.retries += 1
                    await asyncio.sleep(refused.delay_s)
                    continue
            except TimeoutError:
                outcome = "unexpected: hung"
            break
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if outcome not in EXPECTED:
            self.unexpected.append(f"{behaviour}: {outcome}")

    def _attempt(self, behaviour: Behaviour) -> Awaitable[str]:
        kinds: dict[str, Callable[[Behaviour], Awaitable[str]]] = {
            "grpc": self._grpc,
            "openai-stream": self._openai_stream,
            "openai-whole": self._openai_whole,
        }
        return kinds[behaviour.api](behaviour)

    async def _grpc(self, behaviour: Behaviour) -> str:
        tokens = SLOW_READER_TOKENS if behaviour.slow_reader else MAX_TOKENS
        sampling = generation_pb2.SamplingParameters(temperature=-1.0 if behaviour.bad else 0.7)
        request = inference_pb2.InferenceServiceGenerateRequest(
            input=generation_pb2.GenerationInput(
                prompt=PROMPT, max_tokens=tokens, sampling=sampling
            )
        )
        stub = self._slow_stub if behaviour.slow_reader else self._stub
        call = stub.Generate(request, timeout=behaviour.deadline_s)
        pieces = 0
        try:
            async for response in call:
                pieces += 1
                if response.HasField("summary"):
                    self.migrated += bool(response.summary.migrated_from)
                    return "completed"
                if behaviour.cancel:
                    call.cancel()
                    return "cancelled"
                if behaviour.slow_reader and pieces == 1:
                    await asyncio.sleep(self._idle_s + 3)
        except aio.AioRpcError as error:
            return self._grpc_failure(error, behaviour, pieces)
        return "unexpected: the stream ended without a summary"

    def _grpc_failure(self, error: aio.AioRpcError, behaviour: Behaviour, pieces: int) -> str:
        code = error.code()
        if behaviour.bad and code == grpc.StatusCode.INVALID_ARGUMENT:
            return "refused_bad_input"
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            if "--client-idle-timeout" in (error.details() or ""):
                return "cut_slow_reader" if behaviour.slow_reader else "unexpected: cut"
            if behaviour.deadline_s is not None:
                return "deadline_exceeded"
        if code == grpc.StatusCode.UNAVAILABLE and not pieces:
            raise RetryableError(_retry_delay(error))
        details = error.details() or ""
        broken = code in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED} and pieces
        if broken and "failed mid-stream" not in details:
            return "broken_by_balancer_restart"
        return f"unexpected: {code.name} {error.details()}"

    def _body(self, behaviour: Behaviour, *, stream: bool) -> dict[str, object]:
        return {
            "model": MODEL,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": MAX_TOKENS,
            "temperature": -1 if behaviour.bad else 0.7,
            "stream": stream,
        }

    async def _openai_whole(self, behaviour: Behaviour) -> str:
        try:
            reply = await self._http.post(
                "/chat/completions", json=self._body(behaviour, stream=False)
            )
        except httpx.TransportError as error:
            raise RetryableError(RETRY_DEFAULT_S) from error
        return self._http_outcome(reply.status_code, reply.text, behaviour)

    async def _openai_stream(self, behaviour: Behaviour) -> str:
        pieces = 0
        try:
            async with self._http.stream(
                "POST", "/chat/completions", json=self._body(behaviour, stream=True)
            ) as reply:
                if reply.status_code != 200:
                    await reply.aread()
                    return self._http_outcome(reply.status_code, reply.text, behaviour)
                async for line in reply.aiter_lines():
                    if line == "data: [DONE]":
                        return "completed"
                    if line.startswith('data: {"error"'):
                        return f"unexpected: an error event {line[6:200]}"
                    if line.startswith("data: "):
                        pieces += 1
                        if behaviour.cancel:
                            return "cancelled"  # leaving the block closes the connection
        except httpx.TransportError as error:
            if not pieces:
                raise RetryableError(RETRY_DEFAULT_S) from error
            return "broken_by_balancer_restart"
        return "unexpected: the stream ended without [DONE]"

    def _http_outcome(self, status: int, text: str, behaviour: Behaviour) -> str:
        if status == 200:
            return "completed"
        if behaviour.bad and status == 400:
            return "refused_bad_input"
        try:
            error = json.loads(text)["error"]
        except (ValueError, KeyError, TypeError):
            error = {"message": text[:200]}
        if status == 503:  # the balancer drains: nothing was started
            raise RetryableError(RETRY_DEFAULT_S)
        return f"unexpected: HTTP {status} {error.get('code')} {error.get('message')}"

    async def close(self) -> None:
        """Close the channels and the HTTP client."""
        await self._channel.close()
        await self._slow_channel.close()
        await self._http.aclose()
