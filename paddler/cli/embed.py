"""``paddler embed``: vectors of texts from the models behind a balancer."""

from __future__ import annotations

import enum
import json
import math
from dataclasses import replace
from typing import Annotated

import typer

from paddler.cli.failure import exit_on_rpc_error
from paddler.cli.options import ApiKeyFileOption, TlsCaOption, TlsServerNameOption, dialer
from paddler.cli.streaming import (
    DEFAULT_INFERENCE_ADDRESS,
    INFERENCE_ADDRESS_HELP,
    RequestModelOption,
)
from paddler.v1 import embedding_pb2, inference_pb2, inference_pb2_grpc

MAX_REPLY_BYTES = 64 << 20


class PoolingChoice(enum.StrEnum):
    """How a text's token vectors become one."""

    model = "model"
    mean = "mean"
    cls = "cls"
    last = "last"


_POOLING = {
    PoolingChoice.model: embedding_pb2.POOLING_UNSPECIFIED,
    PoolingChoice.mean: embedding_pb2.POOLING_MEAN,
    PoolingChoice.cls: embedding_pb2.POOLING_CLS,
    PoolingChoice.last: embedding_pb2.POOLING_LAST,
}


def embed(
    texts: Annotated[list[str], typer.Argument(help="The texts to embed.")],
    address: Annotated[
        str, typer.Option(envvar="PADDLER_INFERENCE_ADDRESS", help=INFERENCE_ADDRESS_HELP)
    ] = DEFAULT_INFERENCE_ADDRESS,
    pooling: Annotated[
        PoolingChoice,
        typer.Option(envvar="PADDLER_POOLING", help="model: the GGUF's own pooling, else mean."),
    ] = PoolingChoice.model,
    normalize: Annotated[
        bool, typer.Option(envvar="PADDLER_NORMALIZE", help="Scale each vector to length 1 (L2).")
    ] = True,
    similarity: Annotated[
        bool,
        typer.Option(
            envvar="PADDLER_SIMILARITY", help="Print the texts' cosine similarity matrix instead."
        ),
    ] = False,
    model: RequestModelOption = "",
    timeout: Annotated[
        float, typer.Option(min=0.1, envvar="PADDLER_TIMEOUT", help="Seconds for the reply.")
    ] = 120.0,
    api_key_file: ApiKeyFileOption = None,
    tls_ca: TlsCaOption = None,
    tls_server_name: TlsServerNameOption = "",
) -> None:
    """Print one JSON line per text (index, tokens, embedding), or a similarity matrix."""
    embedding = embedding_pb2.EmbeddingInput(
        texts=texts,
        pooling=_POOLING[pooling],
        normalization=embedding_pb2.NORMALIZATION_L2
        if normalize
        else embedding_pb2.NORMALIZATION_NONE,
    )
    # A batch of wide vectors passes gRPC's default 4 MiB receive limit (512 x 4096 floats).
    connection = dialer(tls_ca, tls_server_name, api_key_file)
    connection = replace(
        connection,
        options=(*connection.options, ("grpc.max_receive_message_length", MAX_REPLY_BYTES)),
    )
    with connection.channel(address) as channel, exit_on_rpc_error():
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        request = inference_pb2.InferenceServiceEmbedRequest(input=embedding, model=model)
        result = stub.Embed(request, timeout=timeout).result
    vectors = [list(vector.values) for vector in result.embeddings]
    if similarity:
        for row in vectors:
            typer.echo(" ".join(f"{_cosine(row, column):6.3f}" for column in vectors))
    else:
        for index, (vector, embedded) in enumerate(zip(vectors, result.embeddings, strict=True)):
            line = {"index": index, "tokens": embedded.tokens, "embedding": vector}
            typer.echo(json.dumps(line))
    agents = ", ".join(sorted(set(result.agent_names)))
    typer.echo(f"[{agents} · {result.model} · {result.prompt_tokens} tokens]", err=True)


def _cosine(left: list[float], right: list[float]) -> float:
    dot = sum(a * b for a, b in zip(left, right, strict=True))
    norms = math.sqrt(sum(a * a for a in left)) * math.sqrt(sum(b * b for b in right))
    return dot / norms if norms else 0.0
