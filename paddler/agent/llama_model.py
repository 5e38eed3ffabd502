"""A GGUF model loaded through llama.cpp's C API: load checks, tokenizer and vocabulary."""

from __future__ import annotations

import ctypes
from pathlib import Path

import llama_cpp as llama

from paddler.agent.grammar_constraint import GrammarCompiler
from paddler.common.errors import PaddlerError
from paddler.common.placement import PlacementSettings

GGUF_MAGIC = b"GGUF"
_PIECE_BUFFER = 256


class ModelLoadError(PaddlerError):
    """The model file is missing, is not a GGUF, or llama.cpp could not load it."""


def check_model_file(path: Path) -> None:
    """Fail with one readable line unless ``path`` is a readable GGUF file."""
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist")
    with path.open("rb") as handle:
        magic = handle.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        raise ModelLoadError(f"model file {path} is not a GGUF file (it does not start with GGUF)")


SPLIT_MODES = {
    "none": llama.LLAMA_SPLIT_MODE_NONE,
    "layer": llama.LLAMA_SPLIT_MODE_LAYER,
    "row": llama.LLAMA_SPLIT_MODE_ROW,
}


def load_mode(placement: PlacementSettings) -> int:
    """llama.cpp's load mode for mmap and mlock (mmap alone: auto, mmap where the devices
    support it, as llama.cpp does by default)."""
    if placement.use_mmap:
        return (
            llama.LLAMA_LOAD_MODE_MMAP_MLOCK if placement.use_mlock else llama.LLAMA_LOAD_MODE_AUTO
        )
    return llama.LLAMA_LOAD_MODE_MLOCK if placement.use_mlock else llama.LLAMA_LOAD_MODE_NONE


def place_model(params: llama.llama_model_params, placement: PlacementSettings) -> object:
    """Set the model's placement in ``params``; returns what must stay alive until the load
    returns (the tensor split array)."""
    layers = placement.n_gpu_layers
    if layers is None:  # auto: everything where llama.cpp can offload at all
        layers = -1 if llama.llama_supports_gpu_offload() else 0
    params.n_gpu_layers = layers
    params.split_mode = SPLIT_MODES[placement.split_mode]
    params.main_gpu = placement.main_gpu
    params.load_mode = load_mode(placement)
    if not placement.tensor_split:
        return None
    devices = llama.llama_max_devices()
    if len(placement.tensor_split) > devices:
        raise ModelLoadError(
            f"tensor_split has {len(placement.tensor_split)} shares; this llama.cpp takes at "
            f"most {devices}"
        )
    split = (ctypes.c_float * devices)(*placement.tensor_split)
    params.tensor_split = split
    return split


class LlamaModel:
    """Weights and vocabulary of one GGUF; safe to tokenize from any thread."""

    def __init__(self, path: Path, placement: PlacementSettings | None = None) -> None:
        check_model_file(path)
        llama.llama_backend_init()
        params = llama.llama_model_default_params()
        # Weight repacking into extra buffer types crashes on AMX CPUs (see BRIEF section 4).
        params.use_extra_bufts = False
        split = place_model(params, placement or PlacementSettings())
        model = llama.llama_model_load_from_file(str(path).encode(), params)
        del split  # llama.cpp copied the tensor split while loading
        if not model:
            raise ModelLoadError(f"llama.cpp could not load {path}")
        self.path = path
        self.name = path.name.removesuffix(".gguf")
        self.handle = model
        self.vocab = llama.llama_model_get_vocab(model)
        self.n_vocab: int = llama.llama_vocab_n_tokens(self.vocab)
        self.add_bos: bool = llama.llama_vocab_get_add_bos(self.vocab)
        self._piece = ctypes.create_string_buffer(_PIECE_BUFFER)
        self._piece_capacity = _PIECE_BUFFER
        self.grammars = GrammarCompiler(self.vocab, self.n_vocab)

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        """Tokenize ``text`` (special tokens such as ``<|im_start|>`` are parsed)."""
        data = text.encode()
        capacity = len(data) + 8
        tokens = (llama.llama_token * capacity)()
        count = llama.llama_tokenize(
            self.vocab, data, len(data), tokens, capacity, add_special, True
        )
        if count < 0:
            capacity = -count
            tokens = (llama.llama_token * capacity)()
            count = llama.llama_tokenize(
                self.vocab, data, len(data), tokens, capacity, add_special, True
            )
        return list(tokens[:count])

    def piece(self, token: int) -> bytes:
        """The bytes of one token (may be part of a UTF-8 character). Engine thread only."""
        length = llama.llama_token_to_piece(
            self.vocab, token, self._piece, self._piece_capacity, 0, False
        )
        if length < 0:  # the buffer is too small: llama.cpp says how large it must be
            self._piece_capacity = -length
            self._piece = ctypes.create_string_buffer(self._piece_capacity)
            length = llama.llama_token_to_piece(
                self.vocab, token, self._piece, self._piece_capacity, 0, False
            )
        return self._piece.raw[:length] if length > 0 else b""

    def is_end_of_generation(self, token: int) -> bool:
        """Whether ``token`` ends a sequence (EOS, EOT, ...)."""
        return bool(llama.llama_vocab_is_eog(self.vocab, token))

    def token_text(self, token: int) -> str:
        """The vocabulary text of a special token (for chat templates), or ""."""
        if token < 0:
            return ""
        raw: bytes | None = llama.llama_vocab_get_text(self.vocab, token)
        return raw.decode(errors="replace") if raw else ""

    @property
    def bos_text(self) -> str:
        """Text of the beginning-of-sequence token."""
        return self.token_text(llama.llama_vocab_bos(self.vocab))

    @property
    def eos_text(self) -> str:
        """Text of the end-of-sequence token."""
        return self.token_text(llama.llama_vocab_eos(self.vocab))

    @property
    def chat_template(self) -> str | None:
        """The Jinja chat template stored in the GGUF, if any."""
        raw: bytes | None = llama.llama_model_chat_template(self.handle, None)
        return raw.decode() if raw else None

    def close(self) -> None:
        """Free the weights."""
        llama.llama_model_free(self.handle)
