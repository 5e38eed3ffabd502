"""A multimodal projector loaded with the model (libmtmd): a prompt's images become positions
in a slot's KV cache.

A prompt with images is tokenized by libmtmd into text tokens and image chunks. Each image
stands in the prompt's token list as a run of placeholder ids (negative, so never a real
token), derived from a hash of the image's bytes: the same image at the same place gives the
same ids, so the KV prefix cache and prefix routing reuse text after an image as they reuse any
other prefix. The engine decodes an image's run in a call of its own (libmtmd switches the
context to non-causal attention for it), never in a batch with other slots' tokens.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp as llama
import structlog
from llama_cpp import mtmd_cpp as mtmd
from PIL import Image

from paddler.agent.llama_model import LlamaModel, ModelLoadError
from paddler.common.errors import (
    ConfigurationError,
    InternalError,
    InvalidArgumentError,
    UnavailableError,
)
from paddler.v1 import generation_pb2

log = structlog.get_logger(__name__)

PLACEHOLDER_SPAN = 1 << 30


class ImageChunk:
    """One image of a prompt as libmtmd tokenized it (owned: freed with this object)."""

    def __init__(self, chunk: Any, positions: int) -> None:
        self.chunk = chunk
        self.positions = positions
        self.tokens = int(mtmd.mtmd_input_chunk_get_n_tokens(chunk))
        weakref.finalize(self, mtmd.mtmd_input_chunk_free, chunk)


@dataclass(frozen=True)
class MediaPrompt:
    """A prompt with images: its tokens, each image a run of placeholders, and the images by
    the index where their run starts."""

    tokens: list[int]
    images: dict[int, ImageChunk] = field(default_factory=dict)


def placeholders(digest: bytes, positions: int) -> list[int]:
    """The ids an image of this SHA-256 ``digest`` stands as (all negative)."""
    base = int.from_bytes(digest[:8], "little")
    return [-1 - (base + offset) % PLACEHOLDER_SPAN for offset in range(positions)]


class Projector:
    """libmtmd's context for one model and projector file; every call holds ``lock``
    (tokenizing runs in request threads, decoding on the engine thread)."""

    def __init__(self, path: Path, model: LlamaModel, threads: int) -> None:
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = True  # where llama.cpp was built with one; the CPU otherwise
        params.n_threads = threads
        params.print_timings = False
        self._context = mtmd.mtmd_init_from_file(str(path).encode(), model.handle, params)
        if not self._context:
            raise ModelLoadError(
                f"the projector {path} does not load with model {model.name}: it is not a "
                "multimodal projector GGUF, or it was made for another model (its width must "
                "match the model's); see the agent's log for llama.cpp's reason"
            )
        if not mtmd.mtmd_support_vision(self._context):
            mtmd.mtmd_free(self._context)
            raise ModelLoadError(f"the projector {path} reads no images (an audio projector?)")
        if mtmd.mtmd_decode_use_mrope(self._context):
            # Its images take more KV cells than positions: the slots' accounting is by position.
            mtmd.mtmd_free(self._context)
            raise ModelLoadError(
                f"the projector {path} places images with M-RoPE (Qwen-VL style), which this "
                "agent does not serve yet"
            )
        # An image decoded with non-causal attention must fit one micro-batch (llama.cpp
        # asserts it): ``decode`` refuses a bigger one instead.
        self._non_causal = bool(mtmd.mtmd_decode_use_non_causal(self._context, None))
        self.path = path
        self.lock = threading.Lock()
        self.marker = mtmd.mtmd_default_marker().decode()

    def tokenize(self, text: str, images: Sequence[generation_pb2.Image]) -> MediaPrompt:
        """The prompt ``text`` (one marker per image, in order) with its images. Blocking."""
        bitmaps: list[tuple[Any, bytes]] = []
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            for index, image in enumerate(images):  # each freed below, whatever fails
                bitmaps.append(_bitmap(image, index))
            encoded = text.encode()
            request = mtmd.mtmd_input_text(
                text=encoded, text_len=len(encoded), add_special=True, parse_special=True
            )
            array = (mtmd.mtmd_bitmap_p_ctypes * len(bitmaps))(*(b for b, _ in bitmaps))
            with self.lock:
                if not self._context:
                    raise UnavailableError("the model was swapped out while the request began")
                status = mtmd.mtmd_tokenize(
                    self._context, chunks, ctypes.byref(request), array, len(bitmaps)
                )
            if status != 0:
                raise InvalidArgumentError(
                    "input.conversation.messages",
                    f"the images do not fit the prompt (libmtmd status {status}): a message's "
                    f"text must not contain {self.marker!r} itself",
                )
            return _prompt(chunks, [digest for _, digest in bitmaps])
        finally:
            mtmd.mtmd_input_chunks_free(chunks)
            for bitmap, _ in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)

    def decode(
        self, context: Any, image: ImageChunk, position: int, seq_id: int, batch_size: int
    ) -> None:
        """Encode ``image`` and decode its embeddings into ``seq_id`` from ``position`` (engine
        thread), in batches of at most ``batch_size`` and the context's micro-batch. Raises
        ConfigurationError when the image cannot fit a micro-batch, InternalError when
        libmtmd fails."""
        micro = int(llama.llama_n_ubatch(context))
        if self._non_causal and image.tokens > micro:
            raise ConfigurationError(
                f"an image is {image.tokens} tokens but a micro-batch holds {micro}: raise the "
                "agents' --ubatch-size (or the state's placement.ubatch_size) to at least that"
            )
        batch_size = min(batch_size, micro)
        after = llama.llama_pos(0)
        with self.lock:
            if not self._context:
                raise InternalError("the projector was closed")
            status = mtmd.mtmd_encode_chunk(self._context, image.chunk)
            if status == 0:
                embeddings = mtmd.mtmd_get_output_embd(self._context)
                status = mtmd.mtmd_helper_decode_image_chunk(
                    self._context,
                    context,
                    image.chunk,
                    embeddings,
                    position,
                    seq_id,
                    batch_size,
                    ctypes.byref(after),
                    mtmd.mtmd_helper_post_decode_callback(),
                    None,
                )
        if status != 0:
            raise InternalError(f"the image could not be decoded (libmtmd status {status})")

    def close(self) -> None:
        """Free libmtmd's context (after any call in flight)."""
        with self.lock:
            if self._context:
                mtmd.mtmd_free(self._context)
                self._context = None


