"""host:port handling: IPv6 brackets, loopback/wildcard hosts, gRPC peers; a cluster on ::1."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paddler.balancer.registry_servicer import reachable_address
from paddler.common.addresses import (
    is_ipv6,
    is_local_host,
    join_host_port,
    loopback_for,
    parse_peer,
    split_host_port,
)
from paddler.common.grpc_server import ManagedServer
from paddler.processes.agent import advertised_address
from paddler.v1 import inference_pb2_grpc, management_pb2_grpc
from tests.client import generate, prompt_request
from tests.cluster import Cluster, to_inference
from tests.processes import AgentProcess, BalancerProcess


@pytest.mark.parametrize(
    ("host", "port", "address"),
    [
        ("::1", 5, "[::1]:5"),
        ("[::1]", 5, "[::1]:5"),
        ("::", 50052, "[::]:50052"),
        ("2001:db8::7", "5", "[2001:db8::7]:5"),
        ("1.2.3.4", 5, "1.2.3.4:5"),
        ("agent-0.pods", 5, "agent-0.pods:5"),
        ("", 5, ":5"),
    ],
)
def test_join_host_port(host: str, port: int | str, address: str) -> None:
    assert join_host_port(host, port) == address


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [
        ("[::1]:5", "::1", 5),
        ("[::]:0", "::", 0),
        ("[2001:db8::7]:40000", "2001:db8::7", 40000),
        ("1.2.3.4:5", "1.2.3.4", 5),
        ("agent-0.pods:50052", "agent-0.pods", 50052),
        (":5", "", 5),
    ],
)
def test_split_host_port(address: str, host: str, port: int) -> None:
    assert split_host_port(address) == (host, port)
    assert join_host_port(host, port) == address


@pytest.mark.parametrize("address", ["::1:5", "host", "host:", "host:x", "[::1:5", "::1"])
def test_split_host_port_refuses_what_cannot_be_dialled(address: str) -> None:
    with pytest.raises(ValueError, match="address"):
        split_host_port(address)


def test_is_ipv6() -> None:
    assert is_ipv6("::1")
    assert is_ipv6("[::1]")
    assert not is_ipv6("127.0.0.1")
    assert not is_ipv6("localhost")
    assert not is_ipv6("")


@pytest.mark.parametrize(
    "host",
    [
        "",
        "localhost",
        "LocalHost",
        "127.0.0.1",
        "127.0.0.2",
        "0.0.0.0",
        "::1",
        "[::1]",
        "::",
        "[::]",
        "::ffff:127.0.0.1",
    ],
)
def test_local_hosts(host: str) -> None:
    assert is_local_host(host)


@pytest.mark.parametrize(
    "host", ["10.1.2.3", "192.168.0.1", "2001:db8::1", "[2001:db8::1]", "fe80::1", "agent-0.pods"]
)
def test_hosts_that_are_not_local(host: str) -> None:
    assert not is_local_host(host)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("", "127.0.0.1"),
        ("0.0.0.0", "127.0.0.1"),
        ("localhost", "127.0.0.1"),
        ("127.0.0.2", "127.0.0.2"),
        ("::", "::1"),
        ("[::]", "::1"),
        ("::1", "::1"),
        ("[::1]", "::1"),
    ],
)
def test_loopback_of_the_same_family(host: str, loopback: str) -> None:
    assert loopback_for(host) == loopback


@pytest.mark.parametrize(
    ("peer", "parsed"),
    [
        ("ipv4:1.2.3.4:5", ("1.2.3.4", 5)),
        ("ipv4:127.0.0.1:40000", ("127.0.0.1", 40000)),
        ("ipv6:%5B::1%5D:54321", ("::1", 54321)),
        ("ipv6:%5B2001:db8::7%5D:40000", ("2001:db8::7", 40000)),
        ("ipv6:[::1]:5", ("::1", 5)),
        ("unix:/tmp/paddler.sock", None),
        ("unix-abstract:paddler", None),
        ("ipv4:garbage", None),
        ("", None),
    ],
)
def test_parse_peer(peer: str, parsed: tuple[str, int] | None) -> None:
    assert parse_peer(peer) == parsed


@pytest.mark.parametrize(
    ("advertised", "peer", "reachable"),
    [
        ("127.0.0.1:50052", "ipv4:10.1.2.3:40000", "10.1.2.3:50052"),
        ("0.0.0.0:50052", "ipv4:10.1.2.3:40000", "10.1.2.3:50052"),
        ("127.0.0.1:50052", "ipv4:127.0.0.1:40000", "127.0.0.1:50052"),
        ("agent-0.pods:50052", "ipv4:10.1.2.3:4", "agent-0.pods:50052"),
        # IPv6: the peer comes URL-encoded, the result is bracketed
        ("[::1]:50052", "ipv6:%5B::1%5D:40000", "[::1]:50052"),
        ("[::1]:50052", "ipv6:%5B2001:db8::7%5D:40000", "[2001:db8::7]:50052"),
        ("[::]:50052", "ipv6:%5B2001:db8::7%5D:40000", "[2001:db8::7]:50052"),
        ("127.0.0.1:50052", "ipv6:%5B2001:db8::7%5D:40000", "[2001:db8::7]:50052"),
        ("[::1]:50052", "ipv4:10.1.2.3:40000", "10.1.2.3:50052"),
        ("localhost:50052", "ipv6:%5B::1%5D:40000", "localhost:50052"),
        ("[2001:db8::9]:50052", "ipv4:10.1.2.3:4", "[2001:db8::9]:50052"),
        # nothing better known: as advertised
        ("127.0.0.1:50052", "unix:/tmp/paddler.sock", "127.0.0.1:50052"),
        ("127.0.0.1:50052", "", "127.0.0.1:50052"),
        ("not-an-address", "ipv4:10.1.2.3:4", "not-an-address"),
    ],
)
def test_reachable_address(advertised: str, peer: str, reachable: str) -> None:
    assert reachable_address(advertised, peer) == reachable


@pytest.mark.parametrize(
    ("host", "bound", "advertised"),
    [
        ("0.0.0.0", "0.0.0.0:7", "127.0.0.1:7"),
        ("", ":7", "127.0.0.1:7"),
        ("localhost", "localhost:7", "127.0.0.1:7"),
        ("127.0.0.1", "127.0.0.1:7", "127.0.0.1:7"),
        ("::", "[::]:7", "[::1]:7"),
        ("[::]", "[::]:7", "[::1]:7"),
        ("::1", "[::1]:7", "[::1]:7"),
        ("10.0.0.5", "10.0.0.5:7", "10.0.0.5:7"),
        ("2001:db8::5", "[2001:db8::5]:7", "[2001:db8::5]:7"),
        ("agent-0.pods", "agent-0.pods:7", "agent-0.pods:7"),
    ],
)
def test_advertised_address_without_pod_ip(
    monkeypatch: pytest.MonkeyPatch, host: str, bound: str, advertised: str
) -> None:
    monkeypatch.delenv("POD_IP", raising=False)
    assert advertised_address(host, bound) == advertised


@pytest.mark.parametrize(
    ("pod_ip", "advertised"),
    [("10.4.0.9", "10.4.0.9:7"), ("fd00::9", "[fd00::9]:7"), ("", "[::1]:7")],
)
def test_advertised_address_with_pod_ip(
    monkeypatch: pytest.MonkeyPatch, pod_ip: str, advertised: str
) -> None:
    monkeypatch.setenv("POD_IP", pod_ip)
    assert advertised_address("::", "[::]:7") == advertised


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@pytest.mark.parametrize("requested", ["[::1]:0", "127.0.0.1:0"])
def test_managed_server_returns_a_dialable_address(requested: str) -> None:
    async def bound_and_serving() -> tuple[str, bool]:
        managed = ManagedServer([])
        address = await managed.start(requested)
        await managed.set_serving(serving=True)
        async with aio.insecure_channel(address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=10
            )
        await managed.drain(0)
        return address, reply.status == health_pb2.HealthCheckResponse.SERVING

    address, serving = asyncio.run(bound_and_serving())
    host, port = split_host_port(address)
    assert join_host_port(host, port) == address
    assert address.startswith(requested[:-1])
    assert port > 0
    assert serving


@pytest.mark.parametrize("agent_host", ["::1", "[::1]"])
def test_cluster_over_ipv6_loopback(agent_host: str) -> None:
    """A balancer and an agent both on [::1]: the agent registers with a dialable address and
    a generation through the balancer reaches it."""
    balancer = BalancerProcess(["--inference-addr", "[::1]:0"], management="[::1]:0")
    agent: AgentProcess | None = None
    try:
        assert balancer.inference.startswith("[::1]:")
        assert balancer.management.startswith("[::1]:")
        agent = AgentProcess(
            [
                *("--host", agent_host, "--name", "v6-agent", "--balancer", balancer.management),
                *("--threads", "1", "--slots", "1", "--context-size", "256"),
            ]
        )
        with (
            grpc.insecure_channel(balancer.management) as management_channel,
            grpc.insecure_channel(balancer.inference) as inference_channel,
        ):
            c = Cluster(
                balancer,
                inference_pb2_grpc.InferenceServiceStub(inference_channel),
                management_pb2_grpc.ManagementServiceStub(management_channel),
            )
            (registered,) = c.wait_for(lambda agents: any(a.ready for a in agents))
            assert registered.name == "v6-agent"
            assert registered.address.startswith("[::1]:"), registered.address
            assert registered.address == agent.address
            assert _serving(registered.address)
            reply = generate(c.inference, to_inference(prompt_request("Once upon a time", 8)))
            assert reply.text
    finally:
        if agent is not None:
            agent.stop()
        balancer.stop()
