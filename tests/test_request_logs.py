"""Every request's log lines say which call it was: the API, the endpoint, the method, whether
the reply streamed, the model, the client's address, the status and the request id, for gRPC,
the OpenAI API and the panel alike, served or refused."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import httpx
import openai
import pytest

from paddler.v1 import inference_pb2
from tests.client import prompt_request
from tests.cluster import Cluster, cluster, to_inference
from tests.processes import LOG_TIMEOUT_S, BalancerProcess

MODEL = "SmolLM2-135M-Instruct.Q4_1"


@pytest.fixture(scope="module")
def shared() -> Iterator[Cluster]:
    with cluster(("solo", 2)) as c:
        yield c


def _line(balancer: BalancerProcess, event: str, request_id: str) -> dict[str, object]:
    """The one line of ``event`` for ``request_id`` (waiting for it)."""
    deadline = time.monotonic() + LOG_TIMEOUT_S
    while not (lines := [r for r in balancer.logs(event) if r.get("request_id") == request_id]):
        assert time.monotonic() < deadline, f"no {event!r} line for {request_id}"
        time.sleep(0.02)
    [line] = lines
    return line


def _identifies(line: dict[str, object], **expected: object) -> None:
    for field, value in expected.items():
        assert line.get(field) == value, (field, line)


def test_grpc_lines_name_the_method_the_client_and_the_status(shared: Cluster) -> None:
    request = to_inference(prompt_request("Count: 1, 2,", max_tokens=4))
    request.request_id = "grpc-served"
    list(shared.inference.Generate(request))
    line = _line(shared.balancer, "request served", "grpc-served")
    _identifies(
        line,
        api="grpc",
        endpoint="/paddler.v1.InferenceService/Generate",
        method="POST",
        streamed=True,
        status="OK",
        model=MODEL,
    )
    assert str(line["client"]).startswith("ipv4:127.0.0.1:")
    # The agent's own line of the same request names the agent's endpoint.
    agent_line = next(
        r
        for r in shared.agents["solo"].wait_logs("request served")
        if r.get("request_id") == "grpc-served"
    )
    _identifies(agent_line, api="grpc", endpoint="/paddler.v1.AgentService/Generate")

    refused = to_inference(prompt_request("Hi", max_tokens=0))
    refused.request_id = "grpc-refused"
    with pytest.raises(grpc.RpcError):
        list(shared.inference.Generate(refused))
    line = _line(shared.balancer, "request rejected", "grpc-refused")
    _identifies(line, endpoint="/paddler.v1.InferenceService/Generate", status="INVALID_ARGUMENT")

    embed = inference_pb2.InferenceServiceEmbedRequest(request_id="grpc-embed")
    embed.input.texts.append("a sentence")
    shared.inference.Embed(embed)
    line = _line(shared.balancer, "embeddings served", "grpc-embed")
    _identifies(line, endpoint="/paddler.v1.InferenceService/Embed", streamed=False, status="OK")


def test_openai_lines_name_the_endpoint_the_model_and_whether_it_streamed(shared: Cluster) -> None:
    client = openai.OpenAI(base_url=shared.balancer.openai, api_key="unused", max_retries=0)
    chunks = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=4,
        stream=True,
        extra_headers={"X-Request-Id": "chat-streamed"},
    )
    list(chunks)
    line = _line(shared.balancer, "request served", "chat-streamed")
    _identifies(
        line,
        api="openai",
        endpoint="/v1/chat/completions",
        method="POST",
        streamed=True,
        status=200,
        model=MODEL,
    )
    assert str(line["client"]).startswith("127.0.0.1:")

    client.completions.create(
        model=MODEL, prompt="Hi", max_tokens=4, extra_headers={"X-Request-Id": "completion"}
    )
    line = _line(shared.balancer, "request served", "completion")
    _identifies(line, endpoint="/v1/completions", streamed=False, status=200)

    client.embeddings.create(model=MODEL, input="Hi", extra_headers={"X-Request-Id": "embed"})
    line = _line(shared.balancer, "embeddings served", "embed")
    _identifies(line, api="openai", endpoint="/v1/embeddings", streamed=False, model=MODEL)

    with pytest.raises(openai.BadRequestError):
        client.completions.create(
            model=MODEL, prompt="Hi", max_tokens=-1, extra_headers={"X-Request-Id": "refused"}
        )
    line = _line(shared.balancer, "request failed", "refused")
    _identifies(line, api="openai", endpoint="/v1/completions", method="POST", status=400)


def test_panel_lines_name_the_panel_endpoint(shared: Cluster) -> None:
    before = len(shared.balancer.logs("request served"))
    reply = httpx.post(
        f"{shared.balancer.web}/api/generate",
        json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        timeout=120,
    )
    assert reply.status_code == 200, reply.text
    lines = shared.balancer.wait_logs("request served", before + 1)
    [line] = [r for r in lines[before:] if r.get("api") == "web"]
    _identifies(line, endpoint="/api/generate", method="POST", streamed=True, status=200)
    assert line["request_id"] and str(line["client"]).startswith("127.0.0.1:")
