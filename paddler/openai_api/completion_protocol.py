"""The request body of ``POST /v1/completions`` (the legacy text completions), and how each of
its prompts becomes our ``GenerationInput``."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from paddler.common.errors import InvalidArgumentError
from paddler.openai_api.sampling_fields import MAX_CHOICES, SamplingFields
from paddler.v1 import generation_pb2


class CompletionRequest(SamplingFields):
    """``POST /v1/completions``: one generation per prompt and per ``n``."""

    prompt: str | Annotated[list[str], Field(min_length=1)]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    @property
    def prompts(self) -> list[str]:
        """The prompts, one or many."""
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def generation_inputs(self) -> list[generation_pb2.GenerationInput]:
        """One GenerationInput per choice, prompt by prompt (choice ``p * n + i``)."""
        self.refuse_unsupported(("echo", self.echo), ("suffix", self.suffix))
        if self.best_of not in (None, 1, self.n):
            raise InvalidArgumentError("best_of", "best_of other than n is not supported yet")
        if len(self.prompts) * self.n > MAX_CHOICES:
            raise InvalidArgumentError(
                "prompt",
                f"{len(self.prompts)} prompts x n={self.n} is more than {MAX_CHOICES} "
                "generations; send fewer per request",
            )
        inputs = []
        for index, prompt in enumerate(self.prompts):
            if not prompt:
                raise InvalidArgumentError(
                    "prompt" if isinstance(self.prompt, str) else f"prompt[{index}]",
                    "the prompt is empty",
                )
            generation = generation_pb2.GenerationInput(prompt=prompt)
            self.fill(generation, self.max_tokens)
            inputs.extend([generation] * self.n)
        return inputs
