"""The agent's Prometheus metrics (``paddler_engine_*``, apart from the balancer's
``paddler_agent_*`` view of each agent): what each decode step did (recorded by the engine thread)
and how full the slots and the KV cache are (read at each scrape)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from paddler.agent.devices import DeviceInfo

_STEP_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5)
_STREAM_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class AgentMetrics:
    """Every metric of one agent, in a registry of its own; kept across model swaps."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.step_duration = Histogram(
            "paddler_engine_step_duration_seconds",
            "Wall time of one llama_decode step (prefill and decode together).",
            buckets=_STEP_BUCKETS,
            registry=self.registry,
        )
        self.step_streams = Histogram(
            "paddler_engine_step_streams",
            "Slots that got a generated token in one step (the batch's generating streams).",
            buckets=_STREAM_BUCKETS,
            registry=self.registry,
        )
        self.prefilled_tokens = Counter(
            "paddler_engine_prefilled_tokens",
            "Prompt tokens decoded (prefill; tokens reused from a slot's cache are not).",
            registry=self.registry,
        )
        self.decoded_tokens = Counter(
            "paddler_engine_decoded_tokens",
            "Tokens decoded for generating streams (one per stream per step).",
            registry=self.registry,
        )
        self.prompt_cache_restored_tokens = Counter(
            "paddler_engine_prompt_cache_restored_tokens",
            "Prompt tokens restored from the host-memory prompt cache instead of prefilled.",
            registry=self.registry,
        )
        self.prefix_copied_tokens = Counter(
            "paddler_engine_prefix_copied_tokens",
            "Prompt tokens copied from another slot's KV cache instead of prefilled.",
            registry=self.registry,
        )
        self.credentials_refused = Counter(
            "paddler_credentials_refused",
            "Calls refused for a missing or wrong agent token, by surface and reason.",
            ["surface", "reason"],
            registry=self.registry,
        )

    def credential_refused(self, surface: str, reason: str) -> None:
        """Count a call refused for its credential."""
        self.credentials_refused.labels(surface, reason.lower()).inc()

    def step(self, streams: int, prompt_tokens: int, seconds: float) -> None:
        """One step of the engine thread."""
        self.step_duration.observe(seconds)
        if streams:
            self.step_streams.observe(streams)
            self.decoded_tokens.inc(streams)
        if prompt_tokens:
            self.prefilled_tokens.inc(prompt_tokens)

    def watch(self, occupancy: Callable[[], Occupancy]) -> None:
        """Report slots and KV cache use at each scrape."""
        self.registry.register(_OccupancyCollector(occupancy))

    def watch_devices(self, devices: Callable[[], Sequence[DeviceInfo]]) -> None:
        """Report the memory of the devices llama.cpp sees at each scrape."""
        self.registry.register(_DeviceCollector(devices))


Occupancy = tuple[int, int, int, int, int, int]
"""Slots busy and total, KV cache tokens held and the cache's capacity, and the host-memory
prompt cache's bytes and prompts."""


class _OccupancyCollector(Collector):
    def __init__(self, occupancy: Callable[[], Occupancy]) -> None:
        self._occupancy = occupancy

    def collect(self) -> Iterator[Metric]:
        """Slots and KV cache, busy or used against total; the host-memory prompt cache."""
        busy, total, cached, capacity, stored_bytes, stored_prompts = self._occupancy()
        yield _gauge(
            "paddler_engine_slots",
            "This agent's slots: busy and total.",
            "state",
            {"busy": busy, "total": total},
        )
        yield _gauge(
            "paddler_engine_kv_cache_tokens",
            "Tokens whose keys and values the slots hold (kept for prompt reuse too), and the "
            "context's capacity.",
            "state",
            {"used": cached, "capacity": capacity},
        )
        yield _gauge(
            "paddler_engine_prompt_cache",
            "The host-memory prompt cache (slots' caches kept after the slots were reused): "
            "bytes and prompts held.",
            "unit",
            {"bytes": stored_bytes, "prompts": stored_prompts},
        )


class _DeviceCollector(Collector):
    def __init__(self, devices: Callable[[], Sequence[DeviceInfo]]) -> None:
        self._devices = devices

    def collect(self) -> Iterator[Metric]:
        """Each device's memory, total and free, where llama.cpp reports it."""
        gauge = GaugeMetricFamily(
            "paddler_engine_device_memory_bytes",
            "Memory of each device llama.cpp sees (the CPU's is the host's), total and free; "
            "devices that report none are left out.",
            labels=["device", "state"],
        )
        for device in self._devices():
            if device.memory_total_bytes:
                gauge.add_metric([device.name, "total"], device.memory_total_bytes)
                gauge.add_metric([device.name, "free"], device.memory_free_bytes)
        yield gauge


def _gauge(name: str, documentation: str, label: str, values: dict[str, int]) -> Metric:
    """A gauge with one sample per value of its one label."""
    gauge = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in values.items():
        gauge.add_metric([key], value)
    return gauge
