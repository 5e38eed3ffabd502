"""Bounded connections: the most agents a balancer registers and the most live views it
serves; one more is refused with RESOURCE_EXHAUSTED, and room frees when one ends."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator

import grpc
import httpx

from paddler.v1 import (
    agent_registry_pb2,
    agent_registry_pb2_grpc,
    management_pb2,
    management_pb2_grpc,
    status_pb2,
)
from tests.client import error_reason
from tests.processes import BalancerProcess

WAIT_S = 60.0


class _FakeAgent:
    """A registration held open by a thread until ``close``."""

    def __init__(self, stub: agent_registry_pb2_grpc.AgentRegistryServiceStub, n: int) -> None:
        self._outgoing: queue.Queue[agent_registry_pb2.ConnectRequest | None] = queue.Queue()
        registration = agent_registry_pb2.AgentRegistration(
            name=f"fake-{n}", address=f"127.0.0.1:{9000 + n}"
        )
        self._outgoing.put(agent_registry_pb2.ConnectRequest(registration=registration))
        status = status_pb2.AgentStatus(name=f"fake-{n}", slots_total=1)
        self._outgoing.put(agent_registry_pb2.ConnectRequest(status=status))
        self.call = stub.Connect(self._requests(), timeout=WAIT_S)

    def _requests(self) -> Iterator[agent_registry_pb2.ConnectRequest]:
        while (message := self._outgoing.get()) is not None:
            yield message

    def accepted(self) -> bool:
        """Whether the first reply is the acceptance."""
        return next(self.call).HasField("accepted")

    def close(self) -> None:
        """End the stream (the balancer removes the agent)."""
        self._outgoing.put(None)
        self.call.cancel()


def test_the_most_agents_and_live_views() -> None:
    balancer = BalancerProcess(["--max-agents", "2", "--max-watchers", "2"])
    try:
        with grpc.insecure_channel(balancer.management) as channel:
            registry = agent_registry_pb2_grpc.AgentRegistryServiceStub(channel)
            first, second = _FakeAgent(registry, 1), _FakeAgent(registry, 2)
            assert first.accepted() and second.accepted()
            third = _FakeAgent(registry, 3)
            try:
                third.accepted()
                raise AssertionError("a third agent was taken")
            except grpc.RpcError as error:
                assert isinstance(error, grpc.Call)
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert error_reason(error) == "TOO_MANY_AGENTS"
            first.close()
            deadline = time.monotonic() + WAIT_S
            while True:  # the closed stream's agent leaves, and its place is free again
                fourth = _FakeAgent(registry, 4)
                try:
                    assert fourth.accepted()
                    break
                except grpc.RpcError:
                    assert time.monotonic() < deadline, "the place never freed"
                    time.sleep(0.05)
            _check_live_views(management_pb2_grpc.ManagementServiceStub(channel))
            second.close()
            fourth.close()
    finally:
        assert balancer.stop() == 0


def _check_live_views(stub: management_pb2_grpc.ManagementServiceStub) -> None:
    request = management_pb2.WatchAgentsRequest()
    views = [stub.WatchAgents(request, timeout=WAIT_S) for _ in range(2)]
    for view in views:
        assert len(next(view).agents) == 2  # both hold their place
    refused = stub.WatchAgents(request, timeout=WAIT_S)
    try:
        next(refused)
        raise AssertionError("a third live view was served")
    except grpc.RpcError as error:
        assert isinstance(error, grpc.Call)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_reason(error) == "TOO_MANY_CALLS"
    views[0].cancel()
    deadline = time.monotonic() + WAIT_S
    while True:
        again = stub.WatchAgents(request, timeout=WAIT_S)
        try:
            next(again)
            break
        except grpc.RpcError:
            assert time.monotonic() < deadline, "the cancelled view's place never freed"
            time.sleep(0.05)
    again.cancel()
    views[1].cancel()


def test_the_panel_live_view_counts_against_the_same_limit() -> None:
    balancer = BalancerProcess(["--max-watchers", "1", "--web-allowed-host", "panel.example"])
    port = balancer.listening["web"].rpartition(":")[2]
    try:
        with (
            httpx.Client(base_url=balancer.web, timeout=WAIT_S) as client,
            client.stream("GET", "/api/events") as live,
        ):
            assert live.status_code == 200
            lines = live.iter_lines()  # kept: a dropped iterator closes the stream
            assert next(lines).startswith("data: ")  # the view holds its place
            assert client.get("/api/events").status_code == 429
            with grpc.insecure_channel(balancer.management) as channel:
                stub = management_pb2_grpc.ManagementServiceStub(channel)
                try:
                    next(stub.WatchAgents(management_pb2.WatchAgentsRequest(), timeout=WAIT_S))
                    raise AssertionError("a second live view was served")
                except grpc.RpcError as error:
                    assert isinstance(error, grpc.Call)
                    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # A name given with --web-allowed-host is answered; any other name is not.
        with httpx.Client(base_url=balancer.web, timeout=WAIT_S) as client:
            named = client.get("/api/session", headers={"Host": f"panel.example:{port}"})
            assert named.status_code == 200
            other = client.get("/api/session", headers={"Host": f"other.example:{port}"})
            assert other.status_code == 403
    finally:
        assert balancer.stop() == 0
