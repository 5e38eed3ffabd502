"""The OpenAI API at the cluster's limits: a full buffer (429), a slot that never frees in time
(504), no agent (503), and clients that leave (their slot or buffer place is freed)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from paddler.v1 import desired_state_pb2
from paddler.v1.status_pb2 import STATE_PHASE_FAILED
from tests.client import generate, prompt_request
from tests.cluster import Cluster, cluster, to_inference
from tests.openai_clients import MODEL, client_of, logged

STORY: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Write a very long story about the sea."}
]
WAIT_S = 600.0


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class HeldStream:
    """A streaming chat completion that holds the agent's slot until ``close`` (greedy: the
    story runs to the slot's full context, where a sampled one may end within a second)."""

    def __init__(self, base: str) -> None:
        self._client = httpx.Client(timeout=WAIT_S)
        body = {"model": MODEL, "messages": STORY, "stream": True, "temperature": 0}
        self._stream = self._client.stream("POST", f"{base}/chat/completions", json=body)
        self.response = self._stream.__enter__()
        self.status = self.response.status_code
        self._lines = self.response.iter_lines()
        for line in self._lines:  # the role chunk, then the first content: it is generating
            if line.startswith("data: ") and '"content": "' in line and '""' not in line:
                break

    def rest(self) -> list[str]:
        """The stream's remaining data lines, to its end."""
        return [line for line in self._lines if line.startswith("data: ")]

    def close(self) -> None:
        self._stream.__exit__(None, None, None)
        self._client.close()


def _buffered_is(c: Cluster, count: int) -> bool:
    return c.buffered() == count


@pytest.fixture(scope="module")
def one_slot() -> Iterator[Cluster]:
    """One 1-slot agent behind a balancer that buffers one request."""
    with cluster(("one", 1), balancer_args=("--max-buffered-requests", "1")) as c:
        yield c


def test_a_full_buffer_is_429_with_retry_after_and_a_stream_that_leaves_frees_its_slot(
    one_slot: Cluster,
) -> None:
    held = HeldStream(one_slot.balancer.openai)
    assert held.status == 200
    waiting: dict[str, object] = {}

    def buffered_request() -> None:
        with client_of(one_slot) as client:
            reply = client.chat.completions.create(model=MODEL, messages=STORY, max_tokens=3)
            waiting["usage"] = reply.usage

    thread = threading.Thread(target=buffered_request)
    thread.start()
    wait_until(lambda: one_slot.buffered() == 1, "the second request to wait in the buffer")
    with client_of(one_slot) as client, pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model=MODEL, messages=STORY, max_tokens=3)
    assert raised.value.status_code == 429
    assert int(raised.value.response.headers["Retry-After"]) >= 1
    held.close()  # the client goes away mid-stream: its slot goes to the buffered request
    thread.join(WAIT_S)
    assert getattr(waiting["usage"], "completion_tokens", None) == 3
    logged(one_slot.balancer, "request cancelled", stage="streaming")
    wait_until(lambda: one_slot.agent_slots_processing("one") == 0, "the slot to be free")


def test_a_request_whose_client_leaves_while_buffered_leaves_the_buffer(
    one_slot: Cluster,
) -> None:
    held = HeldStream(one_slot.balancer.openai)

    async def leave_while_buffered() -> None:
        async with httpx.AsyncClient(timeout=WAIT_S) as client:
            body = {"model": MODEL, "messages": STORY, "max_tokens": 3}
            task = asyncio.create_task(
                client.post(f"{one_slot.balancer.openai}/chat/completions", json=body)
            )
            await asyncio.to_thread(
                wait_until, lambda: one_slot.buffered() == 1, "the request to be buffered"
            )
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(leave_while_buffered())
    wait_until(lambda: one_slot.buffered() == 0, "the buffer to empty")
    logged(one_slot.balancer, "request cancelled", stage="waiting for a slot")
    held.close()
    wait_until(lambda: one_slot.agent_slots_processing("one") == 0, "the slot to be free")


