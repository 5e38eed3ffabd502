"""Relays one generation from an agent's slot to a client, whatever API it came in by: waits
for a slot, streams the agent's serialized messages, fails over to another agent when one fails
before its first piece, and resumes the stream on another agent when one fails after it."""

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
from paddler.balancer.model_routes import DEFAULT_ROUTE, Route
from paddler.balancer.slot_dispatcher import SlotDispatcher
from paddler.balancer.stream_claim import Demand
from paddler.common.cancellation import being_cancelled
from paddler.common.errors import DeadlineExceededError, PaddlerError, UnavailableError
from paddler.common.request_context import cancelled_status, served_status
from paddler.common.tool_calls import offered
from paddler.v1 import agent_pb2, generation_pb2

log = structlog.get_logger(__name__)


DEFAULT_CLIENT_IDLE_TIMEOUT_S = 30.0


class ClientIdleError(DeadlineExceededError):
    """The client stopped reading its stream: it was cut and its slot freed."""

    reason = "CLIENT_IDLE"


class GenerationRelay:
    """Generate with failover: an agent that fails before its first piece is replaced; one
    that fails after it is replaced too, with ``migrate``: the next agent continues after the
    tokens generated so far, so the client sees one stream."""

    def __init__(
        self,
        dispatcher: SlotDispatcher,
        max_attempts: int,
        metrics: BalancerMetrics,
        *,
        migrate: bool = True,
        client_idle_timeout_s: float = DEFAULT_CLIENT_IDLE_TIMEOUT_S,
    ) -> None:
        self._dispatcher = dispatcher
        self._max_attempts = max_attempts
        self._metrics = metrics
        self._migrate = migrate
        self._client_idle_timeout_s = client_idle_timeout_s

    def most_served_model(self, pool: str) -> str:
        """The model most of ``pool``'s serving agents have ("" while none serves)."""
        return self._dispatcher.most_served_model(pool)

    async def stream(
        self,
        forwarded: agent_pb2.GenerateRequest,
        deadline: float | None,
        api: str,
        route: Route = DEFAULT_ROUTE,
    ) -> AsyncIterator[bytes]:
        """The agent's serialized ``GenerateResponse`` messages, summary last; logs one line
        and counts the request (``api`` names the surface the request came in by; ``route``
        the pool, and model, that must serve it)."""
        progress = _Progress()
        meter = RequestMeter(self._metrics, api, "generate", route.pool)
        outcome, code = "failed", "UNKNOWN"
        try:
            async for chunk in self._attempts(forwarded, deadline, progress, meter, route):
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
        route: Route,
    ) -> AsyncIterator[bytes]:
        failover = Failover(
            self._dispatcher, self._max_attempts, forwarded.request_id, self._metrics, route
        )
        demand = Demand.of(forwarded.input)
        request = forwarded
        while True:
            waiting = time.perf_counter()
            try:  # a wait that ends in a timeout or a full buffer counts too
                claim = await self._dispatcher.acquire(
                    remaining(deadline),
                    frozenset(failover.excluded),
                    retry=progress.attempts > 0,
                    arrived_at=progress.arrived_at,
                    demand=demand,
                    route=route,
                )
            finally:
                meter.waited(waiting)
            agent = claim.agent
            claim.request_id = request.request_id
            progress.agent = agent
            progress.attempts += 1
            call = None
            try:
                call = claim.call = agent.generate(request, timeout=remaining(deadline))
                async for chunk in call:
                    progress.relayed(chunk)
                    claim.relayed += 1
                    # While the client takes the message (the send blocks when it reads
                    # nothing), the dispatcher's sweep may cut the stream (see StreamClaim).
                    claim.last_message_at = claim.sending_since = time.monotonic()
                    yield progress.last
                    claim.sending_since = None
                    if claim.cut:
                        raise ClientIdleError(
                            f"the client read nothing for {self._client_idle_timeout_s:g} s "
                            "(--client-idle-timeout): the stream was cut and its slot freed"
                        )
            except (aio.AioRpcError, aio.UsageError, asyncio.CancelledError) as error:
                failure = agent_failure(agent, error)
                if not progress.chunks:
                    failover.after(agent, failure)
                    continue
                mid_stream = UnavailableError(
                    f"agent {agent.name} failed mid-stream: {failure.code.name} {failure.message}",
                    reason="AGENT_FAILED_MID_STREAM",
                )
                resumed = progress.resumption(forwarded) if self._resumable(forwarded) else None
                if resumed is None:
                    raise mid_stream from None
                try:  # another agent left to resume on?
                    failover.after(agent, failure)
                except PaddlerError:
                    raise mid_stream from None
                request = resumed
                progress.moved(agent, resumed)
                self._metrics.retries.labels("migrated").inc()
            else:
                claim.completed = True
                return
            finally:
                if call is not None:
                    call.cancel()
                self._dispatcher.release(claim)

    def _resumable(self, forwarded: agent_pb2.GenerateRequest) -> bool:
        """Whether another agent may continue the stream: migration is on, and the reply
        cannot hold a tool call (its reader keeps state a resumption cannot carry)."""
        generation = forwarded.input
        if not self._migrate:
            return False
        return generation.WhichOneof("source") != "conversation" or not offered(
            generation.conversation
        )


