"""The ``paddler.v1.AgentService`` servicer: generations on this agent's slots, and its status."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import structlog
from grpc import aio

from paddler.agent.context_choice import ContextChoice
from paddler.agent.devices import Devices
from paddler.agent.engine import Engine
from paddler.agent.generation_job import Event, Failed, Finished, GenerationJob, take_ready
from paddler.agent.job_factory import JobFactory
from paddler.agent.reply_messages import ReplyMessages
from paddler.agent.slot_claims import SlotClaims
from paddler.agent.state_report import StateReport
from paddler.common.embedding_input import check_embedding_input
from paddler.common.errors import UnavailableError
from paddler.common.request_context import bind_request
from paddler.common.rpc_status import ENGINE_STALLED, NOT_READY
from paddler.common.status_bounds import MAX_TIMING_SECONDS
from paddler.v1 import agent_pb2, agent_pb2_grpc, embedding_pb2, generation_pb2, status_pb2

log = structlog.get_logger(__name__)


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    """Admits a request only when a slot is free, then streams the engine's events."""

    def __init__(self, name: str, slots: int, devices: Devices | None = None) -> None:
        self.name = name
        self._devices = devices
        self.status_changed = asyncio.Event()  # any change: the balancer link sends a snapshot
        self.readiness_changed = asyncio.Event()  # attach/detach or state: health follows
        self.claims = SlotClaims(slots, self.status_changed.set)
        self.report = StateReport()
        self._engine: Engine | None = None
        self._jobs: JobFactory | None = None
        self._context: ContextChoice | None = None
        # Generations streaming now, and whether the engine stalled (no step for
        # --engine-stall-after while it had work).
        self._running: set[GenerationJob] = set()
        self.stalled = False

    def attach(self, engine: Engine, jobs: JobFactory, context: ContextChoice) -> None:
        """Start accepting generations on a running engine (``context``: how its slots' size
        was decided)."""
        self._engine = engine
        self._jobs = jobs
        self._context = context
        self.notify()

    def detach(self) -> Engine | None:
        """Stop accepting generations (in-flight ones go on); return the engine that ran them."""
        engine, self._engine, self._jobs = self._engine, None, None
        self.notify()
        return engine

    def occupancy(self) -> tuple[int, int, int, int, int, int]:
        """Slots busy and total, the KV cache's tokens held and capacity, and the host-memory
        prompt cache's bytes and prompts (0 without a model)."""
        engine = self._engine
        used, capacity = engine.kv_cache() if engine is not None else (0, 0)
        store = engine.prompt_store if engine is not None else None
        stored = (store.bytes, len(store)) if store is not None else (0, 0)
        return self.claims.in_use, self.claims.total, used, capacity, *stored

    def notify(self) -> None:
        """The model or the state changed: send a snapshot now and re-check health."""
        self.status_changed.set()
        self.readiness_changed.set()

    def check_engine(self, stall_after_s: float) -> None:
        """Judge the engine's liveness: one with work but no step for ``stall_after_s`` is
        stalled (the agent is not ready, its streams fail with ENGINE_STALLED so the balancer
        resumes them elsewhere, and its liveness fails); it recovers if it steps again."""
        engine = self._engine
        stalled_for = engine.stalled_for() if engine is not None else 0.0
        if not self.stalled and engine is not None and stalled_for > stall_after_s:
            self.stalled = True
            error = UnavailableError(
                f"the agent's engine made no step for {stalled_for:.0f} s", reason=ENGINE_STALLED
            )
            for job in list(self._running):
                job.events.put_nowait(Failed(error))
                engine.cancel(job)
            log.error(
                "engine stalled", stalled_s=round(stalled_for, 1), requests=len(self._running)
            )
            self.notify()
        elif self.stalled and stalled_for <= stall_after_s:
            self.stalled = False
            log.warning("engine resumed")
            self.notify()

    def status(self) -> status_pb2.AgentStatus:
        """The slot-aggregated snapshot."""
        engine = self._engine
        status = status_pb2.AgentStatus(
            name=self.name,
            slots_total=self.claims.total,
            slots_processing=self.claims.in_use,
            model=engine.model.name if engine else "",
            ready=engine is not None and not self.stalled,
            chat_template=self._jobs.template_name if self._jobs else "",
        )
        self.report.fill(status)
        if engine is not None:
            engine.step_timings.fill(status)
            if self._context is not None:
                self._context.fill(status, engine.context_per_slot)
            if engine.prompt_store is not None:
                status.prompt_cache_bytes = engine.prompt_store.bytes
                status.prompt_cache_prompts = len(engine.prompt_store)
            status.prefix_hashes.extend(engine.held_prefixes())
            status.engine_stalled_seconds = min(engine.stalled_for(), MAX_TIMING_SECONDS)
            status.images = engine.projector is not None
            if engine.placement is not None:
                devices = self._devices.now() if self._devices is not None else ()
                engine.placement.fill(status.placement, devices)
        if self.stalled:
            status.issues.append("the engine stalled: no decode step (--engine-stall-after)")
        return status

    async def GetStatus(
        self, request: agent_pb2.GetStatusRequest, context: aio.ServicerContext[Any, Any]
    ) -> agent_pb2.GetStatusResponse:
        """Return the current snapshot."""
        return agent_pb2.GetStatusResponse(status=self.status())

    async def Generate(
        self, request: agent_pb2.GenerateRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[agent_pb2.GenerateResponse]:
        """Stream text pieces, then the summary."""
        bind_request(request_id=request.request_id or None)
        engine, jobs = self._engine, self._jobs
        state_version = self.report.applied_version  # the engine's: both change in one step
        if engine is None or jobs is None or self.stalled:
            raise UnavailableError("the agent has no model loaded right now", reason=NOT_READY)
        # Rendering, tokenizing and compiling a grammar can take long: never on the event loop.
        # The slot is claimed before the model is let go, so a swap waiting for the agent to go
        # idle never frees the model under a request still being prepared.
        with contextlib.ExitStack() as slot:
            with self.claims.preparing():
                job = await asyncio.to_thread(jobs.build, request)
                slot.enter_context(self.claims.claim())
            async for response in self._stream(engine, job, state_version):
                yield response

    async def _stream(
        self, engine: Engine, job: GenerationJob, state_version: int
    ) -> AsyncIterator[agent_pb2.GenerateResponse]:
        """Submit ``job`` and turn its events into responses; cancel it unless it finished."""
        messages = ReplyMessages(job)
        engine.submit(job)
        self._running.add(job)
        outcome = "cancelled"
        try:
            following: Event | None = None
            while True:  # the per-token path: one queue read, one message
                event = following if following is not None else await job.events.get()
                following = None
                if isinstance(event, str):
                    # Pieces that queued while the last message was sent go out as one.
                    event, following = take_ready(event, job.events)
                    for response in messages.of(event):
                        yield response
                    continue
                if isinstance(event, Failed):
                    raise event.error  # noqa: TRY301 - the engine failed this request
                summary = self._summary(event, engine.model.name, state_version)
                for response in messages.closing():
                    yield response
                    if response.HasField("tool_call"):
                        summary.finish_reason = generation_pb2.FINISH_REASON_TOOL_CALLS
                messages.usage(summary.usage)
                outcome = "ok"
                _log_summary(job, summary)
                yield agent_pb2.GenerateResponse(summary=summary)
                return
        except Exception:
            outcome = "error"
            raise
        finally:
            self._running.discard(job)
            if outcome != "ok":
                engine.cancel(job)
                log.info("request ended", request_id=job.request_id, outcome=outcome)

    async def Embed(
        self, request: agent_pb2.EmbedRequest, context: aio.ServicerContext[Any, Any]
    ) -> agent_pb2.EmbedResponse:
        """One vector per text, on the engine's embedding context; holds a slot meanwhile."""
        bind_request(request_id=request.request_id or None)
        engine = self._engine
        if engine is None:
            raise UnavailableError("the agent has no model loaded right now", reason=NOT_READY)
        check_embedding_input(request.input)
        started = time.perf_counter()
        with self.claims.claim():
            embedded = await engine.embedder.embed(request.input, request.first_index)
        result = embedding_pb2.EmbeddingResult(
            embeddings=[
                embedding_pb2.Embedding(values=text.values.tolist(), tokens=text.tokens)
                for text in embedded
            ],
            prompt_tokens=sum(text.tokens for text in embedded),
            model=engine.model.name,
            agent_names=[self.name],
        )
        log.info(
            "embeddings served",
            request_id=request.request_id,
            texts=len(embedded),
            prompt_tokens=result.prompt_tokens,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return agent_pb2.EmbedResponse(result=result)

    def _summary(
        self, event: Finished, model: str, state_version: int
    ) -> generation_pb2.GenerationSummary:
        summary = generation_pb2.GenerationSummary(
            finish_reason=event.finish_reason,
            usage=generation_pb2.Usage(
                prompt_tokens=event.prompt_tokens,
                completion_tokens=event.completion_tokens,
                cached_tokens=event.cached_tokens,
            ),
            model=model,
            agent_name=self.name,
            state_version=state_version,
        )
        summary.time_to_first_token.FromNanoseconds(int(event.time_to_first_token_s * 1e9))
        return summary


def _log_summary(job: GenerationJob, summary: generation_pb2.GenerationSummary) -> None:
    elapsed = time.perf_counter() - job.created_at
    ttft = summary.time_to_first_token.ToNanoseconds() / 1e9
    decode_time = elapsed - ttft
    completion = summary.usage.completion_tokens
    log.info(
        "request served",
        request_id=job.request_id,
        prompt_tokens=summary.usage.prompt_tokens,
        cached_tokens=summary.usage.cached_tokens,
        completion_tokens=completion,
        finish_reason=generation_pb2.FinishReason.Name(summary.finish_reason),
        time_to_first_token_ms=round(ttft * 1000, 1),
        tokens_per_s=round((completion - 1) / decode_time, 1) if completion > 1 else None,
        duration_ms=round(elapsed * 1000, 1),
    )
