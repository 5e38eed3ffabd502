"""A real balancer with real agents registered to it, for the balancer tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import grpc

from paddler.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    desired_state_pb2,
    inference_pb2,
    inference_pb2_grpc,
    management_pb2,
    management_pb2_grpc,
    status_pb2,
)
from tests.processes import AgentProcess, BalancerProcess

REGISTRATION_TIMEOUT_S = 60.0
BUFFER_TIMEOUT_FLAG = "--buffered-request-timeout"


def to_inference(
    request: agent_pb2.GenerateRequest,
) -> inference_pb2.InferenceServiceGenerateRequest:
    """The balancer-side request with the same input."""
    return inference_pb2.InferenceServiceGenerateRequest(
        request_id=request.request_id, input=request.input
    )


@dataclass
class Cluster:
    """The processes and client stubs of one test cluster."""

    balancer: BalancerProcess
    inference: inference_pb2_grpc.InferenceServiceStub
    management: management_pb2_grpc.ManagementServiceStub
    agents: dict[str, AgentProcess] = field(default_factory=dict)

    def start_agent(
        self, name: str, *args: str, env: dict[str, str] | None = None, wait: bool = True
    ) -> AgentProcess:
        """Start an agent that registers with this balancer; wait until it is routable.

        One llama.cpp thread each: two agents share this machine's 2 cores.
        """
        agent = AgentProcess(
            ["--name", name, "--balancer", self.balancer.management, "--threads", "1", *args],
            env=env,
        )
        self.agents[name] = agent
        if wait:
            agent.wait_ready()
            self.wait_for(lambda agents: any(a.name == name and a.ready for a in agents))
        return agent

    def set_state(self, state: desired_state_pb2.DesiredState) -> int:
        """SetDesiredState; returns the new version."""
        request = management_pb2.SetDesiredStateRequest(state=state)
        return self.management.SetDesiredState(request).desired_state.version

    def desired_state(self) -> desired_state_pb2.VersionedDesiredState:
        """GetDesiredState."""
        request = management_pb2.GetDesiredStateRequest()
        return self.management.GetDesiredState(request).desired_state

    def wait_applied(
        self, version: int, timeout_s: float = 60
    ) -> list[management_pb2.RegisteredAgent]:
        """Wait until every agent is ready and has applied ``version`` of the balancer's
        epoch."""
        epoch = self.desired_state().epoch
        return self.wait_for(
            lambda agents: (
                bool(agents)
                and all(
                    a.applied_state_version == version
                    and a.applied_state_epoch == epoch
                    and a.phase == status_pb2.STATE_PHASE_APPLIED
                    and a.ready
                    for a in agents
                )
            ),
            timeout_s,
        )

    def list_agents(self) -> list[management_pb2.RegisteredAgent]:
        """ListAgents."""
        return list(self.management.ListAgents(management_pb2.ListAgentsRequest()).agents)

    def buffered(self) -> int:
        """GetBufferedRequests count."""
        request = management_pb2.GetBufferedRequestsRequest()
        return self.management.GetBufferedRequests(request).count

    def wait_for(
        self,
        condition: Callable[[list[management_pb2.RegisteredAgent]], bool],
        timeout_s: float = REGISTRATION_TIMEOUT_S,
    ) -> list[management_pb2.RegisteredAgent]:
        """Poll ListAgents until ``condition(agents)`` holds; fail after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            agents = self.list_agents()
            if condition(agents):
                return agents
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; agents now: {agents}")
            time.sleep(0.05)

    def agent_slots_processing(self, name: str) -> int:
        """The agent's own count of busy slots, asked directly."""
        with grpc.insecure_channel(self.agents[name].address) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            return stub.GetStatus(agent_pb2.GetStatusRequest()).status.slots_processing


@contextmanager
def cluster(
    *agents: tuple[str, int], balancer_args: tuple[str, ...] = (), management: str = "127.0.0.1:0"
) -> Iterator[Cluster]:
    """A balancer and agents ``(name, slots)``, all registered and ready.

    Requests may wait for a slot as long as they need (unless ``balancer_args`` set the buffer
    timeout): a slow machine makes a test slower, never red.
    """
    if BUFFER_TIMEOUT_FLAG not in balancer_args:
        balancer_args = (BUFFER_TIMEOUT_FLAG, "600", *balancer_args)
    with ExitStack() as stack:
        balancer = BalancerProcess(list(balancer_args), management=management)
        stack.callback(balancer.stop)
        inference_channel = stack.enter_context(grpc.insecure_channel(balancer.inference))
        management_channel = stack.enter_context(grpc.insecure_channel(balancer.management))
        result = Cluster(
            balancer,
            inference_pb2_grpc.InferenceServiceStub(inference_channel),
            management_pb2_grpc.ManagementServiceStub(management_channel),
        )
        stack.callback(
            lambda: [a.stop() for a in result.agents.values() if a.process.poll() is None]
        )
        for name, slots in agents:
            result.start_agent(name, "--slots", str(slots), "--context-size", "512")
        yield result