def test_a_whole_reply_whose_client_leaves_mid_generation_frees_its_slot(
    one_slot: Cluster,
) -> None:
    async def leave_while_generating() -> None:
        async with httpx.AsyncClient(timeout=WAIT_S) as client:
            body = {"model": MODEL, "messages": STORY}
            headers = {"X-Request-Id": "left-mid-generation"}
            task = asyncio.create_task(
                client.post(
                    f"{one_slot.balancer.openai}/chat/completions", json=body, headers=headers
                )
            )
            await asyncio.to_thread(
                wait_until,
                lambda: one_slot.agent_slots_processing("one") == 1,
                "the request to be generating",
            )
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(leave_while_generating())
    logged(one_slot.balancer, "request cancelled", request_id="left-mid-generation")
    wait_until(lambda: one_slot.agent_slots_processing("one") == 0, "the slot to be free")


def test_no_slot_within_the_buffer_timeout_is_504() -> None:
    with cluster(("one", 1), balancer_args=("--buffered-request-timeout", "1")) as c:
        held = HeldStream(c.balancer.openai)
        with client_of(c) as client, pytest.raises(openai.InternalServerError) as raised:
            client.chat.completions.create(model=MODEL, messages=STORY, max_tokens=3)
        held.close()
    assert raised.value.status_code == 504
    assert raised.value.code == "buffer_timeout"


def test_no_agent_serving_the_desired_state_within_the_buffer_timeout_is_503() -> None:
    with cluster(balancer_args=("--buffered-request-timeout", "1")) as c:
        missing = desired_state_pb2.ModelSource(local_path="/nonexistent/model.gguf")
        c.set_state(desired_state_pb2.DesiredState(model=missing))
        # An agent with no model of its own takes the state, which fails: it serves nothing.
        c.start_agent("one", "--slots", "1", wait=False)
        c.wait_for(lambda agents: bool(agents) and agents[0].phase == STATE_PHASE_FAILED)
        with client_of(c) as client, pytest.raises(openai.InternalServerError) as raised:
            client.chat.completions.create(model=MODEL, messages=STORY, max_tokens=3)
    assert raised.value.status_code == 503
    assert raised.value.code == "no_agent_serves_desired_state"
    assert "/nonexistent" not in raised.value.message  # the agent's issue stays in the logs
    assert int(raised.value.response.headers["Retry-After"]) >= 1


def test_without_agents_health_is_503() -> None:
    with cluster() as c:
        base = c.balancer.openai.removesuffix("/v1")
        reply = httpx.get(f"{base}/health")
        assert reply.status_code == 503
        assert json.loads(reply.text)["status"] == "no agent serves"


def test_grpc_and_openai_requests_share_one_fifo() -> None:
    with cluster(("one", 1)) as c:
        held = HeldStream(c.balancer.openai)
        threads = []

        def grpc_request(request_id: str) -> None:
            request = prompt_request("Say something.", max_tokens=2)
            request.request_id = request_id
            generate(c.inference, to_inference(request), timeout=WAIT_S)

        def openai_request(request_id: str) -> None:
            body = {"model": MODEL, "messages": STORY, "max_tokens": 2}
            url = f"{c.balancer.openai}/chat/completions"
            headers = {"X-Request-Id": request_id}
            assert httpx.post(url, json=body, headers=headers, timeout=WAIT_S).status_code == 200

        order = [("g1", grpc_request), ("o2", openai_request), ("g3", grpc_request)]
        for count, (request_id, send) in enumerate(order, start=1):
            thread = threading.Thread(target=send, args=(request_id,))
            thread.start()
            threads.append(thread)
            wait_until(partial(_buffered_is, c, count), f"{count} requests in the buffer")
        held.close()
        for thread in threads:
            thread.join(WAIT_S)
        served = [line["request_id"] for line in c.balancer.wait_logs("request served", 3)]
    assert served == ["g1", "o2", "g3"]


def test_an_agent_that_dies_mid_stream_ends_the_stream_with_one_error_event() -> None:
    with cluster(("doomed", 1)) as c:
        held = HeldStream(c.balancer.openai)
        c.agents["doomed"].kill()
        rest = held.rest()
        held.close()
    assert rest, "the stream ended without a word"
    error = json.loads(rest[-1].removeprefix("data: "))["error"]
    assert error["code"] == "agent_failed_mid_stream"
    assert "agent doomed" in error["message"]
    assert not any(line == "data: [DONE]" for line in rest)
