"""Request bodies are capped while they are read: a body over the cap is refused with a 413 in
the app's own error shape, before more of it is held than the cap, and the balancer stays
well. Against a real balancer (no agent is needed: the cap comes first), and the middleware
in-process with a tiny cap. Also bounded: the OpenAI ``user`` field, and its copy on the
request's log lines."""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from paddler.common.body_limit import DEFAULT_MAX_BODY_BYTES, BodyLimitMiddleware
from tests.metric_samples import parse_samples
from tests.openai_clients import MODEL, bad_request_param, logged
from tests.processes import BalancerProcess

CAP = DEFAULT_MAX_BODY_BYTES
MIB = 1024 * 1024
STREAMED_BYTES = 64 * MIB
TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def balancer() -> Iterator[BalancerProcess]:
    """A balancer without agents whose requests do not wait in the buffer: a request that
    gets past the cap and validation is answered at once (504, no slot)."""
    process = BalancerProcess(["--buffered-request-timeout", "0"])
    try:
        yield process
    finally:
        process.stop()


def _openai_client(balancer: BalancerProcess) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=balancer.openai, api_key="unused", max_retries=0, timeout=TIMEOUT_S
    )


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def _chat_body(content_bytes: int) -> bytes:
    """A chat completion request: ``content_bytes`` of content, and its JSON's own bytes."""
    message = {"role": "user", "content": "x" * content_bytes}
    return json.dumps({"model": MODEL, "messages": [message]}).encode()


def _assert_openai_413(error: dict[str, object]) -> None:
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "request_too_large"
    assert error["param"] is None
    message = str(error["message"])
    assert str(CAP) in message
    assert "--max-request-body" in message
    assert "PADDLER_MAX_REQUEST_BODY" in message


def _refused_embeddings(balancer: BalancerProcess) -> float:
    """Embedding requests the OpenAI API refused for their input, whatever other labels say."""
    samples = parse_samples(httpx.get(f"{balancer.web}/metrics", timeout=TIMEOUT_S).text)
    wanted = {
        ("api", "openai"),
        ("kind", "embed"),
        ("outcome", "refused"),
        ("code", "INVALID_ARGUMENT"),
    }
    return sum(
        count
        for (name, labels), count in samples.items()
        if name == "paddler_requests_total" and wanted <= labels
    )


def _answers_normally(balancer: BalancerProcess) -> None:
    """Health answers, and a small valid request gets the usual answer of a cluster without
    agents (504: no slot freed within the buffer timeout)."""
    base = balancer.openai.removesuffix("/v1")
    assert httpx.get(f"{base}/health", timeout=TIMEOUT_S).status_code == 503
    with _openai_client(balancer) as client, pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi."}], max_tokens=2
        )
    assert (raised.value.status_code, raised.value.code) == (504, "buffer_timeout")


def test_a_body_over_the_cap_is_413_in_openais_shape(balancer: BalancerProcess) -> None:
    content: list[ChatCompletionMessageParam] = [{"role": "user", "content": "x" * (CAP + 1)}]
    with _openai_client(balancer) as client, pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(
            model=MODEL,
            messages=content,
            extra_headers={"X-Request-Id": "too-large"},
        )
    assert raised.value.status_code == 413
    assert raised.value.response.headers["X-Request-Id"] == "too-large"
    assert isinstance(raised.value.body, dict)
    _assert_openai_413(raised.value.body)
    logged(balancer, "request failed", request_id="too-large", status=413)
    _answers_normally(balancer)


def test_a_declared_length_over_the_cap_is_refused_before_any_of_the_body_is_sent(
    balancer: BalancerProcess,
) -> None:
    host, port = balancer.listening["openai"].rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)
    try:
        connection.putrequest("POST", "/v1/embeddings")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(300 * MIB))
        connection.endheaders()  # and not one byte of the 300 MiB
        reply = connection.getresponse()
        status, body = reply.status, json.loads(reply.read())
    finally:
        connection.close()
    assert status == 413
    _assert_openai_413(body["error"])
    assert _refused_embeddings(balancer) >= 1
    _answers_normally(balancer)


