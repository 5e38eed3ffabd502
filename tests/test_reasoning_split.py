"""The streaming reasoning splitter: every way of cutting the text gives the same split."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paddler.agent.reasoning_split import Kind, ReasoningSplit, starts_in_reasoning

CASES = [
    # (text, where the prompt left the reply, reasoning, text)
    ("<think>\nLet me think.\n</think>\n\nYes, it is.", None, "Let me think.", "Yes, it is."),
    ("  <think>a</think>b", None, "a", "b"),
    ("<think></think>answer", None, "", "answer"),
    ("<think>\n\n</think>\n\nanswer", None, "", "answer"),
    ("plain answer", None, "", "plain answer"),
    ("Hello <think> in the middle", None, "", "Hello <think> in the middle"),
    ("<thin>k", None, "", "<thin>k"),
    ("  <thi", None, "", "  <thi"),  # ended before the tag was whole: text as it came
    ("idea</think>answer", True, "idea", "answer"),
    ("\nidea\n</think>\nanswer", True, "idea", "answer"),
    ("still thinking </thi", True, "still thinking </thi", ""),
    ("a < b and </ c", True, "a < b and </ c", ""),
    ("answer </think> more", False, "", "answer </think> more"),
    ("\n\nanswer", False, "", "answer"),
    ("<think>one</think>two<think>three</think>", None, "one", "two<think>three</think>"),
]


def split(pieces: list[str], start: bool | None) -> tuple[str, str, list[tuple[Kind, str]]]:
    splitter = ReasoningSplit(start)
    out = [piece for text in pieces for piece in splitter.feed(text)] + splitter.flush()
    reasoning = "".join(text for kind, text in out if kind is Kind.REASONING)
    reply = "".join(text for kind, text in out if kind is Kind.TEXT)
    return reasoning, reply, out


@pytest.mark.parametrize(("text", "start", "reasoning", "reply"), CASES)
def test_every_cut_in_two_and_three_gives_the_same_split(
    text: str, start: bool | None, reasoning: str, reply: str
) -> None:
    assert split([text], start)[:2] == (reasoning, reply)
    for cut in range(len(text) + 1):
        assert split([text[:cut], text[cut:]], start)[:2] == (reasoning, reply), cut
    for first, second in itertools.combinations(range(len(text) + 1), 2):
        pieces = [text[:first], text[first:second], text[second:]]
        assert split(pieces, start)[:2] == (reasoning, reply), (first, second)


def test_character_by_character_sends_reasoning_before_the_tag_is_whole() -> None:
    text = "<think>ab</think>cd"
    reasoning, reply, out = split(list(text), None)
    assert (reasoning, reply) == ("ab", "cd")
    kinds = [kind for kind, _ in out]
    assert kinds == sorted(kinds, key=lambda kind: kind is Kind.TEXT)  # reasoning first
    assert all(piece for _, piece in out)  # no empty pieces


def test_a_partial_tag_is_held_not_sent() -> None:
    splitter = ReasoningSplit(None)
    assert splitter.feed("<th") == []
    assert splitter.feed("ink>idea </th") == [(Kind.REASONING, "idea")]
    assert splitter.in_reasoning
    assert splitter.feed("ink>ok") == [(Kind.TEXT, "ok")]
    assert not splitter.in_reasoning


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("<|im_start|>assistant\n<think>\n", True),
        ("<|im_start|>assistant\n<think>\n\n</think>\n\n", False),
        ("<|im_start|>assistant\n", None),
        ("<start_of_turn>model\n", None),
    ],
)
def test_where_the_prompt_leaves_the_reply(prompt: str, expected: bool | None) -> None:
    assert starts_in_reasoning(prompt) is expected


@given(
    reasoning=st.text(alphabet="ab <>/\nthink", max_size=30).filter(lambda t: "</think>" not in t),
    reply=st.text(alphabet="ab <>/\nthink", max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=80), max_size=6),
)
def test_any_cuts_of_a_tagged_reply(reasoning: str, reply: str, cuts: list[int]) -> None:
    text = f"<think>{reasoning}</think>{reply}"
    bounds = sorted({min(cut, len(text)) for cut in cuts})
    pieces = [text[a:b] for a, b in zip([0, *bounds], [*bounds, len(text)], strict=True)]
    assert split(pieces, None)[:2] == (reasoning.strip(), reply.lstrip())
