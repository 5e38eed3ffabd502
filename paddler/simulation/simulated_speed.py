"""The timing model of a simulated agent: no model runs, only these delays."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SimulatedSpeed:
    """Time to first token ``ttft_base_s + ttft_per_prompt_token_s x prompt tokens``; time per
    token ``token_s x (1 + growth x (streams - 1))`` with ``streams`` decoding together; all
    times multiplied by ``factor`` (2: twice as slow)."""

    ttft_base_s: float = 0.05
    ttft_per_prompt_token_s: float = 0.0005
    token_s: float = 0.02
    growth: float = 0.3
    factor: float = 1.0

    def time_to_first_token(self, prompt_tokens: int) -> float:
        """Seconds until a request's first token."""
        return self.factor * (self.ttft_base_s + self.ttft_per_prompt_token_s * prompt_tokens)

    def time_per_token(self, streams: int) -> float:
        """Seconds each of ``streams`` streams waits per token."""
        return self.factor * self.token_s * (1 + self.growth * (max(streams, 1) - 1))
