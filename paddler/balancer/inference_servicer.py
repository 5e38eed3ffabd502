"""``paddler.v1.InferenceService``: wait for a slot, then relay the agent's stream."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import structlog
from grpc import aio

from paddler.balancer.agent_registry import RegisteredAgent
from paddler.balancer.slot_dispatcher import SlotDispatcher
from paddler.common.errors import RelayedError, UnavailableError
from paddler.common.generation_input import check_generation_input
from paddler.v1 import agent_pb2, inference_pb2

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
_RELAYED_TRAILERS = ("grpc-status-details-bin",)


def _relayed(error: aio.AioRpcError) -> RelayedError:
    trailers = tuple(
        (key, value)
        for key, value in error.trailing_metadata() or ()
        if key in _RELAYED_TRAILERS and isinstance(value, bytes)
    )
    return RelayedError(error.code(), error.details() or "", trailers)


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
        """Stream the chosen agent's pieces and summary to the client."""
        check_generation_input(request.input)
        forwarded = agent_pb2.GenerateRequest(
            request_id=request.request_id or uuid.uuid4().hex, input=request.input
        )
        started = time.perf_counter()
        excluded: set[str] = set()
        for attempt in range(1, self._max_attempts + 1):
            agent = await self._dispatcher.acquire(
                context.time_remaining(), frozenset(excluded), retry=attempt > 1
            )
            call = agent.generate(forwarded, timeout=context.time_remaining())
            relayed = 0
            last = b""
            try:
                async for chunk in call:
                    relayed += 1
                    last = chunk
                    yield chunk
            except aio.AioRpcError as error:
                if relayed:
                    raise UnavailableError(
                        f"agent {agent.name} ({agent.address}) failed mid-stream: "
                        f"{error.code().name} {error.details()}",
                        reason="AGENT_FAILED_MID_STREAM",
                    ) from error
                if error.code() not in RETRYABLE or attempt == self._max_attempts:
                    raise _relayed(error) from error
                log.info(
                    "retrying on another agent",
                    request_id=forwarded.request_id,
                    agent=agent.name,
                    code=error.code().name,
                )
                excluded.add(agent.agent_id)
                continue
            finally:
                call.cancel()
                self._dispatcher.release(agent)
            _log_served(forwarded.request_id, agent, attempt, started, last)
            return


def _log_served(
    request_id: str, agent: RegisteredAgent, attempts: int, started: float, last: bytes
) -> None:
    summary = inference_pb2.InferenceServiceGenerateResponse.FromString(last).summary
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
