"""A JSON schema's grammar (a response format, or the tools' reply) made to hold after the
reasoning: the reasoning itself is free text up to `</think>`."""

from __future__ import annotations

import json

from llguidance import LLMatcher

from paddler.agent.reasoning_split import CLOSE_TAG, OPEN_TAG

# The reasoning: any text, ended by the first closing tag (which it keeps: it was generated).
_THOUGHT = f"thought[suffix={json.dumps(CLOSE_TAG)}]: /(.|\\n)*/\n"
_SPACE = "/[ \\t\\r\\n]*/"


def after_reasoning(compiled: str, in_reasoning: bool) -> str:
    """``compiled`` (an llguidance grammar from a JSON schema) preceded by the reasoning: an
    optional ``<think>...</think>`` when the reply may open one, or the rest of one the prompt
    opened (``in_reasoning``). Grammars of other kinds (GBNF: it covers the whole text) come
    back as they are."""
    if not compiled.startswith("{"):
        return compiled
    grammars = json.loads(compiled)["grammars"]
    if len(grammars) != 1 or grammars[0].get("json_schema") is None:
        return compiled
    schema = json.dumps(grammars[0]["json_schema"])
    start = (
        f"start: thought {_SPACE} reply\n"
        if in_reasoning
        else f"start: (think {_SPACE})? reply\nthink: {json.dumps(OPEN_TAG)} thought\n"
    )
    return LLMatcher.grammar_from_lark(f"{start}{_THOUGHT}reply: %json {schema}\n")
