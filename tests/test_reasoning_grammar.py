"""A JSON schema holds after the reasoning, not over it: the composed grammar, through the
model's real vocabulary (llguidance's matcher, token by token)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from llguidance import LLMatcher, LLTokenizer

from paddler.agent.default_model import default_model_path
from paddler.agent.llama_model import LlamaModel
from paddler.agent.reasoning_grammar import after_reasoning
from paddler.common.grammar import GRAMMAR_LIMITS, compile_grammar
from paddler.v1 import generation_pb2

SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "integer"}},
    "required": ["a"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def tokenizer() -> Iterator[LLTokenizer]:
    model = LlamaModel(default_model_path())
    yield model.grammars.prepare()
    model.close()


def _schema_grammar() -> str:
    compiled = compile_grammar(generation_pb2.Grammar(json_schema=json.dumps(SCHEMA)))
    assert compiled is not None
    return compiled


def _matches(tokenizer: LLTokenizer, grammar: str, text: str) -> tuple[bool, bool]:
    """Whether ``text`` is allowed token by token, and whether the grammar is then complete."""
    matcher = LLMatcher(tokenizer, grammar, limits=GRAMMAR_LIMITS)
    allowed = bool(matcher.consume_tokens(tokenizer.tokenize_str(text)))
    return allowed, allowed and bool(matcher.is_accepting())


@pytest.mark.parametrize(
    ("text", "allowed", "complete"),
    [
        ('{"a":1}', True, True),  # no reasoning: the schema from the first token
        ('<think>let me see</think>\n\n{"a":2}', True, True),
        ('<think>a < b, and </thi is not the end</think>{"a":3}', True, True),
        ("<think>still thinking about it", True, False),
        ('<think>done</think>{"b":1}', False, False),  # the schema holds after it
        ("hello", False, False),  # no free text outside the reasoning
    ],
)
def test_a_reply_that_may_open_its_reasoning(
    tokenizer: LLTokenizer, text: str, allowed: bool, complete: bool
) -> None:
    grammar = after_reasoning(_schema_grammar(), in_reasoning=False)
    assert _matches(tokenizer, grammar, text) == (allowed, complete)


@pytest.mark.parametrize(
    ("text", "allowed", "complete"),
    [
        ('the prompt opened it</think>\n{"a":4}', True, True),
        ('{"a":5}', True, False),  # inside the reasoning this is free text, not the reply
        ("</think>no json", False, False),
    ],
)
def test_a_reply_whose_reasoning_the_prompt_opened(
    tokenizer: LLTokenizer, text: str, allowed: bool, complete: bool
) -> None:
    grammar = after_reasoning(_schema_grammar(), in_reasoning=True)
    assert _matches(tokenizer, grammar, text) == (allowed, complete)


def test_a_gbnf_grammar_is_left_to_cover_everything() -> None:
    compiled = compile_grammar(generation_pb2.Grammar(gbnf='root ::= "yes" | "no"'))
    assert compiled is not None
    assert after_reasoning(compiled, in_reasoning=False) == compiled
    assert after_reasoning(compiled, in_reasoning=True) == compiled
