"""A simulated agent: ``paddler.v1.AgentService`` and the balancer registration of a real agent,
with a fake engine that only waits (see ``SimulatedSpeed``) and sends placeholder text."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from paddler.agent.slot_claims import SlotClaims
from paddler.common.errors import InvalidArgumentError, UnimplementedError
from paddler.common.generation_input import check_generation_input
from paddler.simulation.simulated_speed import SimulatedSpeed
from paddler.v1 import agent_pb2, agent_pb2_grpc, generation_pb2, status_pb2

MODEL = "simulated"
# Tokens generated when a request sets no max_tokens (a simulated model never stops itself).
DEFAULT_TOKENS = 64
PIECE = "tok "


class SimulatedAgent(agent_pb2_grpc.AgentServiceServicer):
    """Slots, refusals, status and summaries like an agent's; every timing from ``speed``."""

    def __init__(self, name: str, slots: int, speed: SimulatedSpeed) -> None:
        self.name = name
        self.status_changed = asyncio.Event()  # set on every change of busy slots
        self.claims = SlotClaims(slots, self.status_changed.set)
        self.speed = speed

    def status(self) -> status_pb2.AgentStatus:
        """A snapshot, step timings included (exact: they come from the model)."""
        status = status_pb2.AgentStatus(
            name=self.name,
            slots_total=self.claims.total,
            slots_processing=self.claims.in_use,
            model=MODEL,
            ready=True,
            phase=status_pb2.STATE_PHASE_APPLIED,
            prefill_seconds_per_token=self.speed.factor * self.speed.ttft_per_prompt_token_s,
        )
        for streams in range(1, self.claims.total + 1):
            status.step_timings.add(
                streams=streams, step_seconds=self.speed.time_per_token(streams)
            )
        return status

    async def GetStatus(
        self, request: agent_pb2.GetStatusRequest, context: aio.ServicerContext[Any, Any]
    ) -> agent_pb2.GetStatusResponse:
        """Return the current snapshot."""
        return agent_pb2.GetStatusResponse(status=self.status())

    async def Embed(
        self, request: agent_pb2.EmbedRequest, context: aio.ServicerContext[Any, Any]
    ) -> agent_pb2.EmbedResponse:
        """Refused: the fake engine has no vectors to give."""
        raise UnimplementedError("a simulated agent computes no embeddings")

    async def Generate(
        self, request: agent_pb2.GenerateRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[agent_pb2.GenerateResponse]:
        """Wait the time to first token, then send a piece per token time, then the summary."""
        if check_generation_input(request.input) is not None:
            raise InvalidArgumentError(
                "input.grammar", "a simulated agent applies no grammar; leave input.grammar unset"
            )
        if request.input.HasField("conversation"):
            raise InvalidArgumentError(
                "input.conversation", "a simulated agent has no chat template; send a prompt"
            )
        prompt_tokens = max(len(request.input.prompt.split()), 1)
        tokens = (
            request.input.max_tokens if request.input.HasField("max_tokens") else DEFAULT_TOKENS
        )
        started = time.perf_counter()
        with self.claims.claim():
            await asyncio.sleep(self.speed.time_to_first_token(prompt_tokens))
            ttft = time.perf_counter() - started
            for produced in range(tokens):
                if produced:
                    await asyncio.sleep(self.speed.time_per_token(self.claims.in_use))
                yield agent_pb2.GenerateResponse(text=PIECE)
            summary = generation_pb2.GenerationSummary(
                finish_reason=generation_pb2.FINISH_REASON_MAX_TOKENS,
                usage=generation_pb2.Usage(prompt_tokens=prompt_tokens, completion_tokens=tokens),
                model=MODEL,
                agent_name=self.name,
            )
            summary.time_to_first_token.FromNanoseconds(int(ttft * 1e9))
            yield agent_pb2.GenerateResponse(summary=summary)
