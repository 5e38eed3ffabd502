"""Sampling settings of one request and the llama.cpp sampler chain built from them."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import llama_cpp as llama

from paddler.common.errors import InvalidArgumentError
from paddler.v1 import generation_pb2

PENALTY_LAST_N = 64
_FIELD = "input.sampling"


@dataclass(frozen=True)
class SamplingSettings:
    """Resolved sampling parameters (defaults filled in, all validated)."""

    temperature: float = 0.8
    top_k: int = 80
    top_p: float = 0.8
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None

    def overridden_by(self, message: generation_pb2.SamplingParameters) -> SamplingSettings:
        """These settings with every field the request sets replaced; validates the result."""
        changes = {field.name: value for field, value in message.ListFields()}
        resolved = replace(self, **changes)
        resolved.validate()
        return resolved

    def validate(self) -> None:
        """Raise InvalidArgumentError naming the first out-of-range field."""
        checks = (
            ("temperature", math.isfinite(self.temperature) and self.temperature >= 0, ">= 0"),
            ("top_k", self.top_k >= 0, ">= 0 (0 disables it)"),
            ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
            ("min_p", 0 <= self.min_p <= 1, "in [0, 1]"),
            ("repeat_penalty", self.repeat_penalty > 0, "> 0 (1 disables it)"),
            ("presence_penalty", math.isfinite(self.presence_penalty), "a finite number"),
            ("frequency_penalty", math.isfinite(self.frequency_penalty), "a finite number"),
        )
        for name, valid, expected in checks:
            if not valid:
                raise InvalidArgumentError(
                    f"{_FIELD}.{name}", f"must be {expected}, got {getattr(self, name)}"
                )


class SamplerChain:
    """One llama.cpp sampler chain: penalties, top-k, top-p, min-p, temperature, then draw."""

    def __init__(self, settings: SamplingSettings, n_vocab: int) -> None:
        self.handle = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
        self._add(
            llama.llama_sampler_init_penalties(
                n_vocab,
                PENALTY_LAST_N,
                settings.repeat_penalty,
                settings.frequency_penalty,
                settings.presence_penalty,
            )
        )
        if settings.temperature == 0:
            self._add(llama.llama_sampler_init_greedy())
            return
        if settings.top_k > 0:
            self._add(llama.llama_sampler_init_top_k(settings.top_k))
        self._add(llama.llama_sampler_init_top_p(settings.top_p, 1))
        self._add(llama.llama_sampler_init_min_p(settings.min_p, 1))
        self._add(llama.llama_sampler_init_temp(settings.temperature))
        seed = llama.LLAMA_DEFAULT_SEED if settings.seed is None else settings.seed
        self._add(llama.llama_sampler_init_dist(seed))

    def _add(self, sampler: object) -> None:
        llama.llama_sampler_chain_add(self.handle, sampler)

    def sample(self, context: object, batch_index: int) -> int:
        """Sample (and accept) the next token from the logits at ``batch_index``."""
        token: int = llama.llama_sampler_sample(self.handle, context, batch_index)
        return token

    def free(self) -> None:
        """Free the chain and the samplers it owns."""
        llama.llama_sampler_free(self.handle)
