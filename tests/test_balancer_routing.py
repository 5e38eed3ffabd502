"""Slot-aware routing and the FIFO buffer, through a real balancer to real agents."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc

from paddler.v1 import agent_pb2, agent_pb2_grpc, inference_pb2, management_pb2
from tests.client import COUNTING_PROMPT, error_of, error_reason, generate, prompt_request
from tests.cluster import Cluster, cluster, to_inference

STORIES = [
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "The history of the printing press begins in the fifteenth century, when",
    "Chapter 1. The train left the station at midnight, and the only passenger",
    "Dear diary, today was the strangest day of my life. It started when",
]


def story(index: int, max_tokens: int) -> inference_pb2.InferenceServiceGenerateRequest:
    """A balancer request that generates ``max_tokens`` tokens (stories rarely stop early)."""
    return to_inference(prompt_request(STORIES[index % len(STORIES)], max_tokens=max_tokens))


ENDLESS = to_inference(prompt_request(COUNTING_PROMPT, max_tokens=None))


def _claims(agents: list[management_pb2.RegisteredAgent]) -> dict[str, int]:
    return {a.name: a.slots_claimed for a in agents}


def _processing(agents: list[management_pb2.RegisteredAgent]) -> dict[str, int]:
    return {a.name: a.slots_processing for a in agents}


def _buffered_is(c: Cluster, count: int) -> Callable[[object], bool]:
    return lambda _: c.buffered() == count


def _idle(c: Cluster) -> None:
    agents = c.wait_for(lambda agents: all(a.slots_claimed == 0 for a in agents))
    assert all(
        a.slots_processing == 0
        for a in c.wait_for(lambda agents: all(a.slots_processing == 0 for a in agents))
    )
    assert len(agents) == len(c.agents)
    assert all(c.agent_slots_processing(name) == 0 for name in c.agents)
    assert c.buffered() == 0


def _start_blocker(c: Cluster) -> grpc.Call:
    """Occupy the only slot with an endless stream; return the call once it is generating."""
    call = c.inference.Generate(ENDLESS, timeout=300)
    assert next(call).HasField("text")
    return call


class _ClaimWatch:
    """Every (small, large) claim pair the balancer's WatchAgents stream ever showed."""

    def __init__(self, c: Cluster) -> None:
        self.seen: list[tuple[int, int]] = []
        self._stream = c.management.WatchAgents(management_pb2.WatchAgentsRequest())
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(grpc.RpcError):
            for reply in self._stream:
                claims = _claims(list(reply.agents))
                self.seen.append((claims.get("small", 0), claims.get("large", 0)))

    def close(self) -> None:
        self._stream.cancel()
        self._thread.join(timeout=10)


def test_at_saturation_the_balancer_runs_one_stream_per_slot_and_buffers_the_rest() -> None:
    with cluster(("small", 1), ("large", 3)) as c:
        watch = _ClaimWatch(c)
        calls = [c.inference.Generate(ENDLESS, timeout=300) for _ in range(8)]
        c.wait_for(lambda agents: _claims(agents) == {"small": 1, "large": 3})
        c.wait_for(_buffered_is(c, 4))
        # The agents' own counts arrive with their next snapshots: wait for them to agree.
        c.wait_for(lambda agents: _processing(agents) == {"small": 1, "large": 3})
        assert _claims(c.list_agents()) == {"small": 1, "large": 3}
        for call in calls:
            call.cancel()
        _idle(c)
        watch.close()
        assert (1, 3) in watch.seen
        assert all(small <= 1 and large <= 3 for small, large in watch.seen), watch.seen


def test_work_goes_to_the_agent_with_the_fewest_busy_slots() -> None:
    with cluster(("small", 1), ("large", 3)) as c:
        first = _start_blocker(c)  # ties on zero busy: the most free slots win
        assert c.wait_for(lambda agents: _claims(agents) == {"small": 0, "large": 1})
        second = c.inference.Generate(ENDLESS, timeout=300)
        assert next(second).HasField("text")  # 0 busy beats 1 busy, though large has 2 free
        assert _claims(c.list_agents()) == {"small": 1, "large": 1}
        for call in (first, second):
            call.cancel()
        _idle(c)


