"""A lazy grammar on the real model's vocabulary: free text until the trigger is generated, the
grammar from there on, also when the trigger ends inside a token."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from paddler.agent.default_model import default_model_path
from paddler.agent.grammar_constraint import GrammarConstraint
from paddler.agent.llama_model import LlamaModel
from paddler.agent.tool_prompt import hermes_prompt
from paddler.v1 import generation_pb2

CALL = '\n{"name":"f","arguments":{"n":3}}\n</tool_call>'


@pytest.fixture(scope="module")
def model() -> Iterator[LlamaModel]:
    loaded = LlamaModel(default_model_path())
    yield loaded
    loaded.close()


def lazy_grammar() -> str:
    conversation = generation_pb2.Conversation(
        messages=[generation_pb2.ChatMessage(role="user", content="hi")],
        tools=[
            generation_pb2.Tool(
                name="f",
                parameters=json.dumps(
                    {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
                ),
            )
        ],
    )
    prompt = hermes_prompt(conversation)
    assert prompt.grammar is not None and prompt.trigger == "<tool_call>"
    return prompt.grammar


def feed(model: LlamaModel, constraint: GrammarConstraint, text: str) -> bool:
    """Accept ``text``'s tokens one by one; False as soon as one is refused."""
    tokens = model.tokenize(text, add_special=False)
    return all(constraint.accept(token, model.piece(token)) for token in tokens)


def test_text_is_free_until_the_trigger_then_the_grammar_holds(model: LlamaModel) -> None:
    constraint = model.grammars.constraint(lazy_grammar(), "tools", "<tool_call>")
    assert feed(model, constraint, "Any text at all, even {[< odd ones. ")
    assert not constraint.complete
    assert feed(model, constraint, "<tool_call>")
    assert feed(model, constraint, CALL)
    assert constraint.complete


def test_after_the_trigger_a_wrong_call_is_refused(model: LlamaModel) -> None:
    constraint = model.grammars.constraint(lazy_grammar(), "tools", "<tool_call>")
    assert feed(model, constraint, "<tool_call>")
    assert not feed(model, constraint, '\n{"name":"g"')


def test_a_trigger_that_ends_inside_a_piece_hands_the_rest_to_the_grammar(
    model: LlamaModel,
) -> None:
    constraint = model.grammars.constraint(lazy_grammar(), "tools", "<tool_call>")
    token = model.tokenize("x", add_special=False)[0]
    assert constraint.accept(token, b"Sure <tool_call>" + CALL[:10].encode())
    assert feed(model, constraint, CALL[10:])
    assert constraint.complete
