"""``paddler.v1.InferenceService``: wait for a slot, then relay the agent's stream."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc import aio

from paddler.balancer.generation_relay import GenerationRelay
from paddler.common.generation_input import check_generation_input
from paddler.v1 import agent_pb2, inference_pb2

SERVICE = "paddler.v1.InferenceService"


class InferenceServicer:
    """Generate: the relay's stream, sent to the client as the agent serialized it."""

    def __init__(self, relay: GenerationRelay) -> None:
        self._relay = relay

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
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        async for chunk in self._relay.stream(forwarded, deadline, "grpc"):
            yield chunk
