"""How long the engine's steps take lately: per stream count, and per prompt token prefilled.

The engine thread records every step; the asyncio side copies the figures into each status
snapshot, where the balancer's speed-aware routing reads them.
"""

from __future__ import annotations

import threading

from paddler.v1 import status_pb2

# Weight of the newest step in each moving average once it has 20 steps: about the last 20
# count. Before that every step weighs the same (a plain mean), so a first noisy step does
# not linger in the estimate.
SMOOTHING = 0.05


class StepTimings:
    """Exponential moving averages of decode step time by stream count, and of prefill time
    per prompt token (a mixed step's time beyond the decode part, over its prompt tokens)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._step_s: dict[int, float] = {}
        self._steps: dict[int, int] = {}
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
                    count = self._steps[streams] = self._steps.get(streams, 0) + 1
                    previous = self._step_s.get(streams, seconds)
                    self._step_s[streams] = _average(previous, seconds, count)
                return
            decode_s = self._decode_estimate(streams)
            per_token = max(seconds - decode_s, 0.0) / prompt_tokens
            self._prefills += 1
            previous = self._prefill_s_per_token
            self._prefill_s_per_token = _average(previous, per_token, self._prefills)

    def _decode_estimate(self, streams: int) -> float:
        """The decode part of a mixed step: the nearest stream count measured, scaled."""
        if streams == 0 or not self._step_s:
            return 0.0
        nearest = min(self._step_s, key=lambda known: abs(known - streams))
        return self._step_s[nearest] * min(streams / nearest, 1.0)

    def fill(self, status: status_pb2.AgentStatus) -> None:
        """Copy the figures into a snapshot."""
        with self._lock:
            for streams in sorted(self._step_s):
                status.step_timings.add(streams=streams, step_seconds=self._step_s[streams])
            status.prefill_seconds_per_token = self._prefill_s_per_token
            status.prefill_backlog_tokens = self._backlog


def _average(previous: float, sample: float, count: int) -> float:
    """The moving average after its ``count``-th sample."""
    return previous + max(SMOOTHING, 1 / count) * (sample - previous)
