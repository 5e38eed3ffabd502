"""Generated Connect streams against a real balancer's registry: each ends OK (the balancer
took everything, and the stream's end removed the agent) or with INVALID_ARGUMENT naming one
field, never with another status, never hanging, and the balancer stays healthy."""

from __future__ import annotations

from collections import Counter
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paddler.common.addresses import join_host_port
from paddler.common.status_bounds import MAX_SLOTS
from paddler.v1 import (
    agent_registry_pb2,
    agent_registry_pb2_grpc,
    management_pb2,
    management_pb2_grpc,
    status_pb2,
)
from tests.client import field_violations
from tests.processes import BalancerProcess

EXAMPLES = 500
CALL_TIMEOUT_S = 30.0
OK, INVALID = grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT

INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
# Long strings drawn by length alone: cheap to make, around each limit and far beyond.
LONG_TEXT = st.integers(0, 6000).map(lambda n: "é" * n)
TEXT = st.text(max_size=12)
WILD_TEXT = st.one_of(TEXT, LONG_TEXT)


def _timings(count: int) -> list[status_pb2.StepTiming]:
    return [status_pb2.StepTiming(streams=n, step_seconds=0.01) for n in range(1, count + 1)]


VALID_TIMINGS = st.dictionaries(st.integers(1, 8), st.floats(0, 2), max_size=4).map(
    lambda by_streams: [
        status_pb2.StepTiming(streams=n, step_seconds=t) for n, t in by_streams.items()
    ]
)
WILD_TIMINGS = st.one_of(
    st.lists(st.builds(status_pb2.StepTiming, streams=INT32, step_seconds=st.floats()), max_size=4),
    st.integers(MAX_SLOTS - 2, MAX_SLOTS + 2).map(_timings),
)

# Each field's strategy within bounds, and one far outside them (NaN, infinities, the whole
# integer range, long strings and lists) for the fields a case corrupts.
VALID = {
    "name": TEXT,
    "slots_total": st.integers(2, 8),
    "slots_processing": st.integers(0, 2),
    "model": TEXT,
    "ready": st.booleans(),
    "phase": st.sampled_from(status_pb2.StatePhase.values()),
    "applied_state_version": st.integers(0, 2**64 - 1),
    "issues": st.lists(TEXT, max_size=3),
    "download": st.builds(
        status_pb2.DownloadProgress, bytes_done=st.integers(0, 2**63 - 1), bytes_total=st.just(0)
    ),
    "applied_state_epoch": TEXT,
    "chat_template": TEXT,
    "step_timings": VALID_TIMINGS,
    "prefill_seconds_per_token": st.floats(0, 1),
    "prefill_backlog_tokens": st.integers(0, 2**31 - 1),
}
WILD = {
    "name": WILD_TEXT,
    "slots_total": INT32,
    "slots_processing": INT32,
    "model": WILD_TEXT,
    "phase": INT32,
    "issues": st.one_of(
        st.lists(WILD_TEXT, max_size=3), st.integers(30, 40).map(lambda n: ["i"] * n)
    ),
    "download": st.builds(status_pb2.DownloadProgress, bytes_done=INT64, bytes_total=INT64),
    "applied_state_epoch": WILD_TEXT,
    "chat_template": WILD_TEXT,
    "step_timings": WILD_TIMINGS,
    "prefill_seconds_per_token": st.floats(),
    "prefill_backlog_tokens": INT32,
}


@st.composite
def statuses(draw: st.DrawFn) -> status_pb2.AgentStatus:
    """A snapshot within bounds, with up to two fields drawn from far outside them."""
    fields: dict[str, Any] = {name: draw(strategy) for name, strategy in VALID.items()}
    for name in draw(st.lists(st.sampled_from(sorted(WILD)), max_size=2, unique=True)):
        fields[name] = draw(WILD[name])
    return status_pb2.AgentStatus(**fields)


VALID_ADDRESS = st.builds(
    join_host_port,
    st.sampled_from(["127.0.0.1", "::1", "localhost", "agent.example"]),
    st.integers(1, 65535),
)
WILD_ADDRESS = st.one_of(
    WILD_TEXT,
    st.builds(join_host_port, TEXT, st.integers(0, 10**6)),
    LONG_TEXT.map(lambda host: f"{host}:50052"),
)
REGISTRATIONS = st.one_of(
    st.builds(
        agent_registry_pb2.AgentRegistration,
        name=st.text(min_size=1, max_size=12),
        address=VALID_ADDRESS,
    ),
    st.builds(agent_registry_pb2.AgentRegistration, name=WILD_TEXT, address=WILD_ADDRESS),
)
REGISTRATION_REQUESTS = REGISTRATIONS.map(
    lambda r: agent_registry_pb2.ConnectRequest(registration=r)
)
STATUS_REQUESTS = statuses().map(lambda s: agent_registry_pb2.ConnectRequest(status=s))
# One stream in ten breaks the protocol itself: a snapshot first.
FIRST_REQUESTS = st.integers(0, 9).flatmap(
    lambda n: STATUS_REQUESTS if n == 0 else REGISTRATION_REQUESTS
)
STREAMS = st.tuples(FIRST_REQUESTS, st.lists(STATUS_REQUESTS, max_size=3)).map(
    lambda stream: [stream[0], *stream[1]]
)


def _outcome(
    registry: agent_registry_pb2_grpc.AgentRegistryServiceStub,
    stream: list[agent_registry_pb2.ConnectRequest],
) -> grpc.StatusCode:
    """Send ``stream`` and read the responses to the end; the status it ended with."""
    try:
        for _ in registry.Connect(iter(stream), timeout=CALL_TIMEOUT_S):
            pass
    except grpc.RpcError as error:
        assert isinstance(error, grpc.Call)
        code = error.code()
        assert code == INVALID, f"{code}: {error.details()}"
        assert len(field_violations(error)) == 1, error.details()
        return INVALID
    return OK


@pytest.mark.timeout(180)  # bounded in time, whatever the machine
def test_no_generated_stream_gets_another_status_or_stays_registered() -> None:
    balancer = BalancerProcess([])
    try:
        with grpc.insecure_channel(balancer.management) as channel:
            registry = agent_registry_pb2_grpc.AgentRegistryServiceStub(channel)
            management = management_pb2_grpc.ManagementServiceStub(channel)
            outcomes: Counter[grpc.StatusCode] = Counter()

            @given(stream=STREAMS)
            @settings(
                max_examples=EXAMPLES,
                derandomize=True,
                database=None,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            )
            def check(stream: list[agent_registry_pb2.ConnectRequest]) -> None:
                outcomes[_outcome(registry, stream)] += 1
                listed = management.ListAgents(management_pb2.ListAgentsRequest(), timeout=10)
                assert not listed.agents, "an agent outlived its stream"

            check()
            health = health_pb2_grpc.HealthStub(channel)
            reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert outcomes[OK] >= EXAMPLES // 10, outcomes
        assert outcomes[INVALID] >= EXAMPLES // 10, outcomes
        assert balancer.process.poll() is None
    finally:
        balancer.stop()
