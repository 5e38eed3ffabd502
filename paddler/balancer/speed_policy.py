"""Speed-aware routing (``--routing speed``): each request goes where it is expected to be served
best, from the speeds agents report and the streams the balancer relays.

For every agent the policy keeps a timeline: the tokens each busy slot has left (the balancer's
own streams from what it relayed, other clients' streams at a typical length) and the agent's
reported time per token at each stream count. A request's cost on an agent is its expected time
to first token, plus its expected completion, plus the slowdown it brings to the streams already
there (nothing where batching is free, a lot where it is not). A free slot is used at once; a
busy agent costs the wait for its soonest slot, so a request may wait for a fast agent when that
is sooner than a free slot on a slow one. Requests are planned oldest first, each seeing the
slots planned for those before it. Without any speed reported the slot policy decides; an agent
that reported none yet is taken to be as fast as the fastest one, so it gets tried.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from paddler.balancer.agent_registry import RegisteredAgent
from paddler.balancer.agent_speed import AgentSpeed
from paddler.balancer.routing_policy import PendingRequest, Plan
from paddler.balancer.slot_policy import SlotPolicy
from paddler.balancer.stream_claim import StreamClaim
from paddler.v1 import desired_state_pb2

# Tokens a request is taken to generate before any has finished (or when uncapped).
FIRST_TYPICAL_TOKENS = 128.0
# Weight of the newest finished request in the typical length.
LENGTH_SMOOTHING = 0.1
# A request's own time to first token counts this much more than the rest of its cost.
TTFT_WEIGHT = 1.0
# Bounds of the re-plan delay while a request waits for a slot estimated to free soon.
RECHECK_MIN_S = 0.02
RECHECK_MAX_S = 0.25


def tokens_left(relayed: int, cap: int | None, typical: float) -> float:
    """Expected tokens a stream still generates: up to the typical length, and once past
    it as many again as it has already made (a long stream tends to run long), within its cap."""
    expected = typical if relayed < typical else 2.0 * relayed
    if cap is not None:
        expected = min(expected, cap)
    return max(expected - relayed, 1.0)


@dataclass
class _Timeline:
    """One agent while a plan is made: tokens left per busy slot, planned ones included."""

    agent: RegisteredAgent
    speed: AgentSpeed
    slots: int
    left: list[float]

    @property
    def free(self) -> bool:
        return len(self.left) < self.slots

    def cost(self, tokens: float, prompt: int) -> tuple[float, float]:
        """(cost, wait) of a request of ``tokens`` on this agent: wait is 0 on a free slot."""
        speed = self.speed
        busy = len(self.left)
        if busy < self.slots:
            step = speed.step(busy + 1)
            ttft = speed.prefill(prompt) + step
            slowdown = step - speed.step(busy) if busy else 0.0
            harm = slowdown * sum(min(left, tokens) for left in self.left)
            return TTFT_WEIGHT * ttft + ttft + tokens * step + harm, 0.0
        step = speed.step(busy)
        wait = min(self.left) * step
        ttft = wait + speed.prefill(prompt) + step
        return TTFT_WEIGHT * ttft + ttft + tokens * step, wait

    def take(self, tokens: float) -> None:
        """A planned grant of a free slot."""
        self.left.append(tokens)

    def reserve(self, tokens: float) -> None:
        """A planned wait for the soonest slot: it stays busy for the new request too."""
        soonest = self.left.index(min(self.left))
        self.left[soonest] += tokens


class SpeedPolicy:
    """The policy of ``--routing speed``."""

    def __init__(self) -> None:
        self._slots = SlotPolicy()
        self._turns = itertools.count()
        self.typical_tokens = FIRST_TYPICAL_TOKENS

    def finished(self, claim: StreamClaim) -> None:
        """Learn the typical length from streams that ran to their summary."""
        if claim.completed:
            self.typical_tokens += LENGTH_SMOOTHING * (claim.relayed - self.typical_tokens)

    def plan(
        self,
        requests: Sequence[PendingRequest],
        agents: Sequence[RegisteredAgent],
        desired: desired_state_pb2.VersionedDesiredState,
    ) -> Plan:
        """Grants for ``requests`` (oldest first); see the module's docstring."""
        timelines = self._timelines(agents, desired)
        if timelines is None:
            return self._slots.plan(requests, agents, desired)
        grants: list[RegisteredAgent | None] = []
        recheck: float | None = None
        for request in requests:
            if not any(timeline.free for timeline in timelines):
                break  # no slot left to grant now: the rest wait
            tokens = self._expected_tokens(request.demand.max_tokens)
            best: _Timeline | None = None
            best_cost = best_wait = 0.0
            for timeline in timelines:
                if timeline.agent.agent_id in request.exclude:
                    continue
                cost, wait = timeline.cost(tokens, request.demand.prompt_tokens)
                if best is None or cost < best_cost:
                    best, best_cost, best_wait = timeline, cost, wait
            if best is None:
                grants.append(None)
                continue
            if best.free:
                best.take(tokens)
                grants.append(best.agent)
                continue
            best.reserve(tokens)
            grants.append(None)
            if any(t.free and t.agent.agent_id not in request.exclude for t in timelines):
                delay = min(max(best_wait, RECHECK_MIN_S), RECHECK_MAX_S)
                recheck = delay if recheck is None else min(recheck, delay)
        grants.extend([None] * (len(requests) - len(grants)))
        return Plan(grants, recheck)

    def _expected_tokens(self, cap: int | None) -> float:
        return self.typical_tokens if cap is None else min(float(cap), self.typical_tokens)

    def _timelines(
        self, agents: Sequence[RegisteredAgent], desired: desired_state_pb2.VersionedDesiredState
    ) -> list[_Timeline] | None:
        """Timelines of the agents that serve ``desired``, starting at a rotating one (exact
        ties take turns); None when no agent has reported a speed."""
        serving = [agent for agent in agents if agent.serves(desired)]
        speeds = [AgentSpeed.of(agent.status) for agent in serving]
        known = [speed for speed in speeds if speed is not None]
        if not known:
            return None
        fastest = min(known, key=lambda speed: speed.step(1))
        typical = self.typical_tokens
        timelines = []
        for agent, speed in zip(serving, speeds, strict=True):
            left = [
                tokens_left(claim.relayed, claim.demand.max_tokens, typical)
                for claim in agent.streams
            ]
            left.extend([typical / 2] * agent.external_busy)
            timelines.append(_Timeline(agent, speed or fastest, agent.status.slots_total, left))
        if timelines:
            start = next(self._turns) % len(timelines)
            timelines = timelines[start:] + timelines[:start]
        return timelines
