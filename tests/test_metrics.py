"""The balancer's Prometheus metrics, scraped from its web server and parsed with
prometheus-client's own parser: gauges follow the cluster, counters and histograms move by
exactly the requests sent."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import grpc
import httpx
import openai
import pytest

from tests.client import COUNTING_PROMPT, generate, prompt_request
from tests.cluster import Cluster, cluster, to_inference
from tests.metric_samples import Samples, parse_samples, value
from tests.openai_clients import MODEL, client_of

WAIT_S = 60.0


@pytest.fixture(scope="module")
def shared() -> Iterator[Cluster]:
    """One balancer with one 2-slot agent."""
    with cluster(("solo", 2)) as c:
        yield c


def scrape(c: Cluster) -> Samples:
    """Every sample of /metrics, by name and labels."""
    reply = httpx.get(f"{c.balancer.web}/metrics", timeout=10)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return parse_samples(reply.text)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every sample of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)


def wait_until(c: Cluster, holds: Callable[[Samples], bool]) -> Samples:
    deadline = time.monotonic() + WAIT_S
    while True:
        samples = scrape(c)
        if holds(samples):
            return samples
        assert time.monotonic() < deadline, "the metrics never showed it"
        time.sleep(0.05)


def test_the_cluster_gauges_show_the_agent(shared: Cluster) -> None:
    samples = wait_until(
        shared, lambda s: total(s, "paddler_agent_slots", agent="solo", state="total") == 2
    )
    address = shared.agents["solo"].address
    assert value(samples, "paddler_agents_registered") == 1
    assert value(samples, "paddler_agent_ready", agent="solo", address=address) == 1
    assert value(samples, "paddler_agent_slots", agent="solo", address=address, state="busy") == 0
    assert value(samples, "paddler_agent_issues", agent="solo", address=address) == 0
    assert value(samples, "paddler_buffered_requests") == 0


def test_counters_and_histograms_move_by_exactly_the_requests_served(shared: Cluster) -> None:
    before = scrape(shared)
    completion_tokens = 0
    for length in (3, 5, 7):
        reply = generate(shared.inference, to_inference(prompt_request("Hello", length)))
        completion_tokens += reply.summary.usage.completion_tokens
    with client_of(shared) as client:
        for _ in range(2):
            chat = client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
            )
            assert chat.usage is not None
            completion_tokens += chat.usage.completion_tokens
    served = {"kind": "generate", "outcome": "served", "code": "OK"}
    # A request is counted as its stream ends, a moment after the client has its summary.
    after = wait_until(
        shared,
        lambda s: (
            total(s, "paddler_requests_total", **served)
            - total(before, "paddler_requests_total", **served)
            >= 5
        ),
    )

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert moved("paddler_requests_total", api="grpc", **served) == 3
    assert moved("paddler_requests_total", api="openai", **served) == 2
    assert moved("paddler_time_to_first_token_seconds_count") == 5
    assert moved("paddler_request_duration_seconds_count", kind="generate") == 5
    assert moved("paddler_buffer_wait_seconds_count") == 5
    assert moved("paddler_prompt_tokens_count", kind="generate") == 5
    assert moved("paddler_completion_tokens_count") == 5
    assert moved("paddler_completion_tokens_sum") == completion_tokens
    assert moved("paddler_generated_tokens_total") == completion_tokens
    # Tokens after the first of each reply, less the gap before each summary.
    assert moved("paddler_inter_token_latency_seconds_count") > 0


def test_the_busy_gauge_follows_a_stream_and_a_cancel_is_counted(shared: Cluster) -> None:
    before = scrape(shared)
    stream = shared.inference.Generate(to_inference(prompt_request(COUNTING_PROMPT, 400)))
    assert next(stream).HasField("text")
    wait_until(shared, lambda s: total(s, "paddler_agent_slots", agent="solo", state="busy") == 1)
    stream.cancel()
    after = wait_until(
        shared,
        lambda s: (
            total(s, "paddler_agent_slots", agent="solo", state="busy") == 0
            and total(s, "paddler_requests_total", outcome="cancelled")
            > total(before, "paddler_requests_total", outcome="cancelled")
        ),
    )
    cancelled = {
        "api": "grpc",
        "kind": "generate",
        "outcome": "cancelled",
        "code": "CANCELLED",
        "key": "",
    }
    assert (
        value(after, "paddler_requests_total", **cancelled)
        - value(before, "paddler_requests_total", **cancelled)
        == 1
    )


def test_embeddings_are_counted_with_their_tokens(shared: Cluster) -> None:
    before = scrape(shared)
    with client_of(shared) as client:
        reply = client.embeddings.create(model=MODEL, input=["one", "two", "three"])
    labels = {"api": "openai", "kind": "embed", "outcome": "served", "code": "OK"}
    after = wait_until(
        shared,
        lambda s: (
            total(s, "paddler_requests_total", **labels)
            > total(before, "paddler_requests_total", **labels)
        ),
    )
    assert (
        total(after, "paddler_requests_total", **labels)
        - total(before, "paddler_requests_total", **labels)
        == 1
    )
    tokens = total(after, "paddler_prompt_tokens_sum", kind="embed") - total(
        before, "paddler_prompt_tokens_sum", kind="embed"
    )
    assert tokens == reply.usage.prompt_tokens


def test_requests_refused_before_routing_are_counted_with_their_code(shared: Cluster) -> None:
    before = scrape(shared)
    bad = prompt_request("Hello", 4)
    bad.input.sampling.top_p = 2
    with pytest.raises(grpc.RpcError):
        generate(shared.inference, to_inference(bad))
    with client_of(shared) as client:
        with pytest.raises(openai.BadRequestError):  # pydantic refuses the body
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Hi"}], temperature=-1
            )
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model="nope", input="Hi")
    after = scrape(shared)

    def moved(**labels: str) -> float:
        return total(after, "paddler_requests_total", outcome="refused", **labels) - total(
            before, "paddler_requests_total", outcome="refused", **labels
        )

    assert moved(api="grpc", kind="generate", code="INVALID_ARGUMENT") == 1
    assert moved(api="openai", kind="generate", code="INVALID_ARGUMENT") == 1
    assert moved(api="openai", kind="embed", code="NOT_FOUND") == 1
    assert moved() == 3
