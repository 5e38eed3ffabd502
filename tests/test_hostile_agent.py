"""A hostile agent: a client of the balancer's registry that reports figures out of bounds, or
messages that cannot be decoded.

Each report closes its registration with INVALID_ARGUMENT naming the field, and the balancer
goes on serving its real agent without a jump in memory (a slot count of 2^31 - 1 once made it
build a table of 2^31 floats).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from paddler.common.status_bounds import MAX_NAME_CHARS, MAX_SLOTS
from paddler.v1 import agent_registry_pb2, status_pb2
from tests.client import field_violations, generate, prompt_request
from tests.cluster import Cluster, cluster, to_inference
from tests.processes import free_port

STORY = "Once upon a time, in a small village by the sea, there lived an old fisherman who"
CLOSED = "agent registration closed"
# The balancer's peak memory may grow this much over the whole module, whatever it is sent.
MEMORY_ALLOWANCE_KIB = 500 * 1024
CALL_TIMEOUT_S = 60.0
CONNECT = "/paddler.v1.AgentRegistryService/Connect"


def hostile_status(**fields: Any) -> status_pb2.AgentStatus:
    """A valid snapshot of a ready 4-slot agent, ``fields`` changed."""
    valid: dict[str, Any] = {
        "name": "hostile",
        "slots_total": 4,
        "model": "m",
        "ready": True,
        "phase": status_pb2.STATE_PHASE_APPLIED,
        "step_timings": [status_pb2.StepTiming(streams=1, step_seconds=0.02)],
    }
    return status_pb2.AgentStatus(**(valid | fields))


def timings(count: int) -> list[status_pb2.StepTiming]:
    """``count`` timings for stream counts 1, 2, ..."""
    return [status_pb2.StepTiming(streams=n, step_seconds=0.01) for n in range(1, count + 1)]


def undecodable(request: agent_registry_pb2.ConnectRequest) -> bytes:
    """``request`` serialized, its "@@" made invalid UTF-8 (the framing stays valid)."""
    return request.SerializeToString().replace(b"@@", b"\xff\xff")


@dataclass(frozen=True)
class Hostile:
    """What the hostile agent sends: a registration (unless ``register`` is False), then
    ``status`` if given, then the ``raw`` messages."""

    field: str
    status: status_pb2.AgentStatus | None = None
    name: str = "hostile"
    address: str = ""  # "" : a port nobody serves
    raw: tuple[bytes, ...] = ()
    register: bool = True
    pool: str = ""

    def messages(self) -> list[bytes]:
        """The Connect stream's requests, serialized."""
        sent: list[agent_registry_pb2.ConnectRequest] = []
        if self.register:
            address = self.address or f"127.0.0.1:{free_port()}"
            registration = agent_registry_pb2.AgentRegistration(
                name=self.name, address=address, pool=self.pool
            )
            sent.append(agent_registry_pb2.ConnectRequest(registration=registration))
        if self.status is not None:
            sent.append(agent_registry_pb2.ConnectRequest(status=self.status))
        return [message.SerializeToString() for message in sent] + list(self.raw)


def _step(seconds: float) -> status_pb2.AgentStatus:
    return hostile_status(step_timings=[status_pb2.StepTiming(streams=1, step_seconds=seconds)])


