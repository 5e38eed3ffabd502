"""``paddler.v1.InferenceService``: wait for a slot, then relay the agent's stream."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from grpc import aio

from paddler.balancer.agent_registry import RegisteredAgent
from paddler.balancer.slot_dispatcher import SlotDispatcher
from paddler.balancer.stream_claim import Demand
from paddler.common.cancellation import being_cancelled
from paddler.common.errors import AgentCallError, PaddlerError, RelayedError, UnavailableError
from paddler.common.generation_input import check_generation_input
from paddler.common.rpc_status import NOT_READY, STATUS_DETAILS_KEY, error_reason
from paddler.v1 import agent_pb2, generation_pb2, inference_pb2

log = structlog.get_logger(__name__)

SERVICE = "paddler.v1.InferenceService"
# Failures that say nothing about the request itself: another agent may well serve it.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)
_RELAYED_TRAILERS = (STATUS_DETAILS_KEY,)


def _agent_failure(
    agent: RegisteredAgent, error: aio.AioRpcError | aio.UsageError | asyncio.CancelledError
) -> PaddlerError:
    """The agent's error as the client should see it.

    An error with the agent's own rich status is relayed unchanged. Anything else is gRPC's
    own failure of the call (no connection, a reset, a closed channel) and gets a status of
    ours, with ErrorInfo and RetryInfo like every other. A call cancelled while this task is not
    being cancelled, or refused by a closed channel, means the registry gave the agent up (it
    went silent); a cancelled task means the client went away.
    """
    where = f"agent {agent.name} ({agent.address})"
    if isinstance(error, asyncio.CancelledError) and being_cancelled():
        raise error
    if isinstance(error, aio.UsageError | asyncio.CancelledError):
        return UnavailableError(f"{where} left the cluster", reason="AGENT_LEFT")
    trailers = tuple(
        (key, value)
        for key, value in error.trailing_metadata() or ()
        if key in _RELAYED_TRAILERS and isinstance(value, bytes)
    )
    reason = error_reason(trailers)
    if reason:
        return RelayedError(error.code(), error.details() or "", trailers, reason)
    return AgentCallError(error.code(), f"the call to {where} failed: {error.details()}")


class InferenceServicer:
    """Generate with failover: an agent that fails before its first piece is replaced."""

    def __init__(self, dispatcher: SlotDispatcher, max_attempts: int) -> None:
        self._dispatcher = dispatcher
        self._max_attempts = max_attempts

    def handler(self) -> grpc.GenericRpcHandler:
        """The method table; responses are the agent's serialized messages, sent as they are."""
        generate = grpc.unary_stream_rpc_method_handler(
            self.generate,
            request_deserializer=inference_pb2.InferenceServiceGenerateRequest.FromString,
            response_serializer=bytes,
        )
        return grpc.method_handlers_generic_handler(SERVICE, {"Generate": generate})

    async def generate(
        self,
        request: inference_pb2.InferenceServiceGenerateRequest,
        context: aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[bytes]:
        """Stream the chosen agent's pieces and summary to the client; log one line."""
        check_generation_input(request.input)
        forwarded = agent_pb2.GenerateRequest(
            request_id=request.request_id or uuid.uuid4().hex, input=request.input
        )
        progress = _Progress()
        try:
            async for chunk in self._relay(forwarded, context, progress):
                yield chunk
        finally:
            progress.log(forwarded.request_id)

    async def _relay(
        self,
        forwarded: agent_pb2.GenerateRequest,
        context: aio.ServicerContext[Any, Any],
        progress: _Progress,
    ) -> AsyncIterator[bytes]:
        excluded: set[str] = set()
        failures = 0
        demand = Demand.of(forwarded.input)
        while True:
            claim = await self._dispatcher.acquire(
                context.time_remaining(),
                frozenset(excluded),
                retry=progress.attempts > 0,
                arrived_at=progress.arrived_at,
                demand=demand,
            )
            agent = claim.agent
            progress.agent = agent
            progress.attempts += 1
            call = None
            try:
                call = agent.generate(forwarded, timeout=context.time_remaining())
                async for chunk in call:
                    progress.last = chunk
                    claim.relayed += 1
                    yield chunk
            except (aio.AioRpcError, aio.UsageError, asyncio.CancelledError) as error:
                failure = _agent_failure(agent, error)
                if progress.last:
                    raise UnavailableError(
                        f"agent {agent.name} ({agent.address}) failed mid-stream: "
                        f"{failure.code.name} {failure.message}",
                        reason="AGENT_FAILED_MID_STREAM",
                    ) from None
                if failure.reason == NOT_READY:  # swapping its model: wait for its next status
                    agent.status.ready = False
                    continue
                if failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    agent.external_busy += 1  # others took the slot; its next status says more
                    continue
                failures += 1
                excluded.add(agent.agent_id)
                if (
                    failure.code not in RETRYABLE
                    or failures == self._max_attempts
                    or not self._dispatcher.could_serve(frozenset(excluded))
                ):
                    raise failure from None
                log.info(
                    "retrying on another agent",
                    request_id=forwarded.request_id,
                    agent=agent.name,
                    code=failure.code.name,
                )
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

    def log(self, request_id: str) -> None:
        """One line: served (the summary went out) or cancelled; errors are logged where mapped."""
        summary = inference_pb2.InferenceServiceGenerateResponse.FromString(self.last)
        if summary.HasField("summary") and self.agent is not None:
            _log_served(request_id, self.agent, self.attempts, self.started, summary.summary)
            return
        if being_cancelled():
            log.info(
                "request cancelled",
                request_id=request_id,
                stage="streaming" if self.last else "waiting for a slot",
                agent=self.agent.name if self.agent else None,
            )


def _log_served(
    request_id: str,
    agent: RegisteredAgent,
    attempts: int,
    started: float,
    summary: generation_pb2.GenerationSummary,
) -> None:
    log.info(
        "request served",
        request_id=request_id,
        agent=agent.name,
        attempts=attempts,
        prompt_tokens=summary.usage.prompt_tokens,
        completion_tokens=summary.usage.completion_tokens,
        time_to_first_token_ms=round(summary.time_to_first_token.ToNanoseconds() / 1e6, 1),
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )
