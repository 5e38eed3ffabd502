"""A request's grammar, compiled and checked without a model: GBNF or a JSON schema, turned into
an llguidance grammar (llama.cpp's own optional grammar engine; full JSON schema, with ranges)."""

from __future__ import annotations

import json

from llguidance import LLMatcher, LLParserLimits
from llguidance.gbnf_to_lark import gbnf_to_lark

from paddler.common.errors import InvalidArgumentError
from paddler.v1 import generation_pb2

MAX_GRAMMAR_BYTES = 64 * 1024
# The time a grammar may cost, as llguidance's fuel (about 50k units a millisecond to build the
# lexer, 14k a millisecond per token's mask): a grammar past them fails with INVALID_ARGUMENT
# when it is compiled (always off the event loop, in the agent's request preparation) or at the
# token where it runs out. No schema text in errors (verbose_errors off): they reach clients.
GRAMMAR_LIMITS = LLParserLimits(
    initial_lexer_fuel=1_000_000,  # about 20 ms
    step_lexer_fuel=200_000,  # about 15 ms a token
    step_max_items=50_000,
    max_lexer_states=250_000,
    max_grammar_size=500_000,
    verbose_errors=False,
)
# Compact JSON: no whitespace between tokens, so no tokens are spent on layout.
_JSON_OPTIONS = {"whitespace_flexible": False}


def compile_grammar(grammar: generation_pb2.Grammar, field: str | None = None) -> str | None:
    """The llguidance grammar of ``grammar``, or None when it is unset.

    Raises InvalidArgumentError naming ``field`` (by default ``input.grammar.gbnf`` or
    ``input.grammar.json_schema``) with the parser's own reason when the text does not parse
    or the schema cannot be served.
    """
    kind = grammar.WhichOneof("kind")
    if kind is None:
        return None
    field = field or f"input.grammar.{kind}"
    text: str = getattr(grammar, kind)
    if not text.strip():
        raise InvalidArgumentError(field, "is empty; send a grammar or leave input.grammar unset")
    if (size := len(text.encode())) > MAX_GRAMMAR_BYTES:
        raise InvalidArgumentError(
            field, f"is {size} bytes; the limit is {MAX_GRAMMAR_BYTES} bytes (64 KiB)"
        )
    compiled = _from_gbnf(text, field) if kind == "gbnf" else _from_json_schema(text, field)
    if problem := LLMatcher.validate_grammar(compiled, limits=GRAMMAR_LIMITS):
        raise InvalidArgumentError(field, f"cannot be served: {problem}")
    return compiled


def _from_gbnf(text: str, field: str) -> str:
    try:
        lark = gbnf_to_lark(text)
    # The converter raises bare Exception for rules it cannot resolve (an unknown rule name).
    except Exception as error:  # noqa: BLE001
        raise InvalidArgumentError(field, f"does not parse as GBNF: {error}") from None
    return LLMatcher.grammar_from_lark(lark)


def _from_json_schema(text: str, field: str) -> str:
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidArgumentError(field, f"is not valid JSON: {error}") from None
    if not isinstance(schema, dict):
        raise InvalidArgumentError(
            field, f"must be a JSON object (a schema), got {type(schema).__name__}"
        )
    return LLMatcher.grammar_from_json_schema(schema, defaults=_JSON_OPTIONS)  # type: ignore[arg-type]
