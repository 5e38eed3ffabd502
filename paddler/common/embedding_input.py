"""Model-free checks of an EmbeddingInput, shared by the balancer and the agent."""

from __future__ import annotations

from paddler.common.errors import InvalidArgumentError
from paddler.common.generation_input import MAX_INPUT_BYTES
from paddler.v1 import embedding_pb2

# Texts one request may carry; the balancer splits them into parts of at most PART_TEXTS.
MAX_TEXTS = 512


def check_embedding_input(embedding: embedding_pb2.EmbeddingInput) -> None:
    """Raise InvalidArgumentError naming the first field to fix."""
    texts = embedding.texts
    if not texts:
        raise InvalidArgumentError("input.texts", "send at least one text to embed")
    if len(texts) > MAX_TEXTS:
        raise InvalidArgumentError(
            "input.texts", f"has {len(texts)} texts; the limit is {MAX_TEXTS} per request"
        )
    for index, text in enumerate(texts):
        if not text:
            raise InvalidArgumentError(f"input.texts[{index}]", "is empty; send some text")
    size = sum(len(text.encode()) for text in texts)
    if size > MAX_INPUT_BYTES:
        raise InvalidArgumentError(
            "input.texts", f"are {size} bytes together; the limit is {MAX_INPUT_BYTES} (1 MiB)"
        )
    if embedding.pooling not in embedding_pb2.Pooling.values():
        raise InvalidArgumentError(
            "input.pooling", f"unknown pooling {embedding.pooling}; use MEAN, CLS or LAST"
        )
    if embedding.normalization not in embedding_pb2.Normalization.values():
        raise InvalidArgumentError(
            "input.normalization",
            f"unknown normalization {embedding.normalization}; use L2 or NONE",
        )
