"""Reasoning split from the reply, end to end, through gRPC, the OpenAI API and the CLI.

The packaged SmolLM2 serves under a thinking chat template (the desired state's override,
written like Qwen 3's: ``enable_thinking`` off closes the reasoning in the prompt, on opens it;
a ``reasoning_effort`` is written into the prompt and opens it too). SmolLM2 is no reasoning
model: where a test needs the ``<think>...</think> reply`` shape, a GBNF grammar forces the
model's output into it. These tests check the split, the events, the counts and the switches;
the quality of any reasoning cannot be checked here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from paddler.v1 import agent_pb2, desired_state_pb2, generation_pb2
from tests.client import conversation_request
from tests.cluster import Cluster, cluster, to_inference
from tests.openai_clients import MODEL, bad_request_param, client_of
from tests.panel_page import TIMEOUT_MS, panel_page
from tests.processes import run_paddler

THINKING_TEMPLATE = """\
{%- if reasoning_effort is defined %}<|im_start|>system
Reasoning: {{ reasoning_effort }}<|im_end|>
{% endif %}
{%- for message in messages %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% if enable_thinking is defined and not enable_thinking %}<think>

</think>

{% elif enable_thinking is defined or reasoning_effort is defined %}<think>
{% endif %}
{%- endif %}"""
# The reply opens its reasoning itself; or, after a prompt that opened it, only closes it.
THINK = 'root ::= "<think>" [a-z ]{10,60} "</think>" [a-z ]{5,40}\n'
CLOSE = 'root ::= [a-z ]{10,60} "</think>" [a-z ]{5,40}\n'
WORDS = re.compile(r"[a-z ]+")
ASK = "Is the sky blue?"


@pytest.fixture(scope="module")
def thinking() -> Iterator[Cluster]:
    """One balancer and one agent serving SmolLM2 under the thinking template."""
    with cluster(("solo", 2)) as c:
        state = desired_state_pb2.DesiredState(
            model=desired_state_pb2.ModelSource(packaged="smollm2-135m"),
            chat_template_override=THINKING_TEMPLATE,
        )
        c.wait_applied(c.set_state(state))
        yield c


def _request(
    grammar: str | None = THINK, max_tokens: int = 200, **fields: object
) -> agent_pb2.GenerateRequest:
    request = conversation_request([("user", ASK)], max_tokens=max_tokens)
    if grammar is not None:
        request.input.grammar.gbnf = grammar
    for name, value in fields.items():
        setattr(request.input, name, value)
    return request


def _events(
    c: Cluster, request: agent_pb2.GenerateRequest
) -> tuple[list[tuple[str, str, int]], generation_pb2.GenerationSummary]:
    """Every (kind, piece, tokens listed) in order, and the summary."""
    events: list[tuple[str, str, int]] = []
    summary = None
    for response in c.inference.Generate(to_inference(request), timeout=120):
        kind = response.WhichOneof("event")
        if kind == "summary":
            summary = response.summary
        elif kind is not None:
            events.append((kind, str(getattr(response, kind)), len(response.tokens)))
    assert summary is not None
    return events, summary


def _joined(events: list[tuple[str, str, int]], kind: str) -> str:
    return "".join(piece for k, piece, _ in events if k == kind)


def test_reasoning_streams_first_without_its_tags_and_is_counted(thinking: Cluster) -> None:
    events, summary = _events(thinking, _request())
    kinds = [kind for kind, _, _ in events]
    assert set(kinds) == {"reasoning", "text"}
    assert kinds == sorted(kinds)  # every reasoning piece before the first text piece
    reasoning, text = _joined(events, "reasoning"), _joined(events, "text")
    assert WORDS.fullmatch(reasoning) and reasoning == reasoning.strip()
    assert WORDS.fullmatch(text) and text == text.lstrip()
    listed = sum(tokens for _, _, tokens in events)
    in_reasoning = sum(tokens for kind, _, tokens in events if kind == "reasoning")
    assert summary.usage.reasoning_tokens == in_reasoning
    assert 0 < in_reasoning < listed <= summary.usage.completion_tokens


def test_format_none_sends_the_tags_as_text(thinking: Cluster) -> None:
    events, summary = _events(
        thinking, _request(reasoning_format=generation_pb2.REASONING_FORMAT_NONE)
    )
    assert {kind for kind, _, _ in events} == {"text"}
    raw = _joined(events, "text")
    assert re.fullmatch(r"<think>[a-z ]+</think>[a-z ]+", raw), raw
    assert summary.usage.reasoning_tokens == 0


def test_thinking_off_closes_the_reasoning_in_the_prompt(thinking: Cluster) -> None:
    _, default = _events(thinking, _request())
    events, summary = _events(thinking, _request(enable_thinking=False))
    # The template closed the reasoning: what the grammar forces after it is the reply's text.
    assert {kind for kind, _, _ in events} == {"text"}
    assert _joined(events, "text").startswith("<think>")
    assert summary.usage.prompt_tokens > default.usage.prompt_tokens


def test_thinking_on_opens_the_reasoning_in_the_prompt(thinking: Cluster) -> None:
    events, summary = _events(thinking, _request(CLOSE, enable_thinking=True))
    kinds = [kind for kind, _, _ in events]
    assert kinds[0] == "reasoning" and "text" in kinds and kinds == sorted(kinds)
    assert WORDS.fullmatch(_joined(events, "reasoning"))
    assert WORDS.fullmatch(_joined(events, "text"))
    assert summary.usage.reasoning_tokens > 0


def test_a_json_schema_holds_after_the_reasoning_not_over_it(thinking: Cluster) -> None:
    """The prompt opens the reasoning and SmolLM2 never closes it in 16 tokens: under a schema
    that held from the first token the reply would open with "{"; the reasoning is free."""
    request = _request(None, max_tokens=16, enable_thinking=True)
    request.input.grammar.json_schema = '{"type": "object"}'
    events, summary = _events(thinking, request)
    assert {kind for kind, _, _ in events} == {"reasoning"}
    assert not _joined(events, "reasoning").startswith("{")
    assert summary.finish_reason == generation_pb2.FINISH_REASON_MAX_TOKENS


def test_openai_chat_returns_reasoning_content(thinking: Cluster) -> None:
    with client_of(thinking) as client:
        reply = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": ASK}],
            max_tokens=200,
            temperature=0,
            extra_body={"grammar": THINK},
        )
        message = reply.choices[0].message
        reasoning = (message.model_extra or {}).get("reasoning_content")
        assert isinstance(reasoning, str) and WORDS.fullmatch(reasoning)
        assert message.content and WORDS.fullmatch(message.content)
        assert reply.usage is not None and reply.usage.completion_tokens_details is not None
        counted = reply.usage.completion_tokens_details.reasoning_tokens or 0
        assert 0 < counted < reply.usage.completion_tokens

        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": ASK}],
            max_tokens=200,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"grammar": THINK},
        )
        kinds, usage = [], None
        for chunk in stream:
            usage = chunk.usage or usage
            for choice in chunk.choices:
                if (choice.delta.model_extra or {}).get("reasoning_content"):
                    kinds.append("reasoning")
                if choice.delta.content:
                    kinds.append("text")
        assert kinds[0] == "reasoning" and "text" in kinds and kinds == sorted(kinds)
        assert usage is not None and usage.completion_tokens_details is not None
        assert (usage.completion_tokens_details.reasoning_tokens or 0) > 0

        off = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": ASK}],
            max_tokens=200,
            temperature=0,
            extra_body={"grammar": THINK, "chat_template_kwargs": {"enable_thinking": False}},
        )
        assert "reasoning_content" not in (off.choices[0].message.model_extra or {})
        assert (off.choices[0].message.content or "").startswith("<think>")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"chat_template_kwargs": {"tools_in_user_message": True}}, "chat_template_kwargs"),
        ({"chat_template_kwargs": {"enable_thinking": "maybe"}}, "chat_template_kwargs"),
        ({"reasoning_format": "everything"}, "reasoning_format"),
    ],
)
def test_openai_chat_refuses_bad_reasoning_fields(
    thinking: Cluster, body: dict[str, object], param: str
) -> None:
    request = {"model": MODEL, "messages": [{"role": "user", "content": ASK}], **body}
    with client_of(thinking) as client:
        named = bad_request_param(client, "/chat/completions", request)
    assert named is not None and named.startswith(param)


def test_openai_responses_return_a_reasoning_item(thinking: Cluster) -> None:
    with client_of(thinking) as client:
        plain = client.responses.create(model=MODEL, input=ASK, max_output_tokens=24)
        # An effort is written into the prompt and opens the reasoning (this template's way).
        response = client.responses.create(
            model=MODEL, input=ASK, max_output_tokens=24, reasoning={"effort": "low"}
        )
        assert response.usage is not None and plain.usage is not None
        assert response.usage.input_tokens > plain.usage.input_tokens
        item = response.output[0]
        assert item.type == "reasoning"
        assert item.content and item.content[0].text.strip()
        assert response.usage.output_tokens_details.reasoning_tokens > 0

        events = list(
            client.responses.create(
                model=MODEL,
                input=ASK,
                max_output_tokens=24,
                reasoning={"effort": "low"},
                stream=True,
            )
        )
        kinds = [event.type for event in events]
        added = next(event for event in events if event.type == "response.output_item.added")
        assert added.item.type == "reasoning" and added.output_index == 0
        deltas = [event.delta for event in events if event.type == "response.reasoning_text.delta"]
        done = next(event for event in events if event.type == "response.reasoning_text.done")
        assert deltas and done.text == "".join(deltas)
        assert kinds.index("response.reasoning_text.done") > kinds.index(
            "response.reasoning_text.delta"
        )
        final = events[-1]
        assert final.type in ("response.completed", "response.incomplete")
        assert final.response.output[0].type == "reasoning"

        named = bad_request_param(
            client, "/responses", {"model": MODEL, "input": ASK, "reasoning": {"summary": "auto"}}
        )
        assert named == "reasoning.summary"


def test_the_cli_prints_the_reply_and_sends_the_reasoning_to_stderr(
    thinking: Cluster, tmp_path: Path
) -> None:
    grammar = tmp_path / "think.gbnf"
    grammar.write_text(THINK)
    address = thinking.balancer.inference
    reply = run_paddler("generate", "--address", address, "--grammar", str(grammar), ASK)
    assert reply.returncode == 0, reply.stderr
    assert WORDS.fullmatch(reply.stdout.strip())
    assert "reasoning)" in reply.stderr
    refused = run_paddler("generate", "--address", address, "--raw", "--thinking", ASK)
    assert refused.returncode == 2
    assert "--raw" in refused.stderr


def test_the_playground_shows_the_reasoning_apart(thinking: Cluster) -> None:
    with panel_page(thinking.balancer.web) as (page, errors):
        page.fill("#max-tokens", "12")
        page.fill("#temperature", "0")
        # On: the template opens the reasoning, and SmolLM2 never closes it in 12 tokens.
        page.select_option("#thinking", "on")
        page.fill("#prompt", ASK)
        page.click("#prompt-form button[type=submit]")
        summary = page.locator("#summary")
        expect(summary).to_contain_text("reasoning)", timeout=TIMEOUT_MS)
        first = page.locator(".turn.assistant").nth(0)
        expect(first.locator("details.reasoning")).to_be_visible()
        assert first.locator("details.reasoning div").inner_text().strip()
        # Off: the template closes it; the reply is all text and no reasoning is shown.
        page.select_option("#thinking", "off")
        page.fill("#prompt", ASK)
        page.click("#prompt-form button[type=submit]")
        second = page.locator(".turn.assistant").nth(1)
        # (send() clears the summary's class before it asks: "ok" is this reply's.)
        expect(summary).to_have_class("ok", timeout=TIMEOUT_MS)
        expect(summary).not_to_contain_text("reasoning)")
        expect(second.locator("details.reasoning")).to_be_hidden()
        assert second.locator(".text").inner_text().strip()
    assert errors == []
