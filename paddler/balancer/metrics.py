"""The balancer's Prometheus metrics: what happened to requests (counters and histograms,
recorded as they run) and how the cluster stands (gauges read from the registry and the buffer
at each scrape). Names and units follow prometheus-client's conventions."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Histogram

from paddler.balancer.agent_registry import AgentRegistry
from paddler.balancer.cluster_gauges import ClusterGauges
from paddler.balancer.rollout import Rollout, RolloutFailure
from paddler.common.errors import PaddlerError
from paddler.common.guards import CALLER

# Seconds: from 5 ms (the balancer's own hop) to minutes (a long reply in a queue).
_TIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TOKEN_GAP_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5)
_TOKEN_BUCKETS = (1, 4, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


class BalancerMetrics:
    """Every metric of one balancer, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "paddler_requests",
            "Requests by API (grpc, openai), kind (generate, embed), outcome (served, "
            "cancelled, failed; refused: before routing, for their input or model) and gRPC "
            "status code, and the API key's name (key; empty without keys).",
            ["api", "kind", "outcome", "code", "key"],
            registry=registry,
        )
        self.time_to_first_token = Histogram(
            "paddler_time_to_first_token_seconds",
            "From a generation's arrival at the balancer to its first piece leaving it.",
            ["api"],
            buckets=_TIME_BUCKETS,
            registry=registry,
        )
        self.inter_token_latency = Histogram(
            "paddler_inter_token_latency_seconds",
            "Between consecutive pieces of one generation, as the balancer relays them.",
            ["api"],
            buckets=_TOKEN_GAP_BUCKETS,
            registry=registry,
        )
        self.request_duration = Histogram(
            "paddler_request_duration_seconds",
            "From a request's arrival to its end, whatever the outcome.",
            ["api", "kind"],
            buckets=_TIME_BUCKETS,
            registry=registry,
        )
        self.buffer_wait = Histogram(
            "paddler_buffer_wait_seconds",
            "Time a request (or one part of an embedding batch) waited for a slot.",
            buckets=_TIME_BUCKETS,
            registry=registry,
        )
        self.prompt_tokens = Histogram(
            "paddler_prompt_tokens",
            "Prompt tokens of each served request (the texts' tokens for embeddings).",
            ["kind"],
            buckets=_TOKEN_BUCKETS,
            registry=registry,
        )
        self.completion_tokens = Histogram(
            "paddler_completion_tokens",
            "Generated tokens of each served generation.",
            buckets=_TOKEN_BUCKETS,
            registry=registry,
        )
        self.generated_tokens = Counter(
            "paddler_generated_tokens",
            "Tokens generated for served generations.",
            registry=registry,
        )
        # Messages relayed (one per generated piece, one summary per reply): the admin
        # panel's throughput, counted as they go out.
        self.pieces_relayed = 0
        self.credentials_refused = Counter(
            "paddler_credentials_refused",
            "Calls refused for a missing or wrong credential, by surface (a gRPC service, "
            "openai, panel) and reason (missing_credential, wrong_credential).",
            ["surface", "reason"],
            registry=registry,
        )
        self.rollout_failures = Counter(
            "paddler_rollout_failures",
            "Rollouts of a desired state stopped because an agent failed to apply it.",
            registry=registry,
        )
        self.pool_requests = Counter(
            "paddler_pool_requests",
            "Routed requests by pool, kind (generate, embed) and outcome (served, cancelled, "
            "failed).",
            ["pool", "kind", "outcome"],
            registry=registry,
        )
        self.pool_time_to_first_token = Histogram(
            "paddler_pool_time_to_first_token_seconds",
            "paddler_time_to_first_token_seconds by the pool that served the generation.",
            ["pool"],
            buckets=_TIME_BUCKETS,
            registry=registry,
        )
        self.pool_inter_token_latency = Histogram(
            "paddler_pool_inter_token_latency_seconds",
            "paddler_inter_token_latency_seconds by the pool that served the generation.",
            ["pool"],
            buckets=_TOKEN_GAP_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "paddler_retries",
            "Requests sent again after an agent failed them (reason: agent_failed, "
            "not_ready, busy).",
            ["reason"],
            registry=registry,
        )

    @contextmanager
    def refusals(self, api: str, kind: str) -> Iterator[None]:
        """Count a request refused before routing (its input, its model) as it is raised."""
        try:
            yield
        except PaddlerError as error:
            self.refused(api, kind, error.code.name)
            raise

    def refused(self, api: str, kind: str, code: str) -> None:
        """Count a request refused before routing."""
        self.requests.labels(api, kind, "refused", code, CALLER.get()).inc()

    def credential_refused(self, surface: str, reason: str) -> None:
        """Count a call refused for its credential."""
        self.credentials_refused.labels(surface, reason.lower()).inc()

    def watch(
        self,
        agents: AgentRegistry,
        rollout: Rollout,
        buffered: Callable[[str], int],
        pools: Callable[[], list[str]],
    ) -> None:
        """Report the cluster's state at each scrape (``buffered``: a pool's waiting requests;
        ``pools``: every pool's name)."""
        self.registry.register(ClusterGauges(agents, rollout, buffered, pools))

    def rollout_failed(self, failure: RolloutFailure) -> None:
        """Count a rollout an agent stopped."""
        self.rollout_failures.inc()


class RequestMeter:
    """One request's timings and end, as the balancer relays it."""

    def __init__(self, metrics: BalancerMetrics, api: str, kind: str, pool: str) -> None:
        self._metrics = metrics
        self._api = api
        self._kind = kind
        self._pool = pool
        self._started = time.perf_counter()
        self._last: float | None = None
        # The gap before the latest piece: observed once another piece follows it, so the gap
        # before the summary (the stream's last message) is never taken for a token's.
        self._gap: float | None = None

    def waited(self, since: float) -> None:
        """A wait for a slot that began at ``since`` (time.perf_counter) just ended."""
        self._metrics.buffer_wait.observe(time.perf_counter() - since)

    def piece(self) -> None:
        """A message of the stream went out."""
        self._metrics.pieces_relayed += 1
        now = time.perf_counter()
        if self._last is None:
            self._metrics.time_to_first_token.labels(self._api).observe(now - self._started)
            self._metrics.pool_time_to_first_token.labels(self._pool).observe(now - self._started)
        else:
            if self._gap is not None:
                self._metrics.inter_token_latency.labels(self._api).observe(self._gap)
                self._metrics.pool_inter_token_latency.labels(self._pool).observe(self._gap)
            self._gap = now - self._last
        self._last = now

    def ended(self, outcome: str, code: str, prompt_tokens: int = 0, completion: int = 0) -> None:
        """Count the request (served, cancelled or failed, with its status code)."""
        metrics = self._metrics
        metrics.requests.labels(self._api, self._kind, outcome, code, CALLER.get()).inc()
        metrics.pool_requests.labels(self._pool, self._kind, outcome).inc()
        duration = time.perf_counter() - self._started
        metrics.request_duration.labels(self._api, self._kind).observe(duration)
        if outcome != "served":
            return
        metrics.prompt_tokens.labels(self._kind).observe(prompt_tokens)
        if self._kind == "generate":
            metrics.completion_tokens.observe(completion)
            metrics.generated_tokens.inc(completion)
