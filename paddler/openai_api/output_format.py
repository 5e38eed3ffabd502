"""What a reply must look like, as OpenAI's requests say it: ``response_format`` (chat),
``text.format`` (Responses) and llama-server's ``json_schema`` and ``grammar`` fields; each
becomes our ``Grammar``."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from paddler.common.errors import InvalidArgumentError
from paddler.common.grammar import compile_grammar
from paddler.v1 import generation_pb2

# OpenAI's json_object mode: any JSON object.
ANY_OBJECT = '{"type": "object"}'


class JsonSchemaSpec(BaseModel):
    """The ``json_schema`` of a chat ``response_format``."""

    model_config = ConfigDict(populate_by_name=True)
    name: Annotated[str, Field(min_length=1, max_length=64)]
    description: str | None = None
    schema_: Annotated[dict[str, Any], Field(alias="schema")] = {}
    # We always enforce the schema, so strict or not the reply matches it.
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """Chat completions' ``response_format``."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    def grammar(self) -> generation_pb2.Grammar | None:
        """The grammar it asks for; None for plain text."""
        if self.type == "json_schema" and self.json_schema is None:
            raise InvalidArgumentError(
                "response_format.json_schema",
                "is required when response_format.type is json_schema",
            )
        schema = self.json_schema.schema_ if self.json_schema else None
        return _grammar(self.type, schema, "response_format", "response_format.json_schema.schema")


class TextFormat(BaseModel):
    """The Responses API's ``text.format``: the schema's fields sit beside ``type``."""

    model_config = ConfigDict(populate_by_name=True)
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    description: str | None = None
    schema_: Annotated[dict[str, Any] | None, Field(alias="schema")] = None
    strict: bool | None = None

    def grammar(self) -> generation_pb2.Grammar | None:
        """The grammar it asks for; None for plain text."""
        if self.type == "json_schema" and self.schema_ is None:
            raise InvalidArgumentError(
                "text.format.schema", "is required when text.format.type is json_schema"
            )
        return _grammar(self.type, self.schema_, "text.format", "text.format.schema")


class TextOptions(BaseModel):
    """The Responses API's ``text``."""

    model_config = ConfigDict(extra="ignore")
    format: TextFormat | None = None


def llama_server_grammar(
    json_schema: dict[str, Any] | None, grammar: str | None
) -> generation_pb2.Grammar | None:
    """llama-server's own fields: ``json_schema`` (an object) or ``grammar`` (GBNF text)."""
    if json_schema is not None and grammar is not None:
        raise InvalidArgumentError("grammar", "send either json_schema or grammar, not both")
    if json_schema is not None:
        text = json.dumps(json_schema)
        return checked(generation_pb2.Grammar(json_schema=text), "json_schema")
    if grammar is not None:
        return checked(generation_pb2.Grammar(gbnf=grammar), "grammar")
    return None


def _grammar(
    kind: str, schema: dict[str, Any] | None, field: str, schema_field: str
) -> generation_pb2.Grammar | None:
    """The grammar of a format of ``kind`` (text, json_object or json_schema with ``schema``)."""
    if kind == "text":
        return None
    if kind == "json_object" or schema is None:
        return checked(generation_pb2.Grammar(json_schema=ANY_OBJECT), field)
    return checked(generation_pb2.Grammar(json_schema=json.dumps(schema)), schema_field)


def checked(grammar: generation_pb2.Grammar, field: str) -> generation_pb2.Grammar:
    """``grammar`` once it compiles; errors name the request's own ``field``."""
    compile_grammar(grammar, field)
    return grammar
