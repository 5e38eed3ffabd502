"""The llama context an engine owns: its sizes, and how it is made from a model."""

from __future__ import annotations

from dataclasses import dataclass, field

import llama_cpp as llama

from paddler.agent.llama_model import LlamaModel, ModelLoadError
from paddler.common.placement import PlacementSettings

FLASH_ATTENTION = {
    "auto": llama.LLAMA_FLASH_ATTN_TYPE_AUTO,
    "on": llama.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    "off": llama.LLAMA_FLASH_ATTN_TYPE_DISABLED,
}
KV_CACHE_TYPES = {
    "f16": llama.GGML_TYPE_F16,
    "q8_0": llama.GGML_TYPE_Q8_0,
    "q4_0": llama.GGML_TYPE_Q4_0,
}


@dataclass(frozen=True)
class EngineConfig:
    """Sizes of the llama context."""

    slots: int
    context_size: int
    batch_size: int
    threads: int
    # Keep a finished request's KV cache in its slot for a later prompt with the same prefix.
    prompt_cache: bool = True
    # Host memory for slots' caches once the slots are reused (0: none; see PromptStore).
    prompt_store_bytes: int = 0
    # Flash attention, KV cache types and n_ubatch here; the rest is the model's.
    placement: PlacementSettings = field(default_factory=PlacementSettings)

    @property
    def ubatch_size(self) -> int:
        """Tokens per physical batch: the placement's, else min(batch size, 512)."""
        return self.placement.ubatch_size or min(self.batch_size, 512)


def new_context(model: LlamaModel, config: EngineConfig) -> llama.llama_context_p:
    """A context of ``config.slots`` sequences of ``config.context_size`` tokens each; its
    batch takes ``config.batch_size`` tokens a step (at least one per slot)."""
    params = llama.llama_context_default_params()
    params.n_seq_max = config.slots
    params.n_ctx = config.slots * config.context_size
    params.n_batch = config.batch_size
    params.n_ubatch = config.ubatch_size
    params.n_threads = config.threads
    params.n_threads_batch = config.threads
    params.flash_attn_type = FLASH_ATTENTION[config.placement.flash_attention]
    params.type_k = KV_CACHE_TYPES[config.placement.cache_type_k]
    params.type_v = KV_CACHE_TYPES[config.placement.cache_type_v]
    params.no_perf = True
    context: llama.llama_context_p = llama.llama_init_from_model(model.handle, params)
    if not context:
        raise ModelLoadError(
            f"llama.cpp could not create a context of {config.slots} slots x "
            f"{config.context_size} tokens for {model.path.name} (out of memory?); "
            "lower the context size or the slots"
        )
    return context
