"""Settings of one balancer process (filled from the ``paddler balancer`` flags)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BalancerConfig:
    """Everything ``paddler balancer`` needs to run."""

    inference_address: str
    management_address: str
    max_buffered_requests: int
    buffered_request_timeout_s: float
    agent_stale_after_s: float
    grace_period_s: float
    max_attempts: int
