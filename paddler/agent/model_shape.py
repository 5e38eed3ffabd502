"""What a GGUF asks of memory, read from its metadata alone (no weights loaded): its trained
context and its KV cache bytes per token."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import llama_cpp as llama

from paddler.agent.llama_model import ModelLoadError, check_model_file

_META_BUFFER = 256
KV_BYTES_PER_VALUE = 2  # the KV cache's default type, f16


@dataclass(frozen=True)
class ModelShape:
    """A model's size and the KV cache one token takes (0 where the metadata does not say)."""

    file_bytes: int
    trained_context: int
    kv_bytes_per_token: int

    def kv_bytes(self, slots: int, context_per_slot: int) -> int:
        """The KV cache of ``slots`` sequences of ``context_per_slot`` tokens (an upper bound:
        sliding-window layers hold less)."""
        return slots * context_per_slot * self.kv_bytes_per_token

    def memory_bytes(self, slots: int, context_per_slot: int) -> int:
        """Weights plus KV cache."""
        return self.file_bytes + self.kv_bytes(slots, context_per_slot)


def read_model_shape(path: Path) -> ModelShape:
    """The shape of the GGUF at ``path``: its metadata only, a few milliseconds."""
    check_model_file(path)
    llama.llama_backend_init()
    params = llama.llama_model_default_params()
    params.use_extra_bufts = False
    params.vocab_only = True
    model = llama.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise ModelLoadError(f"llama.cpp could not read the metadata of {path}")
    try:
        meta = _Metadata(model)
        arch = meta.text("general.architecture")
        layers = meta.number(f"{arch}.block_count")
        heads = meta.number(f"{arch}.attention.head_count")
        kv_heads = meta.number(f"{arch}.attention.head_count_kv") or heads
        width = meta.number(f"{arch}.embedding_length")
        head_width = width // heads if heads else 0
        key = meta.number(f"{arch}.attention.key_length") or head_width
        value = meta.number(f"{arch}.attention.value_length") or head_width
        return ModelShape(
            file_bytes=path.stat().st_size,
            trained_context=meta.number(f"{arch}.context_length"),
            kv_bytes_per_token=layers * kv_heads * (key + value) * KV_BYTES_PER_VALUE,
        )
    finally:
        llama.llama_model_free(model)


class _Metadata:
    def __init__(self, model: llama.llama_model_p) -> None:
        self._model = model
        self._buffer = ctypes.create_string_buffer(_META_BUFFER)

    def text(self, key: str) -> str:
        length = llama.llama_model_meta_val_str(
            self._model, key.encode(), self._buffer, _META_BUFFER
        )
        return self._buffer.value.decode(errors="replace") if length >= 0 else ""

    def number(self, key: str) -> int:
        """The value as an integer; 0 when absent or not one (a per-layer array)."""
        text = self.text(key)
        return int(text) if text.isdigit() else 0
