"""Where a model and its KV cache go (GPU layers, split, flash attention, KV cache types, mmap,
mlock, n_ubatch): the agent's flags, a desired state's ``placement`` over them, and their checks.
Nothing here needs llama.cpp: the balancer checks states with it too."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from paddler.common.errors import InvalidArgumentError
from paddler.v1 import desired_state_pb2

SplitModeName = Literal["none", "layer", "row"]
FlashAttentionName = Literal["auto", "on", "off"]
KvCacheTypeName = Literal["f16", "q8_0", "q4_0"]

# llama.cpp's GGML_CUDA_MAX_DEVICES: no build splits a model over more.
MAX_DEVICES = 16
# Above any model's layer count; -1 means all of them.
MAX_GPU_LAYERS = 4096
MAX_UBATCH_SIZE = 1 << 16

SPLIT_MODES: dict[int, SplitModeName] = {
    desired_state_pb2.SPLIT_MODE_NONE: "none",
    desired_state_pb2.SPLIT_MODE_LAYER: "layer",
    desired_state_pb2.SPLIT_MODE_ROW: "row",
}
FLASH_ATTENTION: dict[int, FlashAttentionName] = {
    desired_state_pb2.FLASH_ATTENTION_AUTO: "auto",
    desired_state_pb2.FLASH_ATTENTION_ON: "on",
    desired_state_pb2.FLASH_ATTENTION_OFF: "off",
}
KV_CACHE_TYPES: dict[int, KvCacheTypeName] = {
    desired_state_pb2.KV_CACHE_TYPE_F16: "f16",
    desired_state_pb2.KV_CACHE_TYPE_Q8_0: "q8_0",
    desired_state_pb2.KV_CACHE_TYPE_Q4_0: "q4_0",
}


@dataclass(frozen=True)
class PlacementSettings:
    """Resolved placement. ``n_gpu_layers`` None: auto (all where llama.cpp can offload,
    else none), -1: all; ``ubatch_size`` None: min(batch size, 512)."""

    n_gpu_layers: int | None = None
    split_mode: SplitModeName = "layer"
    tensor_split: tuple[float, ...] = ()
    main_gpu: int = 0
    flash_attention: FlashAttentionName = "auto"
    cache_type_k: KvCacheTypeName = "f16"
    cache_type_v: KvCacheTypeName = "f16"
    use_mmap: bool = True
    use_mlock: bool = False
    ubatch_size: int | None = None

    def over(self, state: desired_state_pb2.Placement) -> PlacementSettings:
        """These settings (an agent's flags) with what ``state`` sets taking their place."""
        changes: dict[str, object] = {}
        for name in ("n_gpu_layers", "main_gpu", "use_mmap", "use_mlock", "ubatch_size"):
            if state.HasField(name):
                changes[name] = getattr(state, name)
        if state.tensor_split:
            changes["tensor_split"] = tuple(state.tensor_split)
        if state.split_mode:
            changes["split_mode"] = SPLIT_MODES[state.split_mode]
        if state.flash_attention:
            changes["flash_attention"] = FLASH_ATTENTION[state.flash_attention]
        if state.cache_type_k:
            changes["cache_type_k"] = KV_CACHE_TYPES[state.cache_type_k]
        if state.cache_type_v:
            changes["cache_type_v"] = KV_CACHE_TYPES[state.cache_type_v]
        return replace(self, **changes)  # type: ignore[arg-type]

    def check(self, field: str = "placement") -> None:
        """InvalidArgumentError naming the first setting that cannot work."""
        if self.cache_type_v != "f16" and self.flash_attention == "off":
            raise InvalidArgumentError(
                f"{field}.cache_type_v",
                f"a quantized V cache ({self.cache_type_v}) needs flash attention: set "
                "flash_attention to auto or on, or the V cache to f16",
            )


def check_placement(placement: desired_state_pb2.Placement, batch_size: int | None) -> None:
    """InvalidArgumentError naming the first bad field of a desired state's placement
    (``batch_size``: the state's own, if it sets one)."""
    field = "state.placement"
    if placement.HasField("n_gpu_layers") and not -1 <= placement.n_gpu_layers <= MAX_GPU_LAYERS:
        raise InvalidArgumentError(
            f"{field}.n_gpu_layers",
            f"must be -1 (all) or 0 to {MAX_GPU_LAYERS}, got {placement.n_gpu_layers}",
        )
    _check_enum(placement.split_mode, SPLIT_MODES, f"{field}.split_mode")
    _check_enum(placement.flash_attention, FLASH_ATTENTION, f"{field}.flash_attention")
    _check_enum(placement.cache_type_k, KV_CACHE_TYPES, f"{field}.cache_type_k")
    _check_enum(placement.cache_type_v, KV_CACHE_TYPES, f"{field}.cache_type_v")
    check_tensor_split(tuple(placement.tensor_split), f"{field}.tensor_split")
    if placement.HasField("main_gpu") and not 0 <= placement.main_gpu < MAX_DEVICES:
        raise InvalidArgumentError(
            f"{field}.main_gpu", f"must be 0 to {MAX_DEVICES - 1}, got {placement.main_gpu}"
        )
    if placement.HasField("ubatch_size"):
        high = min(batch_size, MAX_UBATCH_SIZE) if batch_size else MAX_UBATCH_SIZE
        if not 1 <= placement.ubatch_size <= high:
            raise InvalidArgumentError(
                f"{field}.ubatch_size",
                f"must be 1 to {high} (at most the batch size), got {placement.ubatch_size}",
            )
    PlacementSettings().over(placement).check(field)


def check_tensor_split(split: tuple[float, ...], field: str) -> None:
    """InvalidArgumentError unless ``split`` is empty or up to MAX_DEVICES finite shares >= 0
    with at least one above 0."""
    if not split:
        return
    if len(split) > MAX_DEVICES:
        raise InvalidArgumentError(field, f"at most {MAX_DEVICES} shares, got {len(split)}")
    if not all(math.isfinite(share) and share >= 0 for share in split) or not any(split):
        raise InvalidArgumentError(
            field, f"shares must be finite, at least 0, and not all 0, got {list(split)}"
        )


def _check_enum(value: int, known: Mapping[int, str], field: str) -> None:
    if value and value not in known:
        raise InvalidArgumentError(field, f"unknown value {value}; use one of {list(known)}")
