"""``paddler.v1.InferenceService``: wait for a slot, then relay the agent's stream; embeddings
split across the agents."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc import aio

from paddler.balancer.embedding_relay import EmbeddingRelay
from paddler.balancer.generation_relay import GenerationRelay
from paddler.balancer.metrics import BalancerMetrics
from paddler.balancer.model_routes import ModelRoutes
from paddler.common.embedding_input import check_embedding_input
from paddler.common.generation_input import check_generation_input
from paddler.common.off_loop import checked_off_loop
from paddler.common.request_context import bind_request
from paddler.v1 import agent_pb2, inference_pb2

SERVICE = "paddler.v1.InferenceService"


class InferenceServicer:
    """Generate: the relay's stream, sent to the client as the agent serialized it."""

    def __init__(
        self,
        relay: GenerationRelay,
        embeddings: EmbeddingRelay,
        routes: ModelRoutes,
        metrics: BalancerMetrics,
    ) -> None:
        self._relay = relay
        self._embeddings = embeddings
        self._routes = routes
        self._metrics = metrics

    def handler(self) -> grpc.GenericRpcHandler:
        """The method table; responses are the agent's serialized messages, sent as they are."""
        generate = grpc.unary_stream_rpc_method_handler(
            self.generate,
            request_deserializer=inference_pb2.InferenceServiceGenerateRequest.FromString,
            response_serializer=bytes,
        )
        embed = grpc.unary_unary_rpc_method_handler(
            self.embed,
            request_deserializer=inference_pb2.InferenceServiceEmbedRequest.FromString,
            response_serializer=inference_pb2.InferenceServiceEmbedResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(SERVICE, {"Generate": generate, "Embed": embed})

    async def generate(
        self,
        request: inference_pb2.InferenceServiceGenerateRequest,
        context: aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[bytes]:
        """Stream the chosen agent's pieces and summary to the client; log one line."""
        request_id = request.request_id or uuid.uuid4().hex
        bind_request(request_id=request_id)
        with self._metrics.refusals("grpc", "generate"):
            route = self._routes.resolve(request.model)
            generation = request.input
            if generation.grammar.WhichOneof("kind") or generation.conversation.tools:
                await checked_off_loop(lambda: check_generation_input(generation), "input.grammar")
            else:
                check_generation_input(generation)
        forwarded = agent_pb2.GenerateRequest(request_id=request_id, input=request.input)
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        async for chunk in self._relay.stream(forwarded, deadline, "grpc", route):
            yield chunk

    async def embed(
        self,
        request: inference_pb2.InferenceServiceEmbedRequest,
        context: aio.ServicerContext[Any, Any],
    ) -> inference_pb2.InferenceServiceEmbedResponse:
        """The vectors of the request's texts, in order, from whichever agents were free."""
        request_id = request.request_id or uuid.uuid4().hex
        bind_request(request_id=request_id)
        with self._metrics.refusals("grpc", "embed"):
            route = self._routes.resolve(request.model)
            check_embedding_input(request.input)
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        result = await self._embeddings.embed(request_id, request.input, deadline, "grpc", route)
        return inference_pb2.InferenceServiceEmbedResponse(result=result)