def _bitmap(image: generation_pb2.Image, index: int) -> tuple[Any, bytes]:
    """A libmtmd RGB bitmap of ``image``, decoded with Pillow, and the bytes' SHA-256."""
    try:
        with Image.open(io.BytesIO(image.data)) as opened:
            rgb = opened.convert("RGB")
    except (OSError, ValueError) as error:
        raise InvalidArgumentError(
            "input.conversation.messages", f"image {index + 1} does not decode: {error}"
        ) from None
    width, height = rgb.size
    pixels = rgb.tobytes()
    bitmap = mtmd.mtmd_bitmap_init(
        width, height, (ctypes.c_uint8 * len(pixels)).from_buffer_copy(pixels)
    )
    if not bitmap:
        raise InternalError("libmtmd could not take the image")
    digest = hashlib.sha256(image.data).digest()
    mtmd.mtmd_bitmap_set_id(bitmap, digest.hex().encode())
    return bitmap, digest


def _prompt(chunks: Any, digests: list[bytes]) -> MediaPrompt:
    """Tokens and owned image chunks, in order, from libmtmd's chunk list."""
    tokens: list[int] = []
    images: dict[int, ImageChunk] = {}
    found = 0
    for index in range(mtmd.mtmd_input_chunks_size(chunks)):
        chunk = mtmd.mtmd_input_chunks_get(chunks, index)
        if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
            count = ctypes.c_size_t()
            text = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
            tokens.extend(text[i] for i in range(count.value))
            continue
        positions = int(mtmd.mtmd_input_chunk_get_n_pos(chunk))
        images[len(tokens)] = ImageChunk(mtmd.mtmd_input_chunk_copy(chunk), positions)
        tokens.extend(placeholders(digests[found], positions))
        found += 1
    return MediaPrompt(tokens, images)
