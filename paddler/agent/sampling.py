"""The llama.cpp sampler chain built from a request's sampling settings."""

from __future__ import annotations

import llama_cpp as llama

from paddler.common.generation_input import SamplingSettings

PENALTY_LAST_N = 64


def _penalises(settings: SamplingSettings) -> bool:
    return (
        settings.repeat_penalty != 1
        or settings.frequency_penalty != 0
        or settings.presence_penalty != 0
    )


class SamplerChain:
    """One llama.cpp sampler chain: penalties (unless neutral), top-k, top-p, min-p,
    temperature, then draw."""

    def __init__(self, settings: SamplingSettings, n_vocab: int) -> None:
        self.handle = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
        if _penalises(settings):  # neutral penalties change nothing: skip their work
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
