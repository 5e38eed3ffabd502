"""The engine in this process on the real model: every job ends, whatever fails or stops.

Faults are injected by replacing one part the engine calls (the sampler chain) with one that
raises; the model, the context and the step loop are real.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator

import llama_cpp
import pytest

from paddler.agent import engine as engine_module
from paddler.agent import llama_model
from paddler.agent.context_choice import ContextChoice
from paddler.agent.default_model import default_model_path
from paddler.agent.engine import Engine
from paddler.agent.generation_job import Event, Failed, Finished, GenerationJob
from paddler.agent.job_factory import JobFactory
from paddler.agent.llama_context import EngineConfig
from paddler.agent.llama_model import LlamaModel
from paddler.agent.sampling import SamplerChain
from paddler.agent.servicer import AgentServicer
from paddler.common.errors import InternalError, UnavailableError
from paddler.common.generation_input import SamplingSettings
from paddler.common.rpc_status import ENGINE_STALLED
from paddler.v1 import agent_pb2, generation_pb2, status_pb2
from tests.client import COUNTING_PROMPT

GREEDY = SamplingSettings(temperature=0.0, repeat_penalty=1.0)
STALL_S = 0.2


@pytest.fixture
def model() -> Iterator[LlamaModel]:
    """The default model, loaded in this process (an engine closes it when it stops)."""
    yield LlamaModel(default_model_path())


def _job(model: LlamaModel, prompt: str, max_tokens: int) -> GenerationJob:
    return GenerationJob(
        request_id=prompt[:8],
        prompt_tokens=model.tokenize(prompt),
        max_tokens=max_tokens,
        sampling=GREEDY,
        stop=(),
    )


def _run_on(engine: Engine, scenario: Callable[[], Awaitable[None]]) -> None:
    """Start ``engine`` on a new event loop, run ``scenario`` there, then stop the engine."""

    async def started() -> None:
        engine.start(asyncio.get_running_loop())
        await scenario()

    try:
        asyncio.run(started())
    finally:
        engine.stop()


async def _until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` until it holds (at most two minutes)."""
    for _ in range(2400):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition never held")


async def _last_event(job: GenerationJob) -> Event:
    """Read the job's events until it ends; return the last one."""
    while True:
        event = await asyncio.wait_for(job.events.get(), 120)
        if not isinstance(event, str):
            return event


