"""The OpenAI-compatible API with the official `openai` client: chat completions, streaming and
not, models, health, request ids, and every error as the client's own exception."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.cluster import Cluster, cluster
from tests.openai_clients import MODEL, bad_request_param, client_of, logged

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Tell me about the sea."}]


@pytest.fixture(scope="module")
def shared() -> Iterator[Cluster]:
    """One balancer with one 3-slot agent."""
    with cluster(("solo", 3)) as c:
        yield c


@pytest.fixture(scope="module")
def client(shared: Cluster) -> Iterator[openai.OpenAI]:
    with client_of(shared) as c:
        yield c


def test_a_chat_completion_has_content_and_usage_that_adds_up(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=5)
    assert reply.object == "chat.completion"
    assert reply.model == MODEL
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason == "length"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 5
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 5
    served = (choice.model_extra or {})["paddler"]
    assert served["agent"] == "solo"
    assert served["time_to_first_token_ms"] > 0


def test_greedy_decoding_gives_the_same_text_twice(client: openai.OpenAI) -> None:
    texts = {
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12, temperature=0)
        .choices[0]
        .message.content
        for _ in range(2)
    }
    assert len(texts) == 1


def test_a_stop_string_ends_the_text_before_it(client: openai.OpenAI) -> None:
    full = (
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=24, temperature=0)
        .choices[0]
        .message.content
    )
    assert full is not None
    words = full.split()
    assert len(words) >= 4, full
    stop = words[3]
    stopped = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=24, temperature=0, stop=[stop]
    ).choices[0]
    assert stopped.finish_reason == "stop"
    assert stopped.message.content == full[: full.index(stop)]


def test_n_choices_run_at_once_and_their_tokens_add_up(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4, n=3)
    assert [choice.index for choice in reply.choices] == [0, 1, 2]
    assert all(choice.message.content for choice in reply.choices)
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 12


def test_a_stream_sends_the_role_then_content_then_the_finish_reason_and_usage(
    client: openai.OpenAI,
) -> None:
    whole = (
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=10, temperature=0)
        .choices[0]
        .message.content
    )
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=HELLO,
            max_tokens=10,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length"
    assert finishes.count("length") == 1
    served = [(c.choices[0].model_extra or {}).get("paddler") for c in chunks if c.choices]
    assert served[:-1] == [None] * (len(served) - 1)
    assert served[-1] is not None
    assert served[-1]["agent"] == "solo"
    assert served[-1]["time_to_first_token_ms"] > 0
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 10


def test_the_async_client_streams_too(shared: Cluster) -> None:
    async def run() -> str:
        async with openai.AsyncOpenAI(
            base_url=shared.balancer.openai, api_key="unused", max_retries=0
        ) as client:
            stream = await client.chat.completions.create(
                model=MODEL, messages=HELLO, max_tokens=6, stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream])

    assert asyncio.run(run())


def test_models_lists_the_served_model_and_unknown_ones_are_not_found(
    client: openai.OpenAI,
) -> None:
    assert [model.id for model in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).owned_by == "paddler"
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("gpt-4o")
    assert raised.value.code == "model_not_found"


def test_health_is_ok_while_an_agent_serves(shared: Cluster) -> None:
    base = shared.balancer.openai.removesuffix("/v1")
    assert httpx.get(f"{base}/health").status_code == 200


def test_a_model_the_cluster_does_not_serve_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert raised.value.status_code == 404
    assert raised.value.code == "model_not_found"
    assert MODEL in raised.value.message


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"top_p": 3}, "top_p"),
        ({"temperature": -1}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 9}, "n"),
        ({"seed": -1}, "seed"),
        ({"tools": [{"type": "function", "function": {"name": "f g"}}]},
         "tools[0].function.name"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema",
                              "json_schema": {"name": "x", "schema": {"type": "nope"}}}},
         "response_format.json_schema.schema"),
        ({"response_format": {"type": "json_object"}, "grammar": 'root ::= "a"'}, "grammar"),
        ({"json_schema": {"type": "object"}, "grammar": 'root ::= "a"'}, "grammar"),
        ({"grammar": "root ::= ("}, "grammar"),
        ({"logprobs": True}, "logprobs"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"stop": ["x"] * 20}, "stop"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
         "messages[0].content[0].image_url"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
         "messages[0].content[0].type"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": []}, "messages"),
    ],
)  # fmt: skip
def test_a_bad_field_is_a_bad_request_that_names_it(
    client: openai.OpenAI, extra: dict[str, object], param: str
) -> None:
    body = {"model": MODEL, "messages": HELLO, **extra}
    assert bad_request_param(client, "/chat/completions", body) == param


def test_the_request_id_is_honoured_returned_and_logged(shared: Cluster) -> None:
    reply = httpx.post(
        f"{shared.balancer.openai}/chat/completions",
        json={"model": MODEL, "messages": HELLO, "max_tokens": 2},
        headers={"X-Request-Id": "trace-42"},
        timeout=600,
    )
    assert reply.status_code == 200
    assert reply.headers["X-Request-Id"] == "trace-42"
    assert reply.json()["id"] == "chatcmpl-trace-42"
    assert logged(shared.balancer, "request served", request_id="trace-42")["api"] == "openai"


def test_the_user_is_on_the_request_s_log_line(shared: Cluster, client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2, user="alice")
    request_id = reply.id.removeprefix("chatcmpl-")
    assert logged(shared.balancer, "request served", request_id=request_id)["user"] == "alice"
