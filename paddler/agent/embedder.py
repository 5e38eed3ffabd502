"""Embeddings on a llama.cpp context of their own beside the generating slots: texts are packed
into batches of whole sequences, decoded together, and each text's token vectors pooled and
scaled. The context is made on first use and touched by one thread only."""

from __future__ import annotations

import asyncio
import ctypes
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import llama_cpp as llama
import numpy as np
import numpy.typing as npt

from paddler.agent.llama_model import LlamaModel
from paddler.common.errors import InternalError, InvalidArgumentError
from paddler.v1 import embedding_pb2

# Tokens one text may have, and one decode holds. llama.cpp keeps a row of logits per token
# even for embeddings (512 x 49k floats: 100 MB for SmolLM2), so this stays small.
EMBEDDING_CONTEXT = 512
# Texts one decode may hold.
EMBEDDING_SEQUENCES = 32
_GGUF_POOLING = {
    1: embedding_pb2.POOLING_MEAN,
    2: embedding_pb2.POOLING_CLS,
    3: embedding_pb2.POOLING_LAST,
}

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True)
class EmbeddedText:
    """One text's vector and the tokens it came from."""

    values: Vector
    tokens: int


class Embedder:
    """Embeds batches of texts on the model an engine serves; never blocks the engine."""

    def __init__(self, model: LlamaModel, threads: int, context_size: int) -> None:
        self._model = model
        self._threads = threads
        self.max_tokens = min(context_size, EMBEDDING_CONTEXT)
        self.default_pooling = _declared_pooling(model)
        self._context: Any = None
        self._batch: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paddler-embed")

    async def embed(
        self, embedding: embedding_pb2.EmbeddingInput, first_index: int
    ) -> list[EmbeddedText]:
        """One vector per text (``first_index`` numbers them in errors). Cancelled, it returns
        only once the embedding thread has stopped (after the decode under way), so the slot
        its caller holds is held as long as the work goes on."""
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        work = loop.run_in_executor(self._executor, self._embed, embedding, first_index, stop)
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            stop.set()
            await asyncio.wait([work])
            raise

    def close(self) -> None:
        """Free the context (after any embedding in progress)."""
        self._executor.submit(self._free).result()
        self._executor.shutdown()

    def _embed(
        self, embedding: embedding_pb2.EmbeddingInput, first_index: int, stop: threading.Event
    ) -> list[EmbeddedText]:
        token_lists = [self._model.tokenize(text) for text in embedding.texts]
        for index, tokens in enumerate(token_lists):
            if len(tokens) > self.max_tokens:
                raise InvalidArgumentError(
                    f"input.texts[{first_index + index}]",
                    f"is {len(tokens)} tokens; an agent embeds at most {self.max_tokens} "
                    "tokens per text, so split it",
                )
        pooling = embedding.pooling or self.default_pooling
        normalize = embedding.normalization != embedding_pb2.NORMALIZATION_NONE
        embedded: list[EmbeddedText] = []
        for group in _packed(token_lists, self.max_tokens, EMBEDDING_SEQUENCES):
            if stop.is_set():  # the caller went away
                break
            for tokens, vectors in zip(group, self._decode(group), strict=True):
                pooled = _pooled(vectors, pooling)
                if normalize:
                    pooled = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
                embedded.append(EmbeddedText(pooled.astype(np.float32), len(tokens)))
        return embedded

    def _decode(self, group: list[list[int]]) -> list[Vector]:
        """Each sequence's token vectors, from one decode of the whole group."""
        context, batch = self._context_once()
        count = 0
        for seq_id, tokens in enumerate(group):
            for position, token in enumerate(tokens):
                batch.token[count] = token
                batch.pos[count] = position
                batch.n_seq_id[count] = 1
                batch.seq_id[count][0] = seq_id
                batch.logits[count] = True
                count += 1
        batch.n_tokens = count
        status = llama.llama_decode(context, batch)
        try:
            if status != 0:
                raise InternalError(f"llama_decode failed with status {status} on embeddings")
            width = llama.llama_model_n_embd(self._model.handle)
            pointer = llama.llama_get_embeddings(context)
            rows = np.ctypeslib.as_array(pointer, shape=(count, width)).copy()
        finally:
            llama.llama_memory_clear(llama.llama_get_memory(context), True)
        vectors, start = [], 0
        for tokens in group:
            vectors.append(rows[start : start + len(tokens)])
            start += len(tokens)
        return vectors

    def _context_once(self) -> tuple[Any, Any]:
        if self._context is None:
            params = llama.llama_context_default_params()
            params.embeddings = True
            params.pooling_type = llama.LLAMA_POOLING_TYPE_NONE  # we pool, as each request asks
            params.n_ctx = params.n_batch = params.n_ubatch = self.max_tokens
            params.n_seq_max = EMBEDDING_SEQUENCES
            params.kv_unified = True
            params.n_threads = params.n_threads_batch = self._threads
            params.no_perf = True
            context = llama.llama_init_from_model(self._model.handle, params)
            if not context:
                raise InternalError("llama.cpp could not create the embedding context")
            self._context = context
            self._batch = llama.llama_batch_init(self.max_tokens, 0, 1)
        return self._context, self._batch

    def _free(self) -> None:
        if self._context is not None:
            llama.llama_batch_free(self._batch)
            llama.llama_free(self._context)
            self._context = self._batch = None


def _packed(
    token_lists: list[list[int]], max_tokens: int, max_sequences: int
) -> Iterator[list[list[int]]]:
    """Consecutive groups of sequences that fit one decode."""
    group: list[list[int]] = []
    size = 0
    for tokens in token_lists:
        if group and (size + len(tokens) > max_tokens or len(group) == max_sequences):
            yield group
            group, size = [], 0
        group.append(tokens)
        size += len(tokens)
    if group:
        yield group


def _pooled(vectors: Vector, pooling: int) -> Vector:
    pooled: Vector
    if pooling == embedding_pb2.POOLING_CLS:
        pooled = vectors[0]
    elif pooling == embedding_pb2.POOLING_LAST:
        pooled = vectors[-1]
    else:
        pooled = vectors.mean(axis=0)
    return pooled


def _declared_pooling(model: LlamaModel) -> embedding_pb2.Pooling.ValueType:
    """The pooling the GGUF declares (``<arch>.pooling_type``), else mean."""
    architecture = _metadata(model, "general.architecture")
    declared = _metadata(model, f"{architecture}.pooling_type") if architecture else ""
    return _GGUF_POOLING.get(int(declared) if declared.isdigit() else 0, embedding_pb2.POOLING_MEAN)


def _metadata(model: LlamaModel, key: str) -> str:
    buffer = ctypes.create_string_buffer(256)
    length = llama.llama_model_meta_val_str(model.handle, key.encode(), buffer, len(buffer))
    return buffer.value.decode(errors="replace") if length > 0 else ""
