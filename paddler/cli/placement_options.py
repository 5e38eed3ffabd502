"""The placement flags (GPU layers, split, flash attention, KV cache types, mmap, mlock,
n_ubatch): ``paddler agent`` takes them as its own defaults, ``paddler state set`` as the
desired state's ``placement`` (left out: each agent's flag)."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer

from paddler.common.errors import InvalidArgumentError
from paddler.common.placement import (
    FLASH_ATTENTION,
    KV_CACHE_TYPES,
    MAX_DEVICES,
    MAX_GPU_LAYERS,
    MAX_UBATCH_SIZE,
    SPLIT_MODES,
    FlashAttentionName,
    KvCacheTypeName,
    PlacementSettings,
    SplitModeName,
    check_tensor_split,
)
from paddler.v1 import desired_state_pb2

NGpuLayersOption = Annotated[
    str | None,
    typer.Option(
        envvar="PADDLER_N_GPU_LAYERS",
        help="Layers offloaded to the GPUs: auto (all where llama.cpp has a GPU backend, else "
        "none), all, or a number.",
    ),
]
SplitModeOption = Annotated[
    SplitModeName | None,
    typer.Option(
        envvar="PADDLER_SPLIT_MODE",
        help="How layers spread over several GPUs: none (all on --main-gpu), layer (whole "
        "layers per GPU) or row (rows of each layer's tensors).",
    ),
]
TensorSplitOption = Annotated[
    str | None,
    typer.Option(
        envvar="PADDLER_TENSOR_SPLIT",
        help="Each GPU's share of the model, comma-separated in device order, e.g. 3,1 "
        "(empty: in proportion to free memory).",
    ),
]
MainGpuOption = Annotated[
    int | None,
    typer.Option(
        min=0,
        max=MAX_DEVICES - 1,
        envvar="PADDLER_MAIN_GPU",
        help="The GPU of split mode none, and of the small tensors in the other modes.",
    ),
]
FlashAttentionOption = Annotated[
    FlashAttentionName | None,
    typer.Option(envvar="PADDLER_FLASH_ATTENTION", help="Flash attention: auto, on or off."),
]
CacheTypeKOption = Annotated[
    KvCacheTypeName | None,
    typer.Option(envvar="PADDLER_CACHE_TYPE_K", help="K cache type: f16, q8_0 or q4_0."),
]
CacheTypeVOption = Annotated[
    KvCacheTypeName | None,
    typer.Option(
        envvar="PADDLER_CACHE_TYPE_V",
        help="V cache type: f16, q8_0 or q4_0 (quantized needs flash attention auto or on).",
    ),
]
MmapOption = Annotated[
    bool | None,
    typer.Option(
        "--mmap/--no-mmap", envvar="PADDLER_MMAP", help="Map the GGUF instead of reading it."
    ),
]
MlockOption = Annotated[
    bool | None,
    typer.Option(
        "--mlock/--no-mlock",
        envvar="PADDLER_MLOCK",
        help="Lock the weights in RAM (no swapping; needs the memlock limit).",
    ),
]
UbatchSizeOption = Annotated[
    int | None,
    typer.Option(
        min=1,
        max=MAX_UBATCH_SIZE,
        envvar="PADDLER_UBATCH_SIZE",
        help="Tokens per physical batch (n_ubatch), at most the batch size "
        "(unset: min(batch size, 512)).",
    ),
]


def gpu_layers(value: str) -> int | None:
    """--n-gpu-layers: auto is None, all is -1, else a count."""
    if value == "auto":
        return None
    if value == "all":
        return -1
    if not value.isdigit() or int(value) > MAX_GPU_LAYERS:
        raise typer.BadParameter(
            f"use auto, all or 0 to {MAX_GPU_LAYERS}, got {value!r}", param_hint="--n-gpu-layers"
        )
    return int(value)


def tensor_split(value: str) -> tuple[float, ...]:
    """--tensor-split: comma-separated shares."""
    if not value:
        return ()
    try:
        shares = tuple(float(part) for part in value.split(","))
        check_tensor_split(shares, "--tensor-split")
    except (ValueError, InvalidArgumentError) as error:
        raise typer.BadParameter(
            f"give shares >= 0 like 3,1: {error}", param_hint="--tensor-split"
        ) from None
    return shares


def agent_placement(
    flags: desired_state_pb2.Placement, *, n_gpu_layers: str | None, batch_size: int
) -> PlacementSettings:
    """The agent's own placement: its flags (read as ``state_placement`` reads ``state
    set``'s) over the built-in defaults, ``--n-gpu-layers`` (auto too), checked."""
    if flags.HasField("ubatch_size") and flags.ubatch_size > batch_size:
        raise typer.BadParameter(
            f"must be at most --batch-size ({batch_size}), got {flags.ubatch_size}",
            param_hint="--ubatch-size",
        )
    placed = replace(
        PlacementSettings().over(flags), n_gpu_layers=gpu_layers(n_gpu_layers or "auto")
    )
    try:
        placed.check("flags")
    except InvalidArgumentError as error:
        raise typer.BadParameter(error.message, param_hint="--cache-type-v") from None
    return placed


def _code(names: dict[int, str], name: str | None) -> int:
    if name is None:
        return 0
    return next(code for code, known in names.items() if known == name)


def state_placement(
    *,
    n_gpu_layers: str | None,
    split_mode: SplitModeName | None,
    tensor_split_text: str | None,
    main_gpu: int | None,
    flash_attention: FlashAttentionName | None,
    cache_type_k: KvCacheTypeName | None,
    cache_type_v: KvCacheTypeName | None,
    mmap: bool | None,
    mlock: bool | None,
    ubatch_size: int | None,
) -> desired_state_pb2.Placement:
    """A desired state's placement from ``paddler state set``'s flags (None: unset)."""
    placement = desired_state_pb2.Placement(
        split_mode=_code(SPLIT_MODES, split_mode),  # type: ignore[arg-type]
        flash_attention=_code(FLASH_ATTENTION, flash_attention),  # type: ignore[arg-type]
        cache_type_k=_code(KV_CACHE_TYPES, cache_type_k),  # type: ignore[arg-type]
        cache_type_v=_code(KV_CACHE_TYPES, cache_type_v),  # type: ignore[arg-type]
        tensor_split=tensor_split(tensor_split_text or ""),
    )
    if n_gpu_layers is not None:
        layers = gpu_layers(n_gpu_layers)
        if layers is None:
            raise typer.BadParameter(
                "a state sets all or a number; leave it out for each agent's own",
                param_hint="--n-gpu-layers",
            )
        placement.n_gpu_layers = layers
    for name, value in (
        ("main_gpu", main_gpu),
        ("use_mmap", mmap),
        ("use_mlock", mlock),
        ("ubatch_size", ubatch_size),
    ):
        if value is not None:
            setattr(placement, name, value)
    return placement
