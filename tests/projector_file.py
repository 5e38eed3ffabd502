"""A tiny multimodal projector ("mmproj") GGUF for the image tests.

This is a test fixture: the weights are random, so what a model "sees" in an image through it is
meaningless, but the wiring is real. libmtmd (llama.cpp's multimodal library, shipped with
llama-cpp-python) loads the file against a text model, preprocesses an RGB image, runs the
vision encoder and hands the text model image embeddings of the right width.

The file is a SigLIP-style vision encoder of one block (hidden width 32, 2 heads of 16, a
feed-forward of 64) over 56x56 images in 14-pixel patches (4x4 patches), with a Gemma 3
projector: average pooling by ``clip.vision.projector.scale_factor`` (2) leaves 2x2 = 4 image
tokens, RMS-normed and projected to the text model's embedding width. Key and tensor names are
the ones llama.cpp's ``tools/mtmd/clip.cpp`` reads (``clip-impl.h`` names them).
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt

VISION_WIDTH = 32
HEADS = 2
FEED_FORWARD = 64
BLOCKS = 1
IMAGE_SIZE = 56
PATCH_SIZE = 14
SCALE_FACTOR = 2
PATCHES = (IMAGE_SIZE // PATCH_SIZE) ** 2  # 16
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE // SCALE_FACTOR) ** 2  # 4 per image
"""How many embeddings (text positions) one image becomes, whatever its size."""

_STD = 0.02
_SEED = 20240521

Weights = npt.NDArray[np.float32]


def _metadata(writer: gguf.GGUFWriter, text_width: int) -> None:
    writer.add_string("general.name", "paddler test projector")
    writer.add_string(
        "general.description", "random weights: a test fixture, its answers mean nothing"
    )
    writer.add_uint32("general.file_type", 0)  # all F32
    writer.add_string("clip.projector_type", "gemma3")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_audio_encoder", False)
    writer.add_bool("clip.use_gelu", True)
    writer.add_uint32("clip.vision.embedding_length", VISION_WIDTH)
    writer.add_uint32("clip.vision.attention.head_count", HEADS)
    writer.add_uint32("clip.vision.feed_forward_length", FEED_FORWARD)
    writer.add_uint32("clip.vision.block_count", BLOCKS)
    writer.add_uint32("clip.vision.projection_dim", text_width)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_uint32("clip.vision.image_size", IMAGE_SIZE)
    writer.add_uint32("clip.vision.patch_size", PATCH_SIZE)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    writer.add_uint32("clip.vision.projector.scale_factor", SCALE_FACTOR)


def _tensors(text_width: int) -> dict[str, Weights]:
    """Tensors in numpy shape order (the reverse of ggml's ``ne``)."""
    rng = np.random.default_rng(_SEED)

    def random(*shape: int) -> Weights:
        return (rng.standard_normal(shape) * _STD).astype(np.float32)

    def ones(size: int) -> Weights:
        return np.ones(size, dtype=np.float32)

    def zeros(size: int) -> Weights:
        return np.zeros(size, dtype=np.float32)

    tensors: dict[str, Weights] = {
        "v.patch_embd.weight": random(VISION_WIDTH, 3, PATCH_SIZE, PATCH_SIZE),
        "v.patch_embd.bias": zeros(VISION_WIDTH),
        "v.position_embd.weight": random(PATCHES, VISION_WIDTH),
    }
    for block in range(BLOCKS):
        prefix = f"v.blk.{block}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            tensors[f"{prefix}.{name}.weight"] = random(VISION_WIDTH, VISION_WIDTH)
            tensors[f"{prefix}.{name}.bias"] = zeros(VISION_WIDTH)
        for norm in ("ln1", "ln2"):
            tensors[f"{prefix}.{norm}.weight"] = ones(VISION_WIDTH)
            tensors[f"{prefix}.{norm}.bias"] = zeros(VISION_WIDTH)
        # As in PyTorch's nn.Linear: (out, in). A down projection whose ggml ne[0] were the
        # hidden width would make clip.cpp swap up and down (its fix for old conversions).
        tensors[f"{prefix}.ffn_up.weight"] = random(FEED_FORWARD, VISION_WIDTH)
        tensors[f"{prefix}.ffn_up.bias"] = zeros(FEED_FORWARD)
        tensors[f"{prefix}.ffn_down.weight"] = random(VISION_WIDTH, FEED_FORWARD)
        tensors[f"{prefix}.ffn_down.bias"] = zeros(VISION_WIDTH)
    tensors["v.post_ln.weight"] = ones(VISION_WIDTH)
    tensors["v.post_ln.bias"] = zeros(VISION_WIDTH)
    tensors["mm.soft_emb_norm.weight"] = ones(VISION_WIDTH)
    # Gemma 3 stores the projection as (vision, text): ggml ne = [text_width, VISION_WIDTH];
    # clip.cpp reads the model's width from ne[0] and checks it against the text model's.
    tensors["mm.input_projection.weight"] = random(VISION_WIDTH, text_width)
    return tensors


def write_projector(path: Path, text_width: int) -> None:
    """Write the projector to ``path`` for a text model whose embeddings are ``text_width``
    wide (640 for Gemma 3 270M, 576 for SmolLM2 135M). Same bytes on every call."""
    writer = gguf.GGUFWriter(path, "clip")
    try:
        _metadata(writer, text_width)
        for name, tensor in _tensors(text_width).items():
            writer.add_tensor(name, tensor)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
