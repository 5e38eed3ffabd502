"""Relays one generation from an agent's slot to a client, whatever API it came in by: waits
for a slot, streams the agent's serialized messages, and fails over to another agent when one
fails before its first piece."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import structlog
from grpc import aio

from paddler.balancer.agent_registry import RegisteredAgent
from paddler.balancer.failover import Failover, agent_failure, remaining
from paddler.balancer.metrics import BalancerMetrics, RequestMeter
from paddler.balancer.slot_dispatcher import SlotDispatcher
from paddler.balancer.stream_claim import Demand
from paddler.common.cancellation import being_cancelled
from paddler.common.errors import PaddlerError, UnavailableError
from paddler.v1 import agent_pb2, generation_pb2

log = structlog.get_logger(__name__)


class GenerationRelay:
    """Generate with failover: an agent that fails before its first piece is replaced."""

    def __init__(
        self, dispatcher: SlotDispatcher, max_attempts: int, metrics: BalancerMetrics
    ) -> None:
        self._dispatcher = dispatcher
        self._max_attempts = max_attempts
        self._metrics = metrics

    async def stream(
        self, forwarded: agent_pb2.GenerateRequest, deadline: float | None, api: str
    ) -> AsyncIterator[bytes]:
        """The agent's serialized ``GenerateResponse`` messages, summary last; logs one line
        and counts the request (``api`` names the surface the request came in by)."""
        progress = _Progress()
        meter = RequestMeter(self._metrics, api, "generate")
        outcome, code = "failed", "UNKNOWN"
        try:
            async for chunk in self._attempts(forwarded, deadline, progress, meter):
                meter.piece()
                yield chunk
        except PaddlerError as error:
            code = error.code.name
            raise
        except (GeneratorExit, asyncio.CancelledError):  # the client went away
            outcome, code = "cancelled", "CANCELLED"
            raise
        finally:
            summary = progress.log(forwarded.request_id, api)
            if summary is not None:
                usage = summary.usage
                meter.ended("served", "OK", usage.prompt_tokens, usage.completion_tokens)
            else:
                meter.ended(outcome, code)

    async def _attempts(
        self,
        forwarded: agent_pb2.GenerateRequest,
        deadline: float | None,
        progress: _Progress,
        meter: RequestMeter,
    ) -> AsyncIterator[bytes]:
        failover = Failover(
            self._dispatcher, self._max_attempts, forwarded.request_id, self._metrics
        )
        demand = Demand.of(forwarded.input)
        while True:
            waiting = time.perf_counter()
            try:  # a wait that ends in a timeout or a full buffer counts too
                claim = await self._dispatcher.acquire(
                    remaining(deadline),
                    frozenset(failover.excluded),
                    retry=progress.attempts > 0,
                    arrived_at=progress.arrived_at,
                    demand=demand,
                )
            finally:
                meter.waited(waiting)
            agent = claim.agent
            progress.agent = agent
            progress.attempts += 1
            call = None
            try:
                call = agent.generate(forwarded, timeout=remaining(deadline))
                async for chunk in call:
                    progress.last = chunk
                    claim.relayed += 1
                    yield chunk
            except (aio.AioRpcError, aio.UsageError, asyncio.CancelledError) as error:
                failure = agent_failure(agent, error)
                if progress.last:
                    raise UnavailableError(
                        f"agent {agent.name} failed mid-stream: "
                        f"{failure.code.name} {failure.message}",
                        reason="AGENT_FAILED_MID_STREAM",
                    ) from None
                failover.after(agent, failure)
            else:
                claim.completed = True
                return
            finally:
                if call is not None:
                    call.cancel()
                self._dispatcher.release(claim)


@dataclass
class _Progress:
    """How far one request got: for its log line."""

    started: float = field(default_factory=time.perf_counter)
    # When the --buffered-request-timeout clock started (time.monotonic).
    arrived_at: float = field(default_factory=time.monotonic)
    agent: RegisteredAgent | None = None
    attempts: int = 0
    last: bytes = b""

    def log(self, request_id: str, api: str) -> generation_pb2.GenerationSummary | None:
        """One line: served (the summary went out) or cancelled; errors are logged where mapped.
        Returns the summary of a served request."""
        last = agent_pb2.GenerateResponse.FromString(self.last)
        if last.HasField("summary") and self.agent is not None:
            self._log_served(request_id, api, self.agent, last.summary)
            return last.summary
        if being_cancelled():
            log.info(
                "request cancelled",
                request_id=request_id,
                api=api,
                stage="streaming" if self.last else "waiting for a slot",
                agent=self.agent.name if self.agent else None,
            )
        return None

    def _log_served(
        self,
        request_id: str,
        api: str,
        agent: RegisteredAgent,
        summary: generation_pb2.GenerationSummary,
    ) -> None:
        log.info(
            "request served",
            request_id=request_id,
            api=api,
            agent=agent.name,
            attempts=self.attempts,
            prompt_tokens=summary.usage.prompt_tokens,
            completion_tokens=summary.usage.completion_tokens,
            time_to_first_token_ms=round(summary.time_to_first_token.ToNanoseconds() / 1e6, 1),
            duration_ms=round((time.perf_counter() - self.started) * 1000, 1),
        )