def test_a_streamed_body_past_the_cap_is_413_and_is_not_held(balancer: BalancerProcess) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        yield b'{"model": "m", "messages": [{"role": "user", "content": "'
        for _ in range(STREAMED_BYTES // MIB):
            yield b"x" * MIB
        yield b'"}]}'

    pid = balancer.process.pid
    _answers_normally(balancer)
    before = _rss_bytes(pid)
    reply = httpx.post(
        f"{balancer.openai}/chat/completions",
        content=chunks(),
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT_S,
    )
    grown = _rss_bytes(pid) - before
    assert "content-length" not in reply.request.headers
    assert reply.status_code == 413
    _assert_openai_413(reply.json()["error"])
    assert grown < STREAMED_BYTES // 2, f"the balancer grew by {grown} bytes"
    _answers_normally(balancer)


def test_a_body_just_under_the_cap_reaches_validation(balancer: BalancerProcess) -> None:
    overhead = len(_chat_body(0))
    body = _chat_body(CAP - overhead - 1)
    assert len(body) == CAP - 1
    reply = httpx.post(
        f"{balancer.openai}/chat/completions",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT_S,
    )
    assert reply.status_code == 400  # the conversation is over the input cap, not the body's
    error = reply.json()["error"]
    assert error["code"] == "invalid_argument"
    assert error["param"] == "messages"


def test_the_admin_panel_refuses_a_state_over_the_cap_with_its_own_413(
    balancer: BalancerProcess,
) -> None:
    before = httpx.get(f"{balancer.web}/api/state", timeout=TIMEOUT_S).json()
    reply = httpx.put(
        f"{balancer.web}/api/state",
        content=b'{"chatTemplateOverride": "' + b"x" * CAP + b'"}',
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT_S,
    )
    assert reply.status_code == 413
    error = reply.json()["error"]
    assert error["field"] is None
    assert str(CAP) in error["message"]
    assert "--max-request-body" in error["message"]
    assert httpx.get(f"{balancer.web}/api/state", timeout=TIMEOUT_S).json() == before


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/chat/completions", {"messages": [{"role": "user", "content": "Hi."}]}),
        ("/completions", {"prompt": "Hi."}),
        ("/responses", {"input": "Hi."}),
        ("/embeddings", {"input": "Hi."}),
    ],
)
def test_a_user_over_256_characters_is_a_400_naming_it(
    balancer: BalancerProcess, path: str, body: dict[str, object]
) -> None:
    with _openai_client(balancer) as client:
        too_long = {"model": MODEL, **body, "user": "u" * 257}
        assert bad_request_param(client, path, too_long) == "user"


def test_a_long_user_is_shortened_on_the_log_lines(balancer: BalancerProcess) -> None:
    user = "u" * 200
    with _openai_client(balancer) as client, pytest.raises(openai.APIStatusError):
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Hi."}],
            user=user,
            extra_headers={"X-Request-Id": "long-user"},
        )
    record = logged(balancer, "request failed", request_id="long-user")
    assert record["user"] == "u" * 64 + "... (truncated, 200 characters)"


# The middleware in-process, with a tiny cap.

TINY_CAP = 64


async def _echo_size(request: Request) -> Response:
    return PlainTextResponse(str(len(await request.body())))


def _refusal(scope: Scope, max_bytes: int) -> Response:
    return JSONResponse({"refused": scope["path"], "cap": max_bytes}, status_code=413)


async def _ignore_body(request: Request) -> Response:
    del request
    return PlainTextResponse("ok")


def _tiny_app() -> Starlette:
    app = Starlette(
        routes=[
            Route("/echo", _echo_size, methods=["POST"]),
            Route("/ignore", _ignore_body, methods=["POST"]),
        ]
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=TINY_CAP, refusal=_refusal)
    return app


def _post(content: bytes | AsyncIterator[bytes], path: str = "/echo") -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=_tiny_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.post(path, content=content)

    return asyncio.run(send())


@pytest.mark.parametrize("size", [0, 1, TINY_CAP])
def test_a_body_within_the_cap_reaches_the_app_whole(size: int) -> None:
    reply = _post(b"x" * size)
    assert (reply.status_code, reply.text) == (200, str(size))


def test_a_declared_length_over_the_cap_gets_the_apps_refusal() -> None:
    reply = _post(b"x" * (TINY_CAP + 1))
    assert reply.status_code == 413
    assert reply.json() == {"refused": "/echo", "cap": TINY_CAP}


def test_a_streamed_body_is_read_no_further_than_past_the_cap() -> None:
    pulled: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for index in range(100):
            pulled.append(index)
            yield b"x" * 10

    streamed = _post(chunks())
    assert streamed.status_code == 413
    assert len(pulled) == TINY_CAP // 10 + 1  # the chunk that passed the cap, and no more
    within: list[bytes] = [b"x" * 10] * (TINY_CAP // 10)

    async def few() -> AsyncIterator[bytes]:
        for chunk in within:
            yield chunk

    reply = _post(few())
    assert (reply.status_code, reply.text) == (200, str(sum(map(len, within))))


def test_a_route_that_reads_no_body_makes_the_middleware_read_none() -> None:
    pulled: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for index in range(100):
            pulled.append(index)
            yield b"x" * 10

    reply = _post(chunks(), "/ignore")
    assert (reply.status_code, reply.text) == (200, "ok")
    assert len(pulled) <= 1  # nothing read ahead (the transport may hand over its first)
