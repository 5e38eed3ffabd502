"""``POST /v1/embeddings``: the request body as OpenAI defines it (the fields we serve), and the
response (floats, or base64 of little-endian float32 as the official clients ask by default)."""

from __future__ import annotations

import base64
import struct
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from paddler.common.embedding_input import check_embedding_input
from paddler.common.errors import InvalidArgumentError
from paddler.openai_api.sampling_fields import User
from paddler.v1 import embedding_pb2

_POOLING = {
    None: embedding_pb2.POOLING_UNSPECIFIED,
    "mean": embedding_pb2.POOLING_MEAN,
    "cls": embedding_pb2.POOLING_CLS,
    "last": embedding_pb2.POOLING_LAST,
}


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``; unknown fields are ignored, as OpenAI does."""

    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | Annotated[list[str], Field(min_length=1)] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: User = None
    # Our extras (llama-server has the first): how to pool and whether to scale to length 1.
    pooling: Literal["mean", "cls", "last"] | None = None
    normalize: bool = True

    def embedding_input(self) -> embedding_pb2.EmbeddingInput:
        """Our EmbeddingInput; refuses what we do not serve."""
        if self.dimensions is not None:
            raise InvalidArgumentError(
                "dimensions",
                "the model's vectors cannot be shortened here; leave dimensions unset",
            )
        texts = [self.input] if isinstance(self.input, str) else self.input
        if not all(isinstance(text, str) for text in texts):
            raise InvalidArgumentError("input", "token arrays are not supported; send text")
        embedding = embedding_pb2.EmbeddingInput(
            texts=[str(text) for text in texts],
            pooling=_POOLING[self.pooling],
            normalization=(
                embedding_pb2.NORMALIZATION_L2
                if self.normalize
                else embedding_pb2.NORMALIZATION_NONE
            ),
        )
        try:
            check_embedding_input(embedding)
        except InvalidArgumentError as error:  # name the field as this API calls it
            field = error.violations[0].field.removeprefix("input.").replace("texts", "input", 1)
            raise InvalidArgumentError(field, error.violations[0].description) from None
        return embedding


def response(body: EmbeddingRequest, result: embedding_pb2.EmbeddingResult) -> dict[str, Any]:
    """The list object of vectors, in input order."""
    data = [
        {"object": "embedding", "index": index, "embedding": _encoded(vector, body.encoding_format)}
        for index, vector in enumerate(result.embeddings)
    ]
    usage = {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}
    return {"object": "list", "data": data, "model": result.model, "usage": usage}


def _encoded(vector: embedding_pb2.Embedding, encoding: str) -> list[float] | str:
    if encoding == "float":
        return list(vector.values)
    raw = struct.pack(f"<{len(vector.values)}f", *vector.values)  # little-endian float32
    return base64.b64encode(raw).decode()
