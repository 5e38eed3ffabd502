"""The engine: one thread owns the llama context and runs the continuous-batching step loop."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import replace

import llama_cpp as llama
import setproctitle
import structlog

from paddler.agent.embedder import Embedder
from paddler.agent.generation_job import Failed, Finished, GenerationJob
from paddler.agent.image_feed import decode_images, whole_images
from paddler.agent.llama_context import EngineConfig, new_context
from paddler.agent.llama_model import LlamaModel
from paddler.agent.metrics import AgentMetrics
from paddler.agent.outbox import Outbox
from paddler.agent.placement_report import AppliedPlacement
from paddler.agent.prefix_reuse import Source, take_longest_prefix
from paddler.agent.projector import Projector
from paddler.agent.prompt_store import PromptStore
from paddler.agent.sampling import SamplerChain
from paddler.agent.slot import Slot, choose_slot, fill_batch, step_shape
from paddler.agent.step_timings import StepTimings
from paddler.common.errors import InternalError, PaddlerError, UnavailableError
from paddler.common.prefix_chain import MAX_PREFIX_HASHES
from paddler.v1 import generation_pb2

log = structlog.get_logger(__name__)
FinishReason = generation_pb2.FinishReason


class Engine:
    """Owns the context, the batch and the slots; the asyncio side only submits and cancels."""

    def __init__(
        self,
        model: LlamaModel,
        config: EngineConfig,
        metrics: AgentMetrics | None = None,
        projector: Projector | None = None,
    ) -> None:
        # Every generating slot gets its token each step, however small n_batch was set.
        config = replace(config, batch_size=max(config.batch_size, config.slots))
        self.model = model
        self.config = config
        # Reads the prompts' images, when the model has a projector; closed with the engine.
        self.projector = projector
        self._context = new_context(model, config)
        self._memory = llama.llama_get_memory(self._context)
        # llama.cpp pads the context; the flag's size is the contract.
        self.context_per_slot = min(config.context_size, llama.llama_n_ctx_seq(self._context))
        self._batch = llama.llama_batch_init(config.batch_size, 0, 1)
        self._slots = [Slot(seq_id) for seq_id in range(config.slots)]
        self.prompt_store = (
            PromptStore(config.prompt_store_bytes)
            if config.prompt_cache and config.prompt_store_bytes
            else None
        )
        self.step_timings = StepTimings()
        # What llama.cpp did with the placement (set by whoever built the engine).
        self.placement: AppliedPlacement | None = None
        self._metrics = metrics
        self._pending: collections.deque[GenerationJob] = collections.deque()
        self._wakeup = threading.Condition()
        self._stopping = False
        # Set by ``abort``: every request in the engine fails with it at the next step.
        self._abort: PaddlerError | None = None
        # When the step loop last moved on (a step ended, or it woke for work).
        self._heartbeat = time.monotonic()
        self._outbox = Outbox()
        self._thread = threading.Thread(target=self._run, name="paddler-engine", daemon=True)
        self.embedder = Embedder(model, config.threads, config.context_size)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the step loop; events are delivered on ``loop``."""
        self._outbox.bind(loop)
        self._thread.start()

    def kv_cache(self) -> tuple[int, int]:
        """Tokens the slots hold in the KV cache, and its capacity (read from any thread)."""
        used = sum(len(slot.cached) for slot in self._slots)
        return used, self.config.slots * self.context_per_slot

    def held_prefixes(self) -> list[int]:
        """The prefix-chain links the slots and the prompt store hold, at most
        ``MAX_PREFIX_HASHES`` (read from any thread)."""
        links = [link for slot in self._slots for link in slot.prefixes]
        if self.prompt_store is not None:
            links.extend(self.prompt_store.recent_links)
        return list(dict.fromkeys(links))[:MAX_PREFIX_HASHES]

    def submit(self, job: GenerationJob) -> None:
        """Queue a job; it joins the running batch at the next step with a free slot."""
        with self._wakeup:
            if not self._pending and not self._busy():
                self._heartbeat = time.monotonic()  # idle until now, not stalled
            self._pending.append(job)
            self._wakeup.notify()

    def stalled_for(self) -> float:
        """Seconds the engine has had work without finishing a step (0 while idle): a hung
        ``llama_decode`` (a GPU hang) shows here, read from any thread."""
        if not self._pending and not self._busy():
            return 0.0
        return time.monotonic() - self._heartbeat

    def cancel(self, job: GenerationJob) -> None:
        """Mark a job cancelled; its slot is freed at the next step."""
        job.cancelled = True
        with self._wakeup:
            self._wakeup.notify()

    def abort(self, error: PaddlerError) -> None:
        """Fail every request running or queued now with ``error`` (from any thread)."""
        with self._wakeup:
            self._abort = error
            self._wakeup.notify()

    def stop(self) -> None:
        """Stop the loop and free llama.cpp's memory (once; later calls do nothing)."""
        with self._wakeup:
            if self._stopping:
                return
            self._stopping = True
            self._wakeup.notify()
        if self._thread.is_alive():
            self._thread.join()
        self.embedder.close()
        for slot in self._slots:
            slot.release()
        llama.llama_batch_free(self._batch)
        llama.llama_free(self._context)
        if self.projector is not None:
            self.projector.close()
        self.model.close()

    def _run(self) -> None:
        """Step until stopped; every job submitted ends with a summary or an error."""
        # The OS sees the name too (top -H, /proc), so the engine's CPU shows apart.
        setproctitle.setthreadtitle(self._thread.name)
        while True:
            with self._wakeup:
                while not (
                    self._stopping or self._abort is not None or self._pending or self._busy()
                ):
                    self._wakeup.wait()
                if self._stopping:
                    break
                aborted, self._abort = self._abort, None
                self._heartbeat = time.monotonic()
            if aborted is not None:
                self._fail_all(aborted)
                self._fail_pending(aborted)
                self._outbox.flush()
                continue
            try:
                self._step()
            except Exception as error:  # a bug must fail the requests, not hang them
                log.exception("engine step failed")
                self._fail_all(InternalError(f"engine step failed: {error}"))
            finally:
                self._heartbeat = time.monotonic()
                self._outbox.flush()
        self._fail_all(UnavailableError("the agent stopped before the request finished"))
        self._fail_pending(UnavailableError("the agent stopped before the request started"))
        self._outbox.flush()

    def _fail_pending(self, error: PaddlerError) -> None:
        with self._wakeup:
            pending, self._pending = list(self._pending), collections.deque()
        for job in pending:
            self._outbox.put(job, Failed(error))

    def _busy(self) -> bool:
        return any(slot.job is not None for slot in self._slots)

    def _step(self) -> None:
        self._drop_cancelled()
        self._admit()
        for slot, error in decode_images(
            self.projector, self._context, self._slots, self.config.batch_size
        ):
            failure = error if isinstance(error, PaddlerError) else InternalError(f"{error}")
            self._fail(slot, failure)
        fed = fill_batch(self._batch, self._slots, self.config.batch_size)
        if not fed:
            return
        began = time.perf_counter()
        status = llama.llama_decode(self._context, self._batch)
        streams, prompt, backlog = step_shape(fed, self._slots)
        seconds = time.perf_counter() - began
        self.step_timings.record(streams, prompt, seconds, backlog)
        if self._metrics is not None:
            self._metrics.step(streams, prompt, seconds)
        if status != 0:
            error = InternalError(f"llama_decode failed with status {status}")
            for slot, _ in fed:
                self._fail(slot, error)
            return
        for slot, tokens in fed:
            slot.cached.extend(tokens)
            if slot.batch_index >= 0:
                self._sample_alone(slot)

    def _sample_alone(self, slot: Slot) -> None:
        """Sample the slot's next token; a failure there (its sampler, its grammar) ends that
        request alone, never its neighbours in the batch."""
        try:
            self._sample(slot)
        except Exception as error:  # any bug in one request's sampling
            request_id = slot.job.request_id if slot.job is not None else None
            log.exception("sampling failed", request_id=request_id)
            self._fail(slot, InternalError(f"sampling failed: {error}"))

    def _drop_cancelled(self) -> None:
        for slot in self._slots:
            if slot.job is not None and slot.job.cancelled:
                self._release(slot)

    def _release(self, slot: Slot) -> None:
        """Free a slot, keeping its cache only with ``prompt_cache``."""
        if not self.config.prompt_cache:
            llama.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
            slot.cached = []
            slot.prefixes = ()
        slot.release()

    def _admit(self) -> None:
        with self._wakeup:
            while self._pending:
                job = self._pending[0]
                if job.cancelled:
                    self._pending.popleft()
                    continue
                free = [slot for slot in self._slots if slot.job is None]
                if not free:
                    return
                self._pending.popleft()
                try:
                    self._start(job, free)
                except Exception as error:  # the job is ours now: it must end, not vanish
                    log.exception("request could not start", request_id=job.request_id)
                    failure = InternalError(f"the request could not start: {error}")
                    self._outbox.put(job, Failed(failure))

    def _start(self, job: GenerationJob, free: list[Slot]) -> None:
        """Put ``job`` in a free slot, reusing as much of that slot's cached prefix as it can."""
        prompt = job.prompt_tokens
        busy = [other.seq_id for other in self._slots if other.job is not None]
        slot = choose_slot(free, busy, prompt)
        shared, source = take_longest_prefix(
            self.prompt_store, self._context, slot, self._slots, prompt
        )
        reused = whole_images(job, min(shared, len(prompt) - 1))  # >= 1 to decode
        if not llama.llama_memory_seq_rm(self._memory, slot.seq_id, reused, -1):
            # Recurrent models cannot drop a tail: start the sequence over.
            llama.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
            reused = 0
        if self._metrics is not None and source is Source.STORE:
            self._metrics.prompt_cache_restored_tokens.inc(reused)
        elif self._metrics is not None and source is Source.COPY:
            self._metrics.prefix_copied_tokens.inc(reused)
        slot.start(job, reused, SamplerChain(job.sampling, self.model.n_vocab))
        if job.replay:  # a resumed generation: the text its tokens have that was never sent
            assert slot.text is not None
            shown, stopped = slot.text.push(job.replay)
            if shown:
                self._outbox.put(job, shown)
            if stopped:
                self._finish(slot, FinishReason.FINISH_REASON_STOP_STRING, flush=False)

    def _sample(self, slot: Slot) -> None:
        job, sampler, text = slot.job, slot.sampler, slot.text
        assert job is not None and sampler is not None and text is not None
        grammar = job.grammar
        if grammar is not None:
            grammar.restrict(llama.llama_get_logits_ith(self._context, slot.batch_index))
        token = sampler.sample(self._context, slot.batch_index)
        slot.batch_index = -1
        slot.completion_tokens += 1
        job.generated.append(token)
        if slot.first_token_at is None:
            slot.first_token_at = time.perf_counter()
            slot.prefixes = job.prefixes  # the prompt is all in the slot's cache now
        piece = self.model.piece(token)
        if grammar is not None and not grammar.accept(token, piece):
            self._fail(slot, InternalError(f"the grammar refused a sampled token: {grammar.error}"))
            return
        if self.model.is_end_of_generation(token):
            self._finish(slot, FinishReason.FINISH_REASON_END_OF_GENERATION)
            return
        shown, stopped = text.push(piece)
        if shown:
            self._outbox.put(job, shown)
        if stopped:
            self._finish(slot, FinishReason.FINISH_REASON_STOP_STRING, flush=False)
        elif grammar is not None and grammar.complete:  # the JSON value is closed
            self._finish(slot, FinishReason.FINISH_REASON_END_OF_GENERATION)
        elif slot.completion_tokens >= job.max_tokens:
            self._finish(slot, FinishReason.FINISH_REASON_MAX_TOKENS)
        elif len(slot.cached) >= self.context_per_slot:
            self._finish(slot, FinishReason.FINISH_REASON_CONTEXT_FULL)
        else:
            slot.pending = [token]

    def _finish(self, slot: Slot, reason: FinishReason.ValueType, *, flush: bool = True) -> None:
        job, text = slot.job, slot.text
        assert job is not None and text is not None
        if flush and (tail := text.flush()):
            self._outbox.put(job, tail)
        first = slot.first_token_at if slot.first_token_at is not None else time.perf_counter()
        prompt = len(job.prompt_tokens) - job.resumed_tokens
        summary = Finished(
            finish_reason=reason,
            prompt_tokens=prompt,
            completion_tokens=job.resumed_tokens + slot.completion_tokens,
            cached_tokens=min(slot.cached_prompt_tokens, prompt),
            time_to_first_token_s=first - job.created_at,
        )
        self._outbox.put(job, summary)
        self._release(slot)

    def _fail(self, slot: Slot, error: PaddlerError) -> None:
        if slot.job is not None:
            self._outbox.put(slot.job, Failed(error))
        llama.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
        slot.cached = []
        slot.prefixes = ()
        slot.release()

    def _fail_all(self, error: PaddlerError) -> None:
        for slot in self._slots:
            if slot.job is not None:
                self._fail(slot, error)
