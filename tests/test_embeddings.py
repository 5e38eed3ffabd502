"""Embeddings through the balancer: over gRPC and through the official `openai` client, one
vector per text in input order, split across agents, beside running generations."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import openai
import pytest

from paddler.v1 import embedding_pb2, inference_pb2, inference_pb2_grpc
from tests.client import COUNTING_PROMPT, prompt_request
from tests.cluster import Cluster, cluster, to_inference
from tests.openai_clients import MODEL, bad_request_param, client_of

SENTENCES = [
    "The cat sat on the mat.",
    "A kitten rested on a rug.",
    "Stock markets fell sharply today.",
    "Bread is baked in an oven.",
]


@pytest.fixture(scope="module")
def shared() -> Iterator[Cluster]:
    """One balancer with two 2-slot agents."""
    with cluster(("left", 2), ("right", 2)) as c:
        yield c


def embed(
    c: Cluster,
    texts: list[str],
    pooling: embedding_pb2.Pooling.ValueType = embedding_pb2.POOLING_UNSPECIFIED,
    normalization: embedding_pb2.Normalization.ValueType = (
        embedding_pb2.NORMALIZATION_UNSPECIFIED
    ),
) -> embedding_pb2.EmbeddingResult:
    embedding = embedding_pb2.EmbeddingInput(
        texts=texts, pooling=pooling, normalization=normalization
    )
    request = inference_pb2.InferenceServiceEmbedRequest(input=embedding)
    return c.inference.Embed(request, timeout=120).result


def same_vector(left: np.ndarray, right: np.ndarray) -> bool:
    """Equal up to llama.cpp's rounding, which depends on where in a batch a text sits: flash
    attention sums in f16 (a cosine of 0.99986 at worst over 128 texts, measured). A text given
    another's vector, or pooled another way, is far below this."""
    cosine = float(left @ right) / float(np.linalg.norm(left) * np.linalg.norm(right))
    return cosine > 0.9995


def vectors(result: embedding_pb2.EmbeddingResult) -> np.ndarray:
    return np.array([list(e.values) for e in result.embeddings], dtype=np.float32)


def test_each_text_gets_a_unit_vector_with_its_tokens(shared: Cluster) -> None:
    result = embed(shared, SENTENCES)
    found = vectors(result)
    assert found.shape[0] == len(SENTENCES)
    assert found.shape[1] > 100
    assert np.allclose(np.linalg.norm(found, axis=1), 1.0, atol=1e-4)
    assert all(e.tokens > 0 for e in result.embeddings)
    assert result.prompt_tokens == sum(e.tokens for e in result.embeddings)
    assert result.model == MODEL
    similarity = found @ found.T
    # The two sentences about a cat on a mat are nearer each other than to the stock market.
    assert similarity[0, 1] > similarity[0, 2]


def test_without_normalization_and_with_other_pooling_the_vectors_differ(shared: Cluster) -> None:
    raw = vectors(embed(shared, SENTENCES[:2], normalization=embedding_pb2.NORMALIZATION_NONE))
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-2)
    mean = vectors(embed(shared, SENTENCES[:2], embedding_pb2.POOLING_MEAN))
    last = vectors(embed(shared, SENTENCES[:2], embedding_pb2.POOLING_LAST))
    cls = vectors(embed(shared, SENTENCES[:2], embedding_pb2.POOLING_CLS))
    # SmolLM2's GGUF declares no pooling: the default is mean.
    assert np.allclose(mean, vectors(embed(shared, SENTENCES[:2])), atol=1e-5)
    assert not np.allclose(mean, last, atol=1e-2)
    assert not np.allclose(mean, cls, atol=1e-2)


def test_a_text_gets_the_same_vector_alone_and_in_a_split_batch(shared: Cluster) -> None:
    texts = [f"Sentence number {i}: {SENTENCES[i % len(SENTENCES)]}" for i in range(64)]
    whole = embed(shared, texts)
    # 64 texts go in parts of 16, at once, to whichever agents have a free slot.
    assert len(whole.agent_names) == 4
    assert set(whole.agent_names) == {"left", "right"}
    batched = vectors(whole)
    for index in (0, 17, 38, 63):
        alone = vectors(embed(shared, [texts[index]]))[0]
        assert same_vector(alone, batched[index]), index


