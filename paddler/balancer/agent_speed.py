"""An agent's speed as its status snapshots report it: time per token at each stream count."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field, replace

from paddler.common.status_bounds import MAX_SLOTS
from paddler.v1 import status_pb2


@dataclass(frozen=True)
class AgentSpeed:
    """Decode step time by stream count (what each stream waits per token), prefill time per
    prompt token and the prompt tokens still to prefill."""

    streams: tuple[int, ...]
    step_s: tuple[float, ...]
    prefill_s_per_token: float = 0.0
    backlog_tokens: int = 0
    # step(count) for count 0..slots + 1 (slots capped at MAX_SLOTS), worked out once per
    # snapshot: the policy's hot path.
    table: tuple[float, ...] = field(default=(), compare=False)

    @classmethod
    def of(cls, status: status_pb2.AgentStatus) -> AgentSpeed | None:
        """The speed a snapshot reports; None before the agent has timed a decode step.

        Figures no agent could measure (not positive, not finite) are left out, whatever the
        snapshot's checks let through.
        """
        timings = sorted(
            (t.streams, t.step_seconds)
            for t in status.step_timings
            if t.streams > 0 and 0 < t.step_seconds < math.inf
        )
        if not timings:
            return None
        speed = cls(
            streams=tuple(streams for streams, _ in timings),
            step_s=tuple(seconds for _, seconds in timings),
            prefill_s_per_token=_finite_or_zero(status.prefill_seconds_per_token),
            backlog_tokens=max(status.prefill_backlog_tokens, 0),
        )
        counts = range(min(max(status.slots_total, 1), MAX_SLOTS) + 2)
        return replace(speed, table=tuple(speed.interpolate(count) for count in counts))

    def step(self, streams: int) -> float:
        """Seconds per token for each of ``streams`` streams decoding together (see
        ``interpolate``)."""
        table = self.table
        return table[streams] if 0 <= streams < len(table) else self.interpolate(streams)

    def interpolate(self, streams: int) -> float:
        """Seconds per token for each of ``streams`` streams decoding together.

        Between measured counts the time is interpolated. Below the smallest it is taken as
        no shorter, and beyond the largest as growing in proportion (no gain from batching
        more), so an estimate that was never measured errs on the slow side.
        """
        counts, times = self.streams, self.step_s
        if streams <= counts[0]:
            return times[0]
        if streams >= counts[-1]:
            return times[-1] * streams / counts[-1]
        upper = bisect.bisect_left(counts, streams)
        low, high = counts[upper - 1], counts[upper]
        share = (streams - low) / (high - low)
        return times[upper - 1] + share * (times[upper] - times[upper - 1])

    def prefill(self, prompt_tokens: int) -> float:
        """Seconds until a new request's prompt is prefilled: the backlog's, then its own."""
        return (self.backlog_tokens + prompt_tokens) * self.prefill_s_per_token


def _finite_or_zero(seconds: float) -> float:
    """``seconds`` if it is a positive finite figure, else 0."""
    return seconds if 0 < seconds < math.inf else 0.0
