"""Slot-aware routing and the FIFO buffer, through a real balancer to real agents."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc

from paddler.v1 import agent_pb2_grpc, inference_pb2, management_pb2
from tests.client import error_of, error_reason, generate, prompt_request
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


def _claims(agents: list[management_pb2.RegisteredAgent]) -> dict[str, int]:
    return {a.name: a.slots_claimed for a in agents}


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


def _start_blocker(c: Cluster, max_tokens: int = 300) -> grpc.Call:
    """Occupy the only slot with a long stream; return the call once it is generating."""
    call = c.inference.Generate(story(0, max_tokens), timeout=120)
    assert next(call).HasField("text")
    return call


def test_the_agent_with_three_slots_carries_three_times_the_streams() -> None:
    with cluster(("small", 1), ("large", 3)) as c:
        seen: set[tuple[int, int]] = set()
        with ThreadPoolExecutor(8) as pool:
            replies = [pool.submit(generate, c.inference, story(i, 48)) for i in range(8)]
            while not all(r.done() for r in replies):
                claims = _claims(c.list_agents())
                seen.add((claims["small"], claims["large"]))
                time.sleep(0.02)
            served = Counter(r.result().summary.agent_name for r in replies)
        assert (1, 3) in seen, "at saturation the balancer runs 1 + 3 streams"
        assert all(small <= 1 and large <= 3 for small, large in seen)
        assert served["small"] >= 1
        assert served["large"] >= 1.5 * served["small"]
        assert sum(served.values()) == 8
        _idle(c)


def test_buffered_requests_are_served_in_arrival_order() -> None:
    with cluster(("solo", 1)) as c:
        blocker = _start_blocker(c, max_tokens=120)
        finished: list[int] = []
        lock = threading.Lock()

        def send(index: int) -> None:
            generate(c.inference, story(index, 3))
            with lock:
                finished.append(index)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(5)]
        for waiting, thread in enumerate(threads, start=1):
            thread.start()  # each starts only once the one before it is in the buffer
            c.wait_for(_buffered_is(c, waiting), timeout_s=10)
        for thread in threads:
            thread.join(timeout=120)
        assert finished == [0, 1, 2, 3, 4]
        blocker.cancel()
        _idle(c)


def test_a_full_buffer_is_resource_exhausted() -> None:
    with cluster(("solo", 1), balancer_args=("--max-buffered-requests", "2")) as c:
        blocker = _start_blocker(c)
        waiting = [c.inference.Generate(story(i, 3), timeout=120) for i in range(2)]
        c.wait_for(lambda _: c.buffered() == 2, timeout_s=10)
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
        c.wait_for(lambda _: c.buffered() == 0, timeout_s=5)
        blocker.cancel()
        _idle(c)


def test_cancel_while_queued_leaves_the_buffer_at_once() -> None:
    with cluster(("solo", 1)) as c:
        blocker = _start_blocker(c)
        queued = c.inference.Generate(story(1, 3), timeout=120)
        c.wait_for(lambda _: c.buffered() == 1, timeout_s=10)
        queued.cancel()
        c.wait_for(lambda _: c.buffered() == 0, timeout_s=5)
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
        c.wait_for(lambda _: c.buffered() == 1, timeout_s=10)
        c.start_agent("late", "--slots", "1")
        assert pending.result(timeout=60).summary.agent_name == "late"


def test_slots_taken_by_direct_clients_of_an_agent_are_respected() -> None:
    with cluster(("solo", 1)) as c, grpc.insecure_channel(c.agents["solo"].address) as channel:
        direct = agent_pb2_grpc.AgentServiceStub(channel).Generate(
            prompt_request(STORIES[0], max_tokens=80), timeout=60
        )
        assert next(direct).HasField("text")
        c.wait_for(lambda agents: agents[0].slots_processing == 1, timeout_s=5)
        with ThreadPoolExecutor(1) as pool:
            queued = pool.submit(generate, c.inference, story(1, 3))
            c.wait_for(_buffered_is(c, 1), timeout_s=5)  # waits instead of being refused
            assert [r for r in direct if r.HasField("summary")]
            assert queued.result(timeout=60).summary.agent_name == "solo"
        _idle(c)
