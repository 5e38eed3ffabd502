"""The fields ``/v1/chat/completions`` and ``/v1/completions`` share: the model, the token cap,
sampling (OpenAI's and llama-server's extras), ``n`` and streaming."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from paddler.common.errors import InvalidArgumentError
from paddler.common.generation_input import check_generation_input
from paddler.openai_api.output_format import llama_server_grammar
from paddler.v1 import generation_pb2

MAX_CHOICES = 8
MAX_SEED = 2**32 - 1
# OpenAI's ``user``: an end user's id, which goes on the request's log lines.
MAX_USER_CHARS = 256
User = Annotated[str | None, Field(max_length=MAX_USER_CHARS)]


class StreamOptions(BaseModel):
    """What a streamed response adds."""

    include_usage: bool = False


class SamplingFields(BaseModel):
    """Fields both completion endpoints accept; unknown fields are ignored, as OpenAI does."""

    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: Annotated[int | None, Field(ge=1)] = None
    temperature: Annotated[float | None, Field(ge=0, le=2)] = None
    top_p: Annotated[float | None, Field(gt=0, le=1)] = None
    stop: str | list[str] | None = None
    seed: Annotated[int | None, Field(ge=0, le=MAX_SEED)] = None
    presence_penalty: Annotated[float | None, Field(ge=-2, le=2)] = None
    frequency_penalty: Annotated[float | None, Field(ge=-2, le=2)] = None
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: User = None
    # llama-server's extras.
    top_k: Annotated[int | None, Field(ge=0)] = None
    min_p: Annotated[float | None, Field(ge=0, le=1)] = None
    repeat_penalty: Annotated[float | None, Field(gt=0)] = None
    json_schema: dict[str, Any] | None = None
    grammar: str | None = None
    # Fields that change generation and are not served yet: refused when set.
    logprobs: Any = None
    logit_bias: dict[str, float] | None = None

    @staticmethod
    def refuse_unsupported(*fields: tuple[str, object]) -> None:
        """400 naming the first field that is set although we do not serve it yet."""
        for name, value in fields:
            if value not in (None, False, [], {}):
                raise InvalidArgumentError(name, f"{name} is not supported yet; leave it unset")

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk."""
        return self.stream_options is not None and self.stream_options.include_usage

    def fill(
        self,
        generation: generation_pb2.GenerationInput,
        max_tokens: int | None,
        output: generation_pb2.Grammar | None = None,
    ) -> None:
        """Set the cap, stop strings, sampling and the grammar (``output``, the endpoint's own
        format, or llama-server's fields) on ``generation``, then check it."""
        self.refuse_unsupported(("logprobs", self.logprobs), ("logit_bias", self.logit_bias))
        extra = llama_server_grammar(self.json_schema, self.grammar)
        if output is not None and extra is not None:
            raise InvalidArgumentError(
                "json_schema" if self.json_schema is not None else "grammar",
                "the response format already constrains the reply; send one or the other",
            )
        if grammar := output or extra:
            generation.grammar.CopyFrom(grammar)
        if max_tokens is not None:
            generation.max_tokens = max_tokens
        if self.stop is not None:
            generation.stop.extend([self.stop] if isinstance(self.stop, str) else self.stop)
        sampling = generation.sampling
        for name in (
            "temperature", "top_p", "presence_penalty", "frequency_penalty", "top_k", "min_p",
            "repeat_penalty", "seed",
        ):  # fmt: skip
            value = getattr(self, name)
            if value is not None:
                setattr(sampling, name, value)
        check_generation_input(generation)