def test_a_job_that_cannot_start_ends_with_an_error_and_the_engine_goes_on(
    model: LlamaModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Engine(model, EngineConfig(slots=1, context_size=128, batch_size=64, threads=1))

    def broken_sampler(*_: object) -> None:
        raise RuntimeError("no sampler today")

    async def scenario() -> None:
        with monkeypatch.context() as patch:
            patch.setattr(engine_module, "SamplerChain", broken_sampler)
            failing = _job(model, "Hello there", 4)
            engine.submit(failing)
            event = await _last_event(failing)
        assert isinstance(event, Failed)
        assert "could not start: no sampler today" in event.error.message
        healthy = _job(model, "Hello there", 4)
        engine.submit(healthy)
        finished = await _last_event(healthy)
        assert isinstance(finished, Finished)
        assert finished.completion_tokens == 4

    _run_on(engine, scenario)


def test_stopping_the_engine_ends_running_and_waiting_jobs(model: LlamaModel) -> None:
    engine = Engine(model, EngineConfig(slots=1, context_size=256, batch_size=64, threads=1))

    async def scenario() -> None:
        engine.start(asyncio.get_running_loop())
        running = _job(model, COUNTING_PROMPT, 200)
        waiting = _job(model, "Hello there", 4)
        engine.submit(running)
        assert isinstance(await asyncio.wait_for(running.events.get(), 120), str)
        engine.submit(waiting)  # the only slot is taken: this one waits
        await asyncio.to_thread(engine.stop)
        for job in (running, waiting):
            event = await _last_event(job)
            assert isinstance(event, Failed)
            assert "the agent stopped" in event.error.message

    asyncio.run(scenario())


def test_a_token_longer_than_the_piece_buffer_is_not_dropped(
    model: LlamaModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llama_model, "_PIECE_BUFFER", 1)
    small = LlamaModel(default_model_path())
    try:
        tokens = model.tokenize("Internationalization, naïve café 日本語 tokenization")
        expected = [model.piece(token) for token in tokens]
        assert any(len(piece) > 1 for piece in expected)
        assert [small.piece(token) for token in tokens] == expected
    finally:
        small.close()
        model.close()


def test_a_sampling_failure_ends_that_request_alone(
    model: LlamaModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Engine(model, EngineConfig(slots=2, context_size=256, batch_size=64, threads=1))

    class PoisonedChain:
        """The real chain, except that it raises on its third draw."""

        def __init__(self, settings: SamplingSettings, n_vocab: int) -> None:
            self._chain = SamplerChain(settings, n_vocab)
            self._draws = 0

        def __getattr__(self, name: str) -> object:
            return getattr(self._chain, name)

        def sample(self, context: object, index: int) -> int:
            self._draws += 1
            if self._draws == 3:
                raise RuntimeError("a poisoned draw")
            return self._chain.sample(context, index)

    async def scenario() -> None:
        neighbour = _job(model, COUNTING_PROMPT, 40)
        engine.submit(neighbour)
        assert isinstance(await asyncio.wait_for(neighbour.events.get(), 120), str)
        with monkeypatch.context() as patch:
            patch.setattr(engine_module, "SamplerChain", PoisonedChain)
            poisoned = _job(model, "Hello there", 20)
            engine.submit(poisoned)
            failed = await _last_event(poisoned)
        assert isinstance(failed, Failed)
        assert "sampling failed: a poisoned draw" in failed.error.message
        finished = await _last_event(neighbour)
        assert isinstance(finished, Finished), finished
        assert finished.completion_tokens == 40

    _run_on(engine, scenario)


def test_abort_fails_running_and_waiting_jobs_and_the_engine_goes_on(model: LlamaModel) -> None:
    engine = Engine(model, EngineConfig(slots=1, context_size=256, batch_size=64, threads=1))

    async def scenario() -> None:
        running = _job(model, COUNTING_PROMPT, 200)
        waiting = _job(model, "Hello there", 4)
        engine.submit(running)
        assert isinstance(await asyncio.wait_for(running.events.get(), 120), str)
        engine.submit(waiting)
        engine.abort(InternalError("cut for a test"))
        for job in (running, waiting):
            event = await _last_event(job)
            assert isinstance(event, Failed)
            assert event.error.message == "cut for a test"
        after = _job(model, "Hello there", 4)
        engine.submit(after)
        assert isinstance(await _last_event(after), Finished)

    _run_on(engine, scenario)


def test_a_hung_decode_makes_the_agent_not_ready_and_fails_its_streams(
    model: LlamaModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Engine(model, EngineConfig(slots=1, context_size=256, batch_size=64, threads=1))
    servicer = AgentServicer("hung", 1)
    jobs = JobFactory(model, engine.context_per_slot, GREEDY, None)
    released = threading.Event()
    real_decode = llama_cpp.llama_decode
    decodes = 0

    def hanging_decode(context: object, batch: object) -> int:
        """The third decode hangs until the test lets it go, as a hung GPU would."""
        nonlocal decodes
        decodes += 1
        if decodes == 3:
            released.wait(120)
        return int(real_decode(context, batch))

    monkeypatch.setattr(llama_cpp, "llama_decode", hanging_decode)

    async def scenario() -> None:
        engine.start(asyncio.get_running_loop())
        servicer.attach(engine, jobs, ContextChoice(256, 0, status_pb2.CONTEXT_SOURCE_FLAG))
        request = agent_pb2.GenerateRequest(
            input=generation_pb2.GenerationInput(prompt=COUNTING_PROMPT, max_tokens=50)
        )
        stream = servicer.Generate(request, None)  # type: ignore[arg-type]
        assert (await anext(stream)).HasField("text")
        await _until(lambda: engine.stalled_for() > STALL_S * 2)  # the hung step
        servicer.check_engine(STALL_S)
        status = servicer.status()
        assert servicer.stalled and not status.ready
        assert status.engine_stalled_seconds > STALL_S
        assert "the engine stalled" in status.issues[0]
        with pytest.raises(UnavailableError) as failed:
            async for _ in stream:
                pass
        assert failed.value.reason == ENGINE_STALLED
        released.set()

        def resumed() -> bool:  # the step ends: the agent serves again
            servicer.check_engine(STALL_S)
            return not servicer.stalled

        await _until(resumed)
        assert servicer.status().ready

    try:
        asyncio.run(scenario())
    finally:
        released.set()
        engine.stop()