def test_buffered_requests_are_served_in_arrival_order() -> None:
    with cluster(("solo", 1)) as c:
        blocker = _start_blocker(c)
        finished: list[int] = []
        lock = threading.Lock()

        def send(index: int) -> None:
            generate(c.inference, story(index, 3))
            with lock:
                finished.append(index)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(5)]
        for waiting, thread in enumerate(threads, start=1):
            thread.start()  # each starts only once the one before it is in the buffer
            c.wait_for(_buffered_is(c, waiting))
        blocker.cancel()
        for thread in threads:
            thread.join(timeout=120)
        assert finished == [0, 1, 2, 3, 4]
        _idle(c)


def test_a_full_buffer_is_resource_exhausted() -> None:
    with cluster(("solo", 1), balancer_args=("--max-buffered-requests", "2")) as c:
        blocker = _start_blocker(c)
        waiting = [c.inference.Generate(story(i, 3), timeout=120) for i in range(2)]
        c.wait_for(_buffered_is(c, 2))
        error = error_of(c.inference, story(0, 3))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "buffer is full (2 requests waiting)" in (error.details() or "")
        for call in [blocker, *waiting]:
            call.cancel()
        _idle(c)


def test_no_buffering_is_resource_exhausted_at_once() -> None:
    with cluster(("solo", 1), balancer_args=("--max-buffered-requests", "0")) as c:
        blocker = _start_blocker(c)
        error = error_of(c.inference, story(0, 3))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "buffering is off" in (error.details() or "")
        blocker.cancel()
        _idle(c)


def test_a_request_that_waits_too_long_is_unavailable() -> None:
    with cluster(("solo", 1), balancer_args=("--buffered-request-timeout", "0.5")) as c:
        blocker = _start_blocker(c)
        error = error_of(c.inference, story(0, 3))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "no slot freed within 0.5 s" in (error.details() or "")
        assert error_reason(error) == "BUFFER_TIMEOUT"
        assert c.buffered() == 0
        blocker.cancel()
        _idle(c)


def test_the_client_deadline_ends_the_wait() -> None:
    with cluster(("solo", 1)) as c:
        blocker = _start_blocker(c)
        error = error_of(c.inference, story(0, 3), timeout=0.5)
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        c.wait_for(_buffered_is(c, 0))
        blocker.cancel()
        _idle(c)


def test_cancel_while_queued_leaves_the_buffer_at_once() -> None:
    with cluster(("solo", 1)) as c:
        blocker = _start_blocker(c)
        queued = c.inference.Generate(story(1, 3), timeout=120)
        c.wait_for(_buffered_is(c, 1))
        queued.cancel()
        c.wait_for(_buffered_is(c, 0))
        blocker.cancel()
        _idle(c)


def test_cancel_while_streaming_releases_the_slot() -> None:
    with cluster(("solo", 1)) as c:
        _start_blocker(c).cancel()
        _idle(c)
        reply = generate(c.inference, story(2, 5))
        assert (reply.summary.usage.completion_tokens, reply.summary.agent_name) == (5, "solo")


def test_a_request_waits_for_the_first_agent_to_arrive() -> None:
    with cluster() as c, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(generate, c.inference, story(3, 4))
        c.wait_for(_buffered_is(c, 1))
        c.start_agent("late", "--slots", "1")
        assert pending.result(timeout=300).summary.agent_name == "late"


def test_slots_taken_by_direct_clients_of_an_agent_are_respected() -> None:
    with cluster(("solo", 1)) as c, grpc.insecure_channel(c.agents["solo"].address) as channel:
        direct = agent_pb2_grpc.AgentServiceStub(channel).Generate(
            agent_pb2.GenerateRequest(input=ENDLESS.input), timeout=300
        )
        assert next(direct).HasField("text")
        c.wait_for(lambda agents: agents[0].slots_processing == 1)
        with ThreadPoolExecutor(1) as pool:
            queued = pool.submit(generate, c.inference, story(1, 3))
            c.wait_for(_buffered_is(c, 1))  # waits instead of being refused
            direct.cancel()
            assert queued.result(timeout=120).summary.agent_name == "solo"
        _idle(c)
