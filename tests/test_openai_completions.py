"""``/v1/completions`` with the official `openai` client: one prompt or many, ``n``, streaming."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.openai_clients import MODEL, bad_request_param, openai_cluster

STORY = "Once upon a time, in a small village by the sea, there lived an old fisherman who"


@pytest.fixture(scope="module")
def client() -> Iterator[openai.OpenAI]:
    with openai_cluster(4) as client:
        yield client


def test_a_completion_continues_the_prompt_with_usage(client: openai.OpenAI) -> None:
    reply = client.completions.create(model=MODEL, prompt=STORY, max_tokens=6, temperature=0)
    assert reply.object == "text_completion"
    assert reply.choices[0].text
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 6


def test_each_prompt_of_a_list_gets_n_choices_and_counts_once(client: openai.OpenAI) -> None:
    other = "The recipe for bread is"
    reply = client.completions.create(
        model=MODEL, prompt=[STORY, other], max_tokens=5, temperature=0, n=2
    )
    assert [choice.index for choice in reply.choices] == [0, 1, 2, 3]
    assert all(choice.text for choice in reply.choices)
    alone = client.completions.create(model=MODEL, prompt=other, max_tokens=1)
    assert reply.usage is not None
    assert alone.usage is not None
    assert reply.usage.completion_tokens == 20
    single = client.completions.create(model=MODEL, prompt=STORY, max_tokens=1)
    assert single.usage is not None
    assert reply.usage.prompt_tokens == single.usage.prompt_tokens + alone.usage.prompt_tokens


def test_a_streamed_completion_matches_the_whole_one(client: openai.OpenAI) -> None:
    whole = client.completions.create(model=MODEL, prompt=STORY, max_tokens=8, temperature=0)
    events = list(
        client.completions.create(
            model=MODEL,
            prompt=STORY,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(event.choices[0].text for event in events if event.choices)
    assert text == whole.choices[0].text
    finished = [e.choices[0] for e in events if e.choices][-1]
    assert finished.finish_reason == "length"
    assert (finished.model_extra or {})["paddler"]["time_to_first_token_ms"] > 0
    assert (whole.choices[0].model_extra or {})["paddler"]["agent"]
    assert events[-1].usage is not None
    assert events[-1].usage.completion_tokens == 8


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"echo": True}, "echo"),
        ({"suffix": "end"}, "suffix"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": ["a", ""]}, "prompt[1]"),
        ({"prompt": ["a"] * 5, "n": 2}, "prompt"),
        ({"logprobs": 2}, "logprobs"),
    ],
)
def test_what_completions_do_not_serve_is_a_bad_request_naming_it(
    client: openai.OpenAI, extra: dict[str, object], param: str
) -> None:
    body = {"model": MODEL, "prompt": STORY, "max_tokens": 2, **extra}
    assert bad_request_param(client, "/completions", body) == param
