"""Embeds a batch of texts on the cluster: the batch is split into parts, and one worker per
serving agent takes the parts in turn, each waiting for a slot like a generation, so the parts
run at once on whichever agents have one while a request holds at most that many places in
the buffer. The vectors come back in input order. A part an agent fails is retried on
another, as a generation before its first piece is."""

from __future__ import annotations

import asyncio
import collections
import time

import structlog
from grpc import aio

from paddler.balancer.failover import Failover, agent_failure, remaining
from paddler.balancer.metrics import BalancerMetrics, RequestMeter
from paddler.balancer.model_routes import DEFAULT_ROUTE, Route
from paddler.balancer.slot_dispatcher import SlotDispatcher
from paddler.balancer.stream_claim import BYTES_PER_TOKEN, Demand
from paddler.common.errors import PaddlerError, UnavailableError
from paddler.common.request_context import served_status
from paddler.v1 import agent_pb2, embedding_pb2

log = structlog.get_logger(__name__)

# Texts per part: a batch larger than this is spread over the agents with free slots.
PART_TEXTS = 16
# Seconds an agent's call may stay silent before it is cut (--agent-idle-timeout).
DEFAULT_AGENT_IDLE_TIMEOUT_S = 300.0


class EmbeddingRelay:
    """Split, route, retry and reassemble."""

    def __init__(
        self,
        dispatcher: SlotDispatcher,
        max_attempts: int,
        metrics: BalancerMetrics,
        agent_idle_timeout_s: float = DEFAULT_AGENT_IDLE_TIMEOUT_S,
    ) -> None:
        self._dispatcher = dispatcher
        self._max_attempts = max_attempts
        self._metrics = metrics
        self._agent_idle_timeout_s = agent_idle_timeout_s

    async def embed(
        self,
        request_id: str,
        embedding: embedding_pb2.EmbeddingInput,
        deadline: float | None,
        api: str,
        route: Route = DEFAULT_ROUTE,
    ) -> embedding_pb2.EmbeddingResult:
        """The vectors of ``embedding``'s texts (checked already), in order; logs one line and
        counts the request. ``route`` says which pool (and model) must serve it."""
        meter = RequestMeter(self._metrics, api, "embed", route.pool)
        try:
            result = await self._embed(request_id, embedding, deadline, api, meter, route=route)
        except PaddlerError as error:
            meter.ended("failed", error.code.name)
            raise
        except asyncio.CancelledError:
            meter.ended("cancelled", "CANCELLED")
            raise
        except Exception:
            meter.ended("failed", "UNKNOWN")
            raise
        meter.ended("served", "OK", result.prompt_tokens)
        return result

    async def _embed(
        self,
        request_id: str,
        embedding: embedding_pb2.EmbeddingInput,
        deadline: float | None,
        api: str,
        meter: RequestMeter,
        *,
        route: Route,
    ) -> embedding_pb2.EmbeddingResult:
        started = time.perf_counter()
        arrived_at = time.monotonic()
        texts = list(embedding.texts)
        parts = []
        for first in range(0, len(texts), PART_TEXTS):
            part = embedding_pb2.EmbeddingInput(
                texts=texts[first : first + PART_TEXTS],
                pooling=embedding.pooling,
                normalization=embedding.normalization,
            )
            parts.append(
                agent_pb2.EmbedRequest(request_id=request_id, input=part, first_index=first)
            )
        if len(parts) > 1 and not route.model:  # every part on one model, even in a rollout
            route = Route(route.pool, self._dispatcher.most_served_model(route.pool))
        results: list[embedding_pb2.EmbeddingResult | None] = [None] * len(parts)
        queue = collections.deque(enumerate(parts))

        async def worker() -> None:
            while queue:
                index, part = queue.popleft()
                results[index] = await self._part(part, deadline, arrived_at, meter, route)

        workers = max(1, min(len(parts), self._dispatcher.serving(route.pool)))
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(worker())
        except ExceptionGroup as errors:  # the first failure cancels the other parts
            raise errors.exceptions[0] from None
        models = sorted({result.model for result in results if result is not None})
        if len(models) > 1:
            raise UnavailableError(
                f"the batch was split across agents serving different models ({', '.join(models)})"
                f"; set a desired state so that every agent serves one model, or send at most "
                f"{PART_TEXTS} texts per request",
                reason="MIXED_MODELS",
            )
        merged = embedding_pb2.EmbeddingResult()
        for result in results:
            assert result is not None
            merged.embeddings.extend(result.embeddings)
            merged.prompt_tokens += result.prompt_tokens
            merged.model = merged.model or result.model
            merged.agent_names.extend(result.agent_names)
        log.info(
            "embeddings served",
            request_id=request_id,
            api=api,
            status=served_status(api),
            pool=route.pool,
            texts=len(texts),
            parts=len(parts),
            agents=sorted(set(merged.agent_names)),
            prompt_tokens=merged.prompt_tokens,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return merged

    async def _part(
        self,
        request: agent_pb2.EmbedRequest,
        deadline: float | None,
        arrived_at: float,
        meter: RequestMeter,
        route: Route,
    ) -> embedding_pb2.EmbeddingResult:
        size = sum(len(text.encode()) for text in request.input.texts) // BYTES_PER_TOKEN
        demand = Demand(prompt_tokens=max(size, 1), max_tokens=1)
        failover = Failover(
            self._dispatcher, self._max_attempts, request.request_id, self._metrics, route
        )
        attempts = 0
        while True:
            waiting = time.perf_counter()
            try:  # a wait that ends in a timeout or a full buffer counts too
                claim = await self._dispatcher.acquire(
                    remaining(deadline),
                    frozenset(failover.excluded),
                    retry=attempts > 0,
                    arrived_at=arrived_at,
                    demand=demand,
                    route=route,
                )
            finally:
                meter.waited(waiting)
            agent = claim.agent
            attempts += 1
            try:
                left = remaining(deadline)  # a silent agent never holds a part forever
                idle = self._agent_idle_timeout_s
                timeout = idle if left is None else min(left, idle)
                response = await agent.embed(request, timeout=timeout)
            except (aio.AioRpcError, aio.UsageError, asyncio.CancelledError) as error:
                failover.after(agent, agent_failure(agent, error))
            else:
                return response.result
            finally:
                self._dispatcher.release(claim)