@dataclass
class _Progress:
    """How far one request got: for its log line."""

    started: float = field(default_factory=time.perf_counter)
    # When the --buffered-request-timeout clock started (time.monotonic).
    arrived_at: float = field(default_factory=time.monotonic)
    agent: RegisteredAgent | None = None
    attempts: int = 0
    last: bytes = b""
    # Every message relayed (all attempts): where a migrated stream resumes from.
    chunks: list[bytes] = field(default_factory=list)
    # The agents that failed the request mid-stream, in order.
    migrated_from: list[str] = field(default_factory=list)

    def relayed(self, chunk: bytes) -> None:
        """A message from the agent goes to the client (as ``last``): a summary names the
        agents the request left, if it moved."""
        if self.migrated_from:
            response = agent_pb2.GenerateResponse.FromString(chunk)
            if response.HasField("summary"):
                response.summary.migrated_from.extend(self.migrated_from)
                chunk = response.SerializeToString()
        self.chunks.append(chunk)
        self.last = chunk

    def resumption(self, forwarded: agent_pb2.GenerateRequest) -> agent_pb2.GenerateRequest | None:
        """``forwarded``, to resume after what was relayed so far; None when the agent listed
        no tokens with its text (an agent of an older version) or sent reasoning (the split of
        tags already sent cannot be carried over)."""
        resumed = agent_pb2.GenerateRequest()
        resumed.CopyFrom(forwarded)
        texts = []
        for chunk in self.chunks:
            response = agent_pb2.GenerateResponse.FromString(chunk)
            if response.HasField("reasoning"):
                return None
            if response.HasField("text"):
                texts.append(response.text)
                resumed.resumption.tokens.extend(response.tokens)
        if texts and not resumed.resumption.tokens:
            return None
        resumed.resumption.delivered_text = "".join(texts)
        return resumed

    def moved(self, failed: RegisteredAgent, resumed: agent_pb2.GenerateRequest) -> None:
        """The request leaves ``failed`` for another agent; the buffer's clock starts again
        (the request waited once already)."""
        self.migrated_from.append(failed.name)
        self.arrived_at = time.monotonic()
        log.warning(
            "request migrated",
            request_id=resumed.request_id,
            agent=failed.name,
            tokens=len(resumed.resumption.tokens),
        )

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
                status=cancelled_status(api),
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
            status=served_status(api),
            model=summary.model,
            pool=agent.pool,
            agent=agent.name,
            attempts=self.attempts,
            migrated_from=list(summary.migrated_from) or None,
            prompt_tokens=summary.usage.prompt_tokens,
            completion_tokens=summary.usage.completion_tokens,
            cached_tokens=summary.usage.cached_tokens,
            time_to_first_token_ms=round(summary.time_to_first_token.ToNanoseconds() / 1e6, 1),
            duration_ms=round((time.perf_counter() - self.started) * 1000, 1),
        )