def test_generation_goes_on_while_the_same_agent_embeds() -> None:
    with cluster(("solo", 2)) as c:
        stream = c.inference.Generate(to_inference(prompt_request(COUNTING_PROMPT, 400)))
        assert next(stream).HasField("text")
        done = threading.Event()
        pieces_during: list[float] = []

        def read() -> None:
            for response in stream:
                if done.is_set():
                    return
                if response.HasField("text"):
                    pieces_during.append(time.monotonic())

        reader = threading.Thread(target=read)
        reader.start()
        # The longest batch there is: it holds the agent's second slot for a while.
        texts = [f"{i}. {SENTENCES[i % len(SENTENCES)]}" for i in range(512)]
        started = len(pieces_during)
        result = embed(c, texts)
        during = len(pieces_during) - started
        done.set()
        stream.cancel()
        reader.join()
        assert len(result.embeddings) == 512
        assert set(result.agent_names) == {"solo"}
        # Held back by the embeddings, the stream would have sent at most the piece in flight.
        assert during >= 3, during


def test_a_text_too_long_is_refused_naming_it_in_the_clients_numbering(shared: Cluster) -> None:
    texts = ["short"] * 20
    texts[18] = "word " * 2000
    with pytest.raises(grpc.RpcError) as raised:
        embed(shared, texts)
    error = raised.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input.texts[18]" in (error.details() or "")
    assert "512" in (error.details() or "")


@pytest.mark.parametrize(
    ("texts", "enums", "field"),
    [
        ([], {}, "input.texts"),
        (["a"] * 513, {}, "input.texts"),
        (["a", ""], {}, "input.texts[1]"),
        (["x" * 600_000] * 2, {}, "input.texts"),  # over 1 MiB together
        (["a"], {"pooling": 9}, "input.pooling"),  # a number no enum value has
        (["a"], {"normalization": 9}, "input.normalization"),
    ],
)
def test_a_bad_batch_is_refused_before_any_agent(
    texts: list[str], enums: dict[str, int], field: str
) -> None:
    with cluster() as empty:
        embedding = embedding_pb2.EmbeddingInput(texts=texts)
        for name, number in enums.items():
            setattr(embedding, name, number)
        request = inference_pb2.InferenceServiceEmbedRequest(input=embedding)
        stub: inference_pb2_grpc.InferenceServiceStub = empty.inference
        with pytest.raises(grpc.RpcError) as raised:
            stub.Embed(request, timeout=30)
        error = raised.value
        assert isinstance(error, grpc.Call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in (error.details() or "")


def test_the_openai_client_gets_the_same_vectors_as_floats_and_base64(shared: Cluster) -> None:
    with client_of(shared) as client:
        # The client asks for base64 by default and decodes it itself.
        encoded = client.embeddings.create(model=MODEL, input=SENTENCES)
        floats = client.embeddings.create(model=MODEL, input=SENTENCES, encoding_format="float")
        single = client.embeddings.create(model=MODEL, input=SENTENCES[2])
    assert [d.index for d in encoded.data] == list(range(len(SENTENCES)))
    assert encoded.model == MODEL
    assert encoded.usage.prompt_tokens == encoded.usage.total_tokens > 0
    as_base64 = np.array([d.embedding for d in encoded.data], dtype=np.float32)
    as_floats = np.array([d.embedding for d in floats.data], dtype=np.float32)
    assert np.array_equal(as_base64, as_floats)
    assert np.allclose(as_floats, vectors(embed(shared, SENTENCES)), atol=1e-6)
    assert same_vector(np.array(single.data[0].embedding, dtype=np.float32), as_floats[2])


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"dimensions": 64}, "dimensions"),
        ({"input": []}, "input"),
        ({"input": [1, 2, 3]}, "input"),
        ({"input": ["a", ""]}, "input[1]"),
        ({"encoding_format": "int8"}, "encoding_format"),
    ],
)
def test_a_bad_embeddings_field_is_a_bad_request_that_names_it(
    shared: Cluster, extra: dict[str, object], param: str
) -> None:
    with client_of(shared) as client:
        body = {"model": MODEL, "input": SENTENCES, **extra}
        assert bad_request_param(client, "/embeddings", body) == param


def test_an_unknown_model_is_not_found(shared: Cluster) -> None:
    with client_of(shared) as client, pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="hello")
