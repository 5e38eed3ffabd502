"""Credentials on every gRPC surface and the CLI: the agent token, the admin key and clients'
API keys, each refused with UNAUTHENTICATED when missing or wrong, never logged."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import openai
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from openai.types.chat import ChatCompletionMessageParam

from paddler.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    agent_registry_pb2,
    agent_registry_pb2_grpc,
    inference_pb2_grpc,
    management_pb2,
    management_pb2_grpc,
)
from tests.client import COUNTING_PROMPT, error_reason, generate, prompt_request
from tests.cluster import to_inference
from tests.metric_samples import parse_samples, value
from tests.processes import AgentProcess, BalancerProcess, run_paddler

REFUSED = grpc.StatusCode.UNAUTHENTICATED
MODEL = "SmolLM2-135M-Instruct.Q4_1"


@dataclass
class Secrets:
    """The credentials of one secured cluster, and the files that hold them."""

    folder: Path
    agent_token: str
    admin_key: str
    client_key: str
    limited_key: str

    def file(self, name: str, text: str) -> Path:
        """Write ``text`` to a file of the folder."""
        path = self.folder / name
        path.write_text(text)
        return path

    def all(self) -> list[str]:
        """Every secret, to look for in logs."""
        return [self.agent_token, self.admin_key, self.client_key, self.limited_key]


@dataclass
class Secured:
    """A balancer and an agent with every credential configured."""

    balancer: BalancerProcess
    agent: AgentProcess
    keys: Secrets
    token_file: Path
    admin_file: Path
    api_keys_file: Path


def _bearer(credential: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {credential}"),)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    folder = tmp_path_factory.mktemp("credentials")
    keys = Secrets(folder, *(secrets.token_hex(24) for _ in range(4)))
    token_file = keys.file("agent-token", keys.agent_token + "\n")
    admin_file = keys.file("admin-key", keys.admin_key)
    api_keys_file = keys.file(
        "api-keys", f"# clients\nteam_a:{keys.client_key}\nlimited:{keys.limited_key}:1\n"
    )
    balancer = BalancerProcess(
        [
            "--agent-token-file", str(token_file), "--admin-key-file", str(admin_file),
            "--api-keys-file", str(api_keys_file), "--buffered-request-timeout", "600",
        ]
    )  # fmt: skip
    agent = AgentProcess(
        [
            "--name", "trusted", "--balancer", balancer.management, "--threads", "1",
            "--slots", "2", "--context-size", "512", "--agent-token-file", str(token_file),
        ]
    )  # fmt: skip
    try:
        agent.wait_ready()
        balancer.wait_logs("agent registered")
        yield Secured(balancer, agent, keys, token_file, admin_file, api_keys_file)
    finally:
        agent.stop()
        balancer.stop()
    logs = "".join(balancer.lines + agent.lines)
    for secret in keys.all():
        assert secret not in logs, "a credential was logged"


def _refusal(call: object) -> str:
    """Run ``call``; it must fail UNAUTHENTICATED; return its ErrorInfo reason."""
    try:
        assert callable(call)
        result = call()
        if hasattr(result, "__iter__"):
            list(result)
    except grpc.RpcError as error:
        assert isinstance(error, grpc.Call)
        assert error.code() == REFUSED, error.details()
        return error_reason(error)
    raise AssertionError("the call was admitted")


def test_inference_needs_a_client_key(secured: Secured) -> None:
    request = to_inference(prompt_request("Hello", max_tokens=4))
    with grpc.insecure_channel(secured.balancer.inference) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        assert _refusal(lambda: stub.Generate(request)) == "MISSING_CREDENTIAL"
        wrong = _bearer(secrets.token_hex(24))
        assert _refusal(lambda: stub.Generate(request, metadata=wrong)) == "WRONG_CREDENTIAL"
        admin = _bearer(secured.keys.admin_key)  # the admin key is no client key
        assert _refusal(lambda: stub.Generate(request, metadata=admin)) == "WRONG_CREDENTIAL"
        served = stub.Generate(request, metadata=_bearer(secured.keys.client_key))
        assert next(r for r in served if r.HasField("summary")).summary.agent_name == "trusted"
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING  # health stays open
    refused = secured.balancer.logs("credential refused")
    assert refused, "refusals are logged"
    assert all(str(record["peer"]).startswith("ipv4:127.0.0.1") for record in refused)
    deadline = time.monotonic() + 60  # the line follows the stream's end
    while not any(r.get("caller") == "team_a" for r in secured.balancer.logs("request served")):
        assert time.monotonic() < deadline, "the key's name is not on the request's line"
        time.sleep(0.05)


def test_a_key_runs_at_most_its_max_concurrent(secured: Secured) -> None:
    limited = _bearer(secured.keys.limited_key)
    with grpc.insecure_channel(secured.balancer.inference) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        holding = stub.Generate(
            to_inference(prompt_request(COUNTING_PROMPT, max_tokens=400)), metadata=limited
        )
        assert next(holding).HasField("text")  # the key's one request runs
        second = to_inference(prompt_request("Hello", max_tokens=4))
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Generate(second, metadata=limited))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_reason(caught.value) == "API_KEY_CONCURRENCY"
        list(stub.Generate(second, metadata=_bearer(secured.keys.client_key)))  # others go on
        holding.cancel()
        deadline = time.monotonic() + 60
        while True:  # the cancelled stream's count is released when its call ends
            try:
                list(stub.Generate(second, metadata=limited))
                break
            except grpc.RpcError as error:
                assert isinstance(error, grpc.Call)
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert time.monotonic() < deadline, "the cancelled request's count stayed"
                time.sleep(0.05)


def test_management_needs_the_admin_key(secured: Secured) -> None:
    with grpc.insecure_channel(secured.balancer.management) as channel:
        stub = management_pb2_grpc.ManagementServiceStub(channel)
        listing = management_pb2.ListAgentsRequest()
        assert _refusal(lambda: stub.ListAgents(listing)) == "MISSING_CREDENTIAL"
        client = _bearer(secured.keys.client_key)
        assert _refusal(lambda: stub.ListAgents(listing, metadata=client)) == "WRONG_CREDENTIAL"
        token = _bearer(secured.keys.agent_token)  # the agent token opens no management call
        state = management_pb2.SetDesiredStateRequest()
        assert _refusal(lambda: stub.SetDesiredState(state, metadata=token)) == "WRONG_CREDENTIAL"
        agents = stub.ListAgents(listing, metadata=_bearer(secured.keys.admin_key)).agents
        assert [agent.name for agent in agents] == ["trusted"]
    cli = run_paddler("agents", "--address", secured.balancer.management)
    assert cli.returncode == 1
    assert "UNAUTHENTICATED" in cli.stderr
    cli = run_paddler(
        "agents",
        "--address",
        secured.balancer.management,
        "--admin-key-file",
        str(secured.admin_file),
    )
    assert cli.returncode == 0, cli.stderr
    assert "trusted" in cli.stdout


def test_only_the_agent_token_registers_an_agent(secured: Secured) -> None:
    registration = agent_registry_pb2.ConnectRequest(
        registration=agent_registry_pb2.AgentRegistration(name="fake", address="127.0.0.1:9")
    )
    with grpc.insecure_channel(secured.balancer.management) as channel:
        stub = agent_registry_pb2_grpc.AgentRegistryServiceStub(channel)
        assert _refusal(lambda: stub.Connect(iter([registration]))) == "MISSING_CREDENTIAL"
        for credential in (secured.keys.admin_key, secured.keys.client_key):
            connect = stub.Connect(iter([registration]), metadata=_bearer(credential))
            assert _refusal(lambda c=connect: c) == "WRONG_CREDENTIAL"
    # A real agent process with a wrong token never registers, and says why.
    wrong_token = secured.keys.file("wrong-token", secrets.token_hex(24))
    impostor = AgentProcess(
        [
            "--name", "impostor", "--balancer", secured.balancer.management,
            "--agent-token-file", str(wrong_token),
        ]
    )  # fmt: skip
    try:
        impostor.wait_logs("balancer refused the agent token")
    finally:
        impostor.stop()
    with grpc.insecure_channel(secured.balancer.management) as channel:
        management = management_pb2_grpc.ManagementServiceStub(channel)
        admin = _bearer(secured.keys.admin_key)
        agents = management.ListAgents(management_pb2.ListAgentsRequest(), metadata=admin).agents
        assert [agent.name for agent in agents] == ["trusted"]


def test_an_agent_serves_only_the_balancer(secured: Secured) -> None:
    request = prompt_request("Hello", max_tokens=4)
    with grpc.insecure_channel(secured.agent.address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        assert _refusal(lambda: stub.Generate(request)) == "MISSING_CREDENTIAL"
        client = _bearer(secured.keys.client_key)
        assert _refusal(lambda: stub.Generate(request, metadata=client)) == "WRONG_CREDENTIAL"
        status = agent_pb2.GetStatusRequest()
        assert _refusal(lambda: stub.GetStatus(status)) == "MISSING_CREDENTIAL"
        reply = generate(
            _WithMetadata(stub, _bearer(secured.keys.agent_token)), request, timeout=120
        )
        assert reply.summary.agent_name == "trusted"
    samples = parse_samples(_get(secured.agent.metrics))
    refused = {"surface": "paddler.v1.AgentService", "reason": "missing_credential"}
    assert value(samples, "paddler_credentials_refused_total", **refused) >= 2


def test_a_changed_keys_file_is_read_again(secured: Secured) -> None:
    fresh = secrets.token_hex(24)
    request = to_inference(prompt_request("Hello", max_tokens=2))
    original = secured.api_keys_file.read_text()
    secured.keys.limited_key = fresh  # the log check at the end looks for it too
    secured.api_keys_file.write_text(f"team_a:{secured.keys.client_key}\nrotated:{fresh}\n")
    try:
        with grpc.insecure_channel(secured.balancer.inference) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            deadline = time.monotonic() + 30
            while True:  # the file is looked at about once a second
                try:
                    list(stub.Generate(request, metadata=_bearer(fresh)))
                    break
                except grpc.RpcError as error:
                    assert isinstance(error, grpc.Call) and error.code() == REFUSED
                    assert time.monotonic() < deadline, "the new key was never admitted"
                    time.sleep(0.1)
        secured.balancer.wait_logs("API keys reloaded")
    finally:
        secured.api_keys_file.write_text(original)


def test_generate_from_the_cli_with_a_key_file(secured: Secured) -> None:
    address = secured.balancer.inference
    refused = run_paddler("generate", "--address", address, "--max-tokens", "2", "Hi")
    assert refused.returncode == 1
    assert "UNAUTHENTICATED" in refused.stderr
    key_file = secured.keys.file("my-key", secured.keys.client_key)
    served = run_paddler(
        "generate", "--address", address, "--max-tokens", "2", "--api-key-file", str(key_file), "Hi"
    )
    assert served.returncode == 0, served.stderr
    assert "trusted" in served.stderr


class _WithMetadata:
    """A stub whose Generate presents ``metadata``."""

    def __init__(
        self, stub: agent_pb2_grpc.AgentServiceStub, metadata: tuple[tuple[str, str], ...]
    ) -> None:
        self._stub = stub
        self._metadata = metadata

    def Generate(  # noqa: N802 - gRPC's name
        self, request: agent_pb2.GenerateRequest, timeout: float
    ) -> Iterator[agent_pb2.GenerateResponse]:
        return self._stub.Generate(request, timeout=timeout, metadata=self._metadata)


def _get(url: str) -> str:
    return httpx.get(url, timeout=30).text


def test_the_openai_api_takes_the_same_keys(secured: Secured) -> None:
    base_url = f"http://{secured.balancer.listening['openai']}/v1"
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hi"}]
    for key in ("", secrets.token_hex(24), secured.keys.admin_key):
        client = openai.OpenAI(base_url=base_url, api_key=key or "unset", max_retries=0)
        if not key:  # the official client always sends its key: send none at all
            client = client.with_options(default_headers={"Authorization": ""})
        with pytest.raises(openai.AuthenticationError) as caught:
            client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2)
        assert caught.value.status_code == 401
        error = caught.value.body
        assert isinstance(error, dict)
        assert error["type"] == "invalid_request_error"
        assert error["code"] in ("missing_credential", "wrong_credential")
    client = openai.OpenAI(base_url=base_url, api_key=secured.keys.client_key, max_retries=0)
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2)
    assert reply.choices[0].message.content is not None
    chunks = list(
        client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2, stream=True)
    )
    assert chunks
    assert [m.id for m in client.models.list()] == [MODEL]
    health = httpx.get(f"http://{secured.balancer.listening['openai']}/health", timeout=30)
    assert health.status_code == 200  # health stays open
    samples = parse_samples(_get(f"{secured.balancer.web}/metrics"))
    refused = {"surface": "openai", "reason": "wrong_credential"}
    assert value(samples, "paddler_credentials_refused_total", **refused) >= 2


def test_an_agent_refusing_the_balancer_is_no_client_error(tmp_path: Path) -> None:
    token = tmp_path / "agent-token"
    token.write_text(secrets.token_hex(24))
    balancer = BalancerProcess(["--buffered-request-timeout", "5"])  # no agent token of its own
    agent = AgentProcess(
        [
            "--name", "strict", "--balancer", balancer.management, "--threads", "1",
            "--slots", "1", "--context-size", "256", "--agent-token-file", str(token),
        ]
    )  # fmt: skip
    try:
        agent.wait_ready()
        balancer.wait_logs("agent registered")
        request = to_inference(prompt_request("Hello", max_tokens=2))
        with grpc.insecure_channel(balancer.inference) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                list(stub.Generate(request, timeout=60))
        # Not the client's 401: the operator's problem, named in the balancer's log.
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_reason(caught.value) == "AGENT_REFUSED_BALANCER"
        assert balancer.wait_logs("agent refused the balancer's agent token")
    finally:
        agent.stop()
        balancer.stop()
