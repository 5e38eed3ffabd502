"""TLS on every port and mutual TLS between the balancer and its agents, with certificates
made in the test; a rotated certificate is served without a restart."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import openai
import pytest
import trustme
from cryptography import x509

from paddler.common.addresses import split_host_port
from paddler.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    inference_pb2_grpc,
    management_pb2,
    management_pb2_grpc,
)
from tests.client import generate, prompt_request
from tests.cluster import to_inference
from tests.processes import AgentProcess, BalancerProcess, run_paddler

HOSTS = ("localhost", "127.0.0.1")


@dataclass
class Pki:
    """A CA and the files of the certificates it issued."""

    folder: Path
    ca: trustme.CA

    @property
    def ca_file(self) -> Path:
        """The CA's certificate."""
        path = self.folder / "ca.pem"
        if not path.exists():
            self.ca.cert_pem.write_to_path(str(path))
        return path

    def issue(self, name: str) -> tuple[Path, Path]:
        """A certificate for the loopback hosts: its chain file and key file."""
        cert = self.ca.issue_cert(*HOSTS)
        chain, key = self.folder / f"{name}.pem", self.folder / f"{name}.key"
        _write_atomically(chain, b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        _write_atomically(key, cert.private_key_pem.bytes())
        return chain, key


def _write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` at once, as cert-manager's Secret volume does."""
    staged = path.with_suffix(path.suffix + ".new")
    staged.write_bytes(data)
    staged.replace(path)


@dataclass
class TlsCluster:
    """A balancer and an agent that talk mutual TLS, and the PKI that made their files."""

    pki: Pki
    balancer: BalancerProcess
    agent: AgentProcess
    balancer_pair: tuple[Path, Path]


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsCluster]:
    pki = Pki(tmp_path_factory.mktemp("pki"), trustme.CA())
    balancer_pair, agent_pair = pki.issue("balancer"), pki.issue("agent")
    ca = str(pki.ca_file)
    balancer = BalancerProcess(
        [
            "--tls-cert", str(balancer_pair[0]), "--tls-key", str(balancer_pair[1]),
            "--tls-client-ca", ca, "--tls-ca", ca, "--buffered-request-timeout", "600",
        ],
        tls_ca=pki.ca_file,
    )  # fmt: skip
    agent = AgentProcess(
        [
            "--name", "sealed", "--balancer", balancer.management, "--threads", "1",
            "--slots", "2", "--context-size", "512",
            "--tls-cert", str(agent_pair[0]), "--tls-key", str(agent_pair[1]),
            "--tls-client-ca", ca, "--tls-ca", ca,
        ],
        tls_ca=pki.ca_file,
        tls_pair=balancer_pair,  # the agent asks whoever calls it for a certificate
    )  # fmt: skip
    try:
        agent.wait_ready()
        balancer.wait_logs("agent registered")
        yield TlsCluster(pki, balancer, agent, balancer_pair)
    finally:
        agent.stop()
        balancer.stop()


def _secure(address: str, ca: Path, pair: tuple[Path, Path] | None = None) -> grpc.Channel:
    key, chain = (pair[1].read_bytes(), pair[0].read_bytes()) if pair else (None, None)
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(ca.read_bytes(), key, chain))


def test_generations_flow_over_mutual_tls(tls_cluster: TlsCluster) -> None:
    request = to_inference(prompt_request("Hello", max_tokens=4))
    with _secure(tls_cluster.balancer.inference, tls_cluster.pki.ca_file) as channel:
        reply = generate(inference_pb2_grpc.InferenceServiceStub(channel), request)
    assert reply.summary.agent_name == "sealed"  # the balancer reached the agent over mTLS
    served = run_paddler(
        "generate", "--address", tls_cluster.balancer.inference, "--max-tokens", "2",
        "--tls-ca", str(tls_cluster.pki.ca_file), "Hi",
    )  # fmt: skip
    assert served.returncode == 0, served.stderr


def test_plain_or_strange_clients_are_refused(tls_cluster: TlsCluster, tmp_path: Path) -> None:
    request = to_inference(prompt_request("Hello", max_tokens=2))
    stranger = Pki(tmp_path, trustme.CA())
    channels = {
        "plain": grpc.insecure_channel(tls_cluster.balancer.inference),
        "another CA": _secure(tls_cluster.balancer.inference, stranger.ca_file),
    }
    for name, channel in channels.items():
        with channel, pytest.raises(grpc.RpcError) as caught:
            generate(inference_pb2_grpc.InferenceServiceStub(channel), request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, name
    listing = management_pb2.ListAgentsRequest()
    ca = tls_cluster.pki.ca_file
    # The management port and the agent's port ask for a client certificate the CA signed.
    foreign_pair = stranger.issue("foreign")
    for pair in (None, foreign_pair):
        with (
            _secure(tls_cluster.balancer.management, ca, pair) as channel,
            pytest.raises(grpc.RpcError) as caught,
        ):
            management_pb2_grpc.ManagementServiceStub(channel).ListAgents(listing, timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        with (
            _secure(tls_cluster.agent.address, ca, pair) as channel,
            pytest.raises(grpc.RpcError) as caught,
        ):
            agent_pb2_grpc.AgentServiceStub(channel).GetStatus(
                agent_pb2.GetStatusRequest(), timeout=10
            )
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    with _secure(tls_cluster.balancer.management, ca, tls_cluster.balancer_pair) as channel:
        agents = management_pb2_grpc.ManagementServiceStub(channel).ListAgents(listing).agents
    assert [agent.name for agent in agents] == ["sealed"]
    pair = tls_cluster.balancer_pair
    table = run_paddler(
        "agents", "--address", tls_cluster.balancer.management, "--tls-ca", str(ca),
        "--tls-cert", str(pair[0]), "--tls-key", str(pair[1]),
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "sealed" in table.stdout


def test_the_http_ports_serve_tls(tls_cluster: TlsCluster) -> None:
    listening = tls_cluster.balancer.listening
    ca = str(tls_cluster.pki.ca_file)
    client = openai.OpenAI(
        base_url=f"https://{listening['openai']}/v1",
        api_key="unused",
        http_client=openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=ca)),
    )
    reply = client.chat.completions.create(
        model="SmolLM2-135M-Instruct.Q4_1",
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=2,
    )
    assert reply.choices[0].message.content is not None
    metrics = httpx.get(
        f"https://{listening['web']}/metrics",
        verify=ssl.create_default_context(cafile=ca),
        timeout=30,
    )
    assert "paddler_requests_total" in metrics.text
    agent_metrics = httpx.get(
        tls_cluster.agent.metrics.replace("http:", "https:"),
        verify=ssl.create_default_context(cafile=ca),
    )
    assert "paddler_engine_step_duration_seconds" in agent_metrics.text
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{listening['openai']}/health", timeout=10)  # no plain HTTP


def _served_serial(address: str, ca: Path, alpn: str) -> int:
    """The serial number of the certificate a new TLS connection to ``address`` gets."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols([alpn])
    host, port = split_host_port(address)
    with (
        socket.create_connection((host, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_a_rotated_certificate_is_served_without_a_restart(tls_cluster: TlsCluster) -> None:
    listening = tls_cluster.balancer.listening
    ca = tls_cluster.pki.ca_file
    ports = {"inference": "h2", "openai": "http/1.1", "web": "http/1.1"}
    before = {name: _served_serial(listening[name], ca, alpn) for name, alpn in ports.items()}
    assert len(set(before.values())) == 1
    pid = tls_cluster.balancer.process.pid
    tls_cluster.pki.issue("balancer")  # the same files, a new certificate
    deadline = time.monotonic() + 60
    while True:  # the files are looked at about once a second
        now = {name: _served_serial(listening[name], ca, alpn) for name, alpn in ports.items()}
        if all(serial not in before.values() for serial in now.values()):
            break
        assert time.monotonic() < deadline, f"still served: {now}, before: {before}"
        time.sleep(0.2)
    assert tls_cluster.balancer.process.poll() is None
    assert tls_cluster.balancer.process.pid == pid
    # The balancer's client side too: it dials its agent anew with the rotated files.
    tls_cluster.balancer.wait_logs("TLS files changed: dialling agents anew")
    request = to_inference(prompt_request("Hello", max_tokens=2))
    with _secure(listening["inference"], ca) as channel:  # and the new one works end to end
        assert generate(inference_pb2_grpc.InferenceServiceStub(channel), request).pieces
