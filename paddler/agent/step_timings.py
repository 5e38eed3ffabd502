"""How long the engine's steps take lately: per stream count, and per prompt token prefilled.

The engine thread records every step; the asyncio side copies the figures into each status
snapshot, where the balancer's speed-aware routing reads them. A figure no step has refreshed
for ``STALE_AFTER_S`` is left out of the snapshot (the host may be busier or idler by now): the
balancer then takes the agent's speed as unknown, sends it work, and the figure is measured
anew from a fresh mean.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from paddler.v1 import status_pb2

# Weight of the newest step in each moving average once it has 20 steps: about the last 20
# count. Before that every step weighs the same (a plain mean), so a first noisy step does
# not linger in the estimate.
SMOOTHING = 0.05
STALE_AFTER_S = 300.0


class StepTimings:
    """Exponential moving averages of decode step time by stream count, and of prefill time
    per prompt token (a mixed step's time beyond the decode part, over its prompt tokens)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._step_s: dict[int, float] = {}
        self._steps: dict[int, int] = {}
        self._refreshed: dict[int, float] = {}  # stream count -> clock of its latest step
        self._prefill_s_per_token = 0.0
        self._prefills = 0
        self._backlog = 0

    def record(self, streams: int, prompt_tokens: int, seconds: float, backlog: int) -> None:
        """One step: ``streams`` slots got a token, ``prompt_tokens`` prompt tokens were
        decoded besides, in ``seconds``; ``backlog`` prompt tokens still wait."""
        with self._lock:
            self._backlog = backlog
            if prompt_tokens == 0:
                if streams > 0:
                    self._record_decode(streams, seconds)
                return
            decode_s = self._decode_estimate(streams)
            per_token = max(seconds - decode_s, 0.0) / prompt_tokens
            self._prefills += 1
            previous = self._prefill_s_per_token
            self._prefill_s_per_token = _average(previous, per_token, self._prefills)

    def _record_decode(self, streams: int, seconds: float) -> None:
        now = self._clock()
        if now - self._refreshed.get(streams, now) > STALE_AFTER_S:
            self._steps[streams] = 0  # stale: start a fresh mean
        self._refreshed[streams] = now
        count = self._steps[streams] = self._steps.get(streams, 0) + 1
        previous = self._step_s[streams] if count > 1 else seconds
        self._step_s[streams] = _average(previous, seconds, count)

    def _decode_estimate(self, streams: int) -> float:
        """The decode part of a mixed step: the nearest stream count measured, scaled."""
        if streams == 0 or not self._step_s:
            return 0.0
        nearest = min(self._step_s, key=lambda known: abs(known - streams))
        return self._step_s[nearest] * min(streams / nearest, 1.0)

    def fill(self, status: status_pb2.AgentStatus) -> None:
        """Copy the figures into a snapshot, the stale ones left out."""
        with self._lock:
            fresh_since = self._clock() - STALE_AFTER_S
            for streams in sorted(self._step_s):
                if self._refreshed[streams] >= fresh_since:
                    status.step_timings.add(streams=streams, step_seconds=self._step_s[streams])
            status.prefill_seconds_per_token = self._prefill_s_per_token
            status.prefill_backlog_tokens = self._backlog


def _average(previous: float, sample: float, count: int) -> float:
    """The moving average after its ``count``-th sample."""
    return previous + max(SMOOTHING, 1 / count) * (sample - previous)
