"""Grammars over gRPC through the balancer: every reply under a JSON schema parses and
validates, GBNF replies match their grammar, and a grammar that does not compile is refused
before any slot is taken."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import jsonschema
import pytest

from paddler.v1 import agent_pb2, generation_pb2
from tests.client import error_of, generate, invalid_field
from tests.cluster import Cluster, cluster, to_inference
from tests.grammar_cases import SCHEMAS

MAX_TOKENS = 96
YES_NO = 'root ::= "yes" | "no"'


@pytest.fixture(scope="module")
def shared() -> Iterator[Cluster]:
    """One balancer with one 2-slot agent."""
    with cluster(("solo", 2)) as c:
        yield c


def grammar_request(
    question: str,
    grammar: generation_pb2.Grammar,
    temperature: float = 0.0,
    seed: int = 0,
    max_tokens: int = MAX_TOKENS,
) -> agent_pb2.GenerateRequest:
    """A one-question conversation whose reply ``grammar`` constrains."""
    return agent_pb2.GenerateRequest(
        input=generation_pb2.GenerationInput(
            conversation=generation_pb2.Conversation(
                messages=[generation_pb2.ChatMessage(role="user", content=question)]
            ),
            max_tokens=max_tokens,
            sampling=generation_pb2.SamplingParameters(temperature=temperature, seed=seed),
            grammar=grammar,
        )
    )


def schema_grammar(schema: dict[str, Any]) -> generation_pb2.Grammar:
    return generation_pb2.Grammar(json_schema=json.dumps(schema))


@pytest.mark.parametrize("name", sorted(SCHEMAS))
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_every_reply_under_a_schema_parses_and_validates(
    shared: Cluster, name: str, temperature: float
) -> None:
    question, schema = SCHEMAS[name]
    request = grammar_request(question, schema_grammar(schema), temperature, seed=7)
    reply = generate(shared.inference, to_inference(request))
    jsonschema.validate(json.loads(reply.text), schema)
    # Generation ends when the value is closed, not at the token cap.
    assert reply.summary.finish_reason == generation_pb2.FINISH_REASON_END_OF_GENERATION
    assert reply.summary.usage.completion_tokens < MAX_TOKENS


def test_a_schema_of_an_enum_only_ever_yields_its_values(shared: Cluster) -> None:
    values = ["north", "south", "east", "west"]
    grammar = schema_grammar({"enum": values})
    seen = set()
    for seed in range(6):
        request = grammar_request("Which way is the wind blowing?", grammar, 1.5, seed=seed)
        seen.add(json.loads(generate(shared.inference, to_inference(request)).text))
    assert seen <= set(values)


def test_a_gbnf_grammar_yields_only_its_words(shared: Cluster) -> None:
    grammar = generation_pb2.Grammar(gbnf=YES_NO)
    replies = {
        generate(
            shared.inference,
            to_inference(grammar_request(question, grammar, 1.5, seed=seed)),
        ).text
        for seed, question in enumerate(["Is water wet?", "Can pigs fly?", "Say something."])
    }
    assert replies <= {"yes", "no"}
    assert replies


def test_the_token_cap_still_ends_a_constrained_reply(shared: Cluster) -> None:
    schema = {"type": "array", "items": {"type": "integer"}, "minItems": 50}
    request = grammar_request("Count to fifty.", schema_grammar(schema), max_tokens=6)
    reply = generate(shared.inference, to_inference(request))
    assert reply.summary.finish_reason == generation_pb2.FINISH_REASON_MAX_TOKENS
    assert reply.summary.usage.completion_tokens == 6
    assert reply.text.startswith("[")


@pytest.mark.parametrize(
    ("grammar", "field", "reason"),
    [
        (generation_pb2.Grammar(gbnf='root ::= "yes" | "no'), "input.grammar.gbnf", "GBNF"),
        (generation_pb2.Grammar(gbnf='root ::= "a" | nope'), "input.grammar.gbnf", "nope"),
        (generation_pb2.Grammar(gbnf='start ::= "a"'), "input.grammar.gbnf", "root"),
        (generation_pb2.Grammar(gbnf=" "), "input.grammar.gbnf", "empty"),
        (generation_pb2.Grammar(json_schema="{"), "input.grammar.json_schema", "JSON"),
        (generation_pb2.Grammar(json_schema="[]"), "input.grammar.json_schema", "object"),
        (
            generation_pb2.Grammar(json_schema='{"type": "nope"}'),
            "input.grammar.json_schema",
            "nope",
        ),
        (
            generation_pb2.Grammar(json_schema='{"type": "integer", "minimum": 5, "maximum": 1}'),
            "input.grammar.json_schema",
            "minimum",
        ),
    ],
)
def test_a_grammar_that_does_not_compile_is_refused_with_the_reason(
    shared: Cluster, grammar: generation_pb2.Grammar, field: str, reason: str
) -> None:
    request = grammar_request("Hello", grammar)
    assert invalid_field(shared.inference, to_inference(request)) == field
    error = error_of(shared.inference, to_inference(request))
    assert reason in (error.details() or "")


def test_a_bad_grammar_is_refused_by_the_balancer_without_any_agent() -> None:
    """With no agent to wait for, a refusal that comes at all came before any slot."""
    with cluster() as empty:
        request = grammar_request("Hello", generation_pb2.Grammar(gbnf="root ::= ("))
        error = error_of(empty.inference, to_inference(request), timeout=30)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "input.grammar.gbnf" in (error.details() or "")


def test_an_agent_refuses_a_bad_grammar_itself(stub4: Any) -> None:
    request = grammar_request("Hello", generation_pb2.Grammar(json_schema='{"type": "nope"}'))
    assert invalid_field(stub4, request) == "input.grammar.json_schema"
    status = stub4.GetStatus(agent_pb2.GetStatusRequest()).status
    assert status.slots_processing == 0


def test_the_grammar_tokenizer_is_built_at_load_not_by_the_first_request() -> None:
    schema = schema_grammar({"type": "object", "properties": {"n": {"type": "integer"}}})
    with cluster(("fresh", 1)) as c:
        agent = c.agents["fresh"]
        assert len(agent.logs("grammar tokenizer built")) == 1  # with the model, before a request
        for _ in range(2):
            generate(c.inference, to_inference(grammar_request("A number?", schema)))
        served = agent.wait_logs("request served", 2)
        assert len(served) == 2
        assert len(agent.logs("grammar tokenizer built")) == 1  # neither request built one