HOSTILE = {
    "int32-max-slots": Hostile("status.slots_total", hostile_status(slots_total=2**31 - 1)),
    "negative-slots": Hostile("status.slots_total", hostile_status(slots_total=-4)),
    "negative-busy": Hostile("status.slots_processing", hostile_status(slots_processing=-1)),
    "busy-beyond-total": Hostile("status.slots_processing", hostile_status(slots_processing=5)),
    "nan-step": Hostile("status.step_timings[0].step_seconds", _step(math.nan)),
    "inf-step": Hostile("status.step_timings[0].step_seconds", _step(math.inf)),
    "negative-step": Hostile("status.step_timings[0].step_seconds", _step(-0.02)),
    "huge-stream-count": Hostile(
        "status.step_timings[0].streams",
        hostile_status(step_timings=[status_pb2.StepTiming(streams=2**31 - 1, step_seconds=1)]),
    ),
    "too-many-step-timings": Hostile(
        "status.step_timings", hostile_status(slots_total=MAX_SLOTS, step_timings=timings(100_000))
    ),
    "nan-prefill": Hostile(
        "status.prefill_seconds_per_token", hostile_status(prefill_seconds_per_token=math.nan)
    ),
    "negative-backlog": Hostile(
        "status.prefill_backlog_tokens", hostile_status(prefill_backlog_tokens=-(2**31))
    ),
    "negative-download": Hostile(
        "status.download.bytes_done",
        hostile_status(download=status_pb2.DownloadProgress(bytes_done=-1, bytes_total=10)),
    ),
    "too-many-issues": Hostile("status.issues", hostile_status(issues=["down"] * 50_000)),
    "huge-issue": Hostile("status.issues[0]", hostile_status(issues=["x" * 1_000_000])),
    "huge-model-name": Hostile("status.model", hostile_status(model="m" * 1_000_000)),
    "too-many-prefix-hashes": Hostile(
        "status.prefix_hashes", hostile_status(prefix_hashes=range(100_000))
    ),
    "too-many-devices": Hostile(
        "status.placement.devices",
        hostile_status(
            placement=status_pb2.ModelPlacement(
                devices=[status_pb2.Device(name=f"GPU{n}") for n in range(10_000)]
            )
        ),
    ),
    "huge-device-name": Hostile(
        "status.placement.devices[0].name",
        hostile_status(
            placement=status_pb2.ModelPlacement(devices=[status_pb2.Device(name="d" * 100_000)])
        ),
    ),
    "bad-address": Hostile("registration.address", address="no-port-here"),
    "bad-pool": Hostile("registration.pool", pool="Not_A_Pool"),
    "huge-pool": Hostile("registration.pool", pool="p" * 1_000_000),
    "huge-address": Hostile("registration.address", address=f"{'h' * 1_000_000}:50052"),
    "undecodable-status": Hostile(
        "status",
        raw=(undecodable(agent_registry_pb2.ConnectRequest(status=hostile_status(model="@@"))),),
    ),
    "undecodable-registration": Hostile(
        "registration",
        name="",
        register=False,
        raw=(
            undecodable(
                agent_registry_pb2.ConnectRequest(
                    registration=agent_registry_pb2.AgentRegistration(name="@@")
                )
            ),
        ),
    ),
    "empty-name": Hostile("registration.name", name=""),
    "huge-name": Hostile("registration.name", name="n" * 1_000_000),
}


def _memory_kib(pid: int, key: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (the peak) of process ``pid``, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} for process {pid}")


@dataclass
class Shared:
    """The cluster every case runs against, and its balancer's memory before the first case."""

    cluster: Cluster
    rss_before_kib: int


@pytest.fixture(scope="module")
def shared() -> Iterator[Shared]:
    """One balancer with one real 1-slot agent for every case."""
    with cluster(("real", 1)) as c:
        yield Shared(c, _memory_kib(c.balancer.process.pid, "VmRSS"))


def connect(management: str, hostile: Hostile) -> grpc.Call | None:
    """Run one Connect stream to its end; the error it ended with (None: it ended OK)."""
    with grpc.insecure_channel(management) as channel:
        connect_call: grpc.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(
            CONNECT  # no (de)serializers: bytes in, bytes out
        )
        try:
            for _ in connect_call(iter(hostile.messages()), timeout=CALL_TIMEOUT_S):
                pass
        except grpc.RpcError as error:
            assert isinstance(error, grpc.Call)
            return error
    return None


@pytest.mark.parametrize("hostile", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_agent_is_closed_and_the_balancer_serves_on(
    shared: Shared, hostile: Hostile
) -> None:
    c = shared.cluster
    closed_before = len(c.balancer.logs(CLOSED))
    error = connect(c.balancer.management, hostile)
    assert error is not None, "the balancer took the report"
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert field_violations(error) == [hostile.field]
    assert [agent.name for agent in c.list_agents()] == ["real"]
    reply = generate(c.inference, to_inference(prompt_request(STORY, max_tokens=2)))
    assert reply.summary.agent_name == "real"
    records = c.balancer.wait_logs(CLOSED, closed_before + 1)
    assert len(records) == closed_before + 1, "the registration was closed once"
    assert str(records[-1]["peer"]).startswith("ipv")
    assert str(records[-1]["name"]) == hostile.name[:MAX_NAME_CHARS]
    assert hostile.field in str(records[-1]["reason"])
    peak = _memory_kib(c.balancer.process.pid, "VmHWM")
    assert peak - shared.rss_before_kib < MEMORY_ALLOWANCE_KIB, f"peak {peak} KiB"
