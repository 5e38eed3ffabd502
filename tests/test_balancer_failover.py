"""Agent failures: retries before the first piece, UNAVAILABLE mid-stream, no leaked slot."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from paddler.v1 import agent_registry_pb2, agent_registry_pb2_grpc, status_pb2
from tests.client import generate, prompt_request
from tests.cluster import cluster, to_inference
from tests.processes import BalancerProcess, free_port

STORY = "Once upon a time, in a small village by the sea, there lived an old fisherman who"


class Registration:
    """A Connect stream opened by the test itself, for an agent address that nobody serves."""

    def __init__(self, management: str, status_every_s: float | None) -> None:
        self._stop = threading.Event()
        self._every = status_every_s
        self._channel = grpc.insecure_channel(management)
        stub = agent_registry_pb2_grpc.AgentRegistryServiceStub(self._channel)
        self._responses = stub.Connect(self._messages())
        assert next(self._responses).HasField("accepted")

    def _messages(self) -> Iterator[agent_registry_pb2.ConnectRequest]:
        yield agent_registry_pb2.ConnectRequest(
            registration=agent_registry_pb2.AgentRegistration(
                name="ghost", address=f"127.0.0.1:{free_port()}"
            )
        )
        status = status_pb2.AgentStatus(name="ghost", slots_total=4, model="m", ready=True)
        yield agent_registry_pb2.ConnectRequest(status=status)
        while not self._stop.wait(self._every or 3600):
            yield agent_registry_pb2.ConnectRequest(status=status)

    def close(self) -> None:
        """End the stream."""
        self._stop.set()
        self._channel.close()


def test_a_request_whose_agent_fails_before_the_first_piece_is_retried() -> None:
    with cluster(("real", 1)) as c:
        ghost = Registration(c.balancer.management, status_every_s=0.5)
        try:
            c.wait_for(lambda agents: {a.name for a in agents} == {"real", "ghost"})
            reply = generate(c.inference, to_inference(prompt_request(STORY, max_tokens=4)))
            assert reply.summary.agent_name == "real"
            retried = c.balancer.logs("retrying on another agent")
            assert [r["agent"] for r in retried] == ["ghost"]
            assert c.balancer.wait_logs("request served")[-1]["attempts"] == 2
        finally:
            ghost.close()
        c.wait_for(lambda agents: [a.name for a in agents] == ["real"], timeout_s=10)


def test_an_agent_stopped_with_sigterm_finishes_its_relayed_streams() -> None:
    with cluster(("leaving", 1)) as c:
        stream = c.inference.Generate(
            to_inference(prompt_request(STORY, max_tokens=60)), timeout=60
        )
        assert next(stream).HasField("text")
        c.agents["leaving"].process.terminate()
        c.wait_for(lambda agents: agents == [], timeout_s=10)  # no new requests go there
        rest = list(stream)
        assert rest[-1].summary.usage.completion_tokens == 60
        assert c.agents["leaving"].stop() == 0


def test_an_agent_that_stops_reporting_is_removed() -> None:
    with cluster(balancer_args=("--agent-stale-after", "1")) as c:
        silent = Registration(c.balancer.management, status_every_s=None)
        try:
            c.wait_for(lambda agents: [a.name for a in agents] == ["ghost"], timeout_s=5)
            c.wait_for(lambda agents: agents == [], timeout_s=5)
            removed = c.balancer.logs("agent removed")
            assert "no status for" in str(removed[-1]["reason"])
        finally:
            silent.close()


def test_kill_9_under_load() -> None:
    with cluster(("doomed", 2), ("survivor", 2)) as c:
        request = to_inference(prompt_request(STORY, max_tokens=150))
        streaming = threading.Semaphore(0)
        outcomes: list[tuple[str, grpc.StatusCode, str]] = []

        def send() -> None:
            agent, pieces = "", 0
            try:
                for response in c.inference.Generate(request, timeout=120):
                    pieces += 1
                    if pieces == 1:
                        streaming.release()
                    agent = response.summary.agent_name
            except grpc.RpcError as error:
                assert isinstance(error, grpc.Call)
                outcomes.append(("failed", error.code(), error.details() or ""))
                return
            outcomes.append((agent, grpc.StatusCode.OK, ""))

        with ThreadPoolExecutor(8) as pool:
            for _ in range(8):
                pool.submit(send)
            for _ in range(4):  # both agents stream to 4 clients, 4 requests wait
                assert streaming.acquire(timeout=60)
            assert c.buffered() == 4
            c.agents["doomed"].kill()
        assert len(outcomes) == 8
        failed = [o for o in outcomes if o[0] == "failed"]
        assert len(failed) == 2, outcomes
        for _, code, details in failed:
            assert code == grpc.StatusCode.UNAVAILABLE
            assert "agent doomed" in details
            assert "mid-stream" in details
        assert Counter(o[0] for o in outcomes if o[0] != "failed") == {"survivor": 6}
        agents = c.wait_for(lambda agents: [a.name for a in agents] == ["survivor"], timeout_s=10)
        assert agents[0].slots_claimed == 0
        c.wait_for(lambda agents: agents[0].slots_processing == 0, timeout_s=5)
        assert c.agent_slots_processing("survivor") == 0
        assert c.buffered() == 0


@pytest.mark.timeout(120)
def test_agents_return_within_five_seconds_of_a_balancer_restart() -> None:
    management = f"127.0.0.1:{free_port()}"
    with cluster(("steady", 1), management=management) as c:
        assert c.balancer.stop() == 0
        restarted = BalancerProcess([], management=management)
        try:
            started = time.monotonic()
            with grpc.insecure_channel(restarted.inference) as channel:
                c.balancer = restarted
                c.management = type(c.management)(grpc.insecure_channel(management))
                c.wait_for(lambda agents: [a.name for a in agents if a.ready] == ["steady"])
                assert time.monotonic() - started < 5
                inference = type(c.inference)(channel)
                reply = generate(inference, to_inference(prompt_request(STORY, max_tokens=3)))
                assert reply.summary.agent_name == "steady"
        finally:
            restarted.stop()
