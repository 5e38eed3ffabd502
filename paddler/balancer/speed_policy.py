"""Speed-aware routing (``--routing speed``): each request goes where its first token is expected
soonest and, among such places, where it finishes soonest, from the speeds agents report and the
streams the balancer relays.

For every agent the policy keeps a timeline: the tokens each busy slot has left (the balancer's
own streams from what it relayed, other clients' streams at a typical length) and the agent's
reported time per token at each stream count. On a free slot a request's first token comes after
its prefill (of the part of its prompt the agent does not hold already: see ``prefix_index``)
and one step; on a busy agent after the wait for its soonest slot too. A request
takes a free slot unless waiting for a busy agent brings its first token sooner (a fast agent
about to free a slot, against a slow one). Among those options it goes where its completion,
plus the slowdown it brings to the streams already there, is least: nothing where batching is
free (a GPU), a lot where it is not (one CPU thread). The policy keeps every agent working: while
some agent has a free slot where one more stream adds to its token rate (an idle agent, or one
whose batching pays), a free slot that adds nothing (a second stream on one CPU thread) is not
an option, for it would leave capacity idle that the requests still to come need, unless the
agent holds the start of the prompt and so brings the first token sooner. Requests are
planned oldest first, each
seeing the slots planned for those before it. Without any speed reported the slot policy
decides; an agent that reports none (not yet, or no longer: agents drop figures no step has
refreshed for five minutes) is taken to be as fast as the fastest one, so it gets tried and
measured.

In a fleet of more than 32 agents a plan weighs a sample of them (see ``candidates``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from paddler.balancer.agent_registry import RegisteredAgent
from paddler.balancer.agent_speed import AgentSpeed
from paddler.balancer.candidates import CandidateSampler
from paddler.balancer.prefix_index import PrefixIndex
from paddler.balancer.routing_policy import PendingRequest, Plan
from paddler.balancer.slot_policy import SlotPolicy, holdings, with_holders
from paddler.balancer.stream_claim import StreamClaim
from paddler.common.pool_names import DEFAULT_POOL

# Tokens a request is taken to generate before any has finished (or when uncapped).
FIRST_TYPICAL_TOKENS = 128.0
# Weight of the newest finished request in the typical length.
LENGTH_SMOOTHING = 0.1
# Bounds of the re-plan delay while a request waits for a slot estimated to free soon.
RECHECK_MIN_S = 0.02
RECHECK_MAX_S = 0.25
# Share by which one more stream must raise an agent's token rate to count as using spare
# capacity (one CPU thread: about 0; a GPU at low stream counts: most of a stream's rate).
MIN_BATCHING_GAIN = 0.2


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

    @property
    def spare(self) -> bool:
        """Whether a free slot here adds to the agent's token rate: always on an idle agent;
        on a busy one when batching one more stream pays (see MIN_BATCHING_GAIN)."""
        busy = len(self.left)
        if busy >= self.slots:
            return False
        if busy == 0:
            return True
        now, more = self.speed.step(busy), self.speed.step(busy + 1)
        return (busy + 1) * now >= (1.0 + MIN_BATCHING_GAIN) * busy * more

    def estimate(self, tokens: float, prompt: int) -> tuple[float, float]:
        """(time to first token, completion + slowdown of the others) of a request of
        ``tokens`` on this agent, in seconds."""
        speed = self.speed
        busy = len(self.left)
        if busy < self.slots:
            step = speed.step(busy + 1)
            ttft = speed.prefill(prompt) + step
            slowdown = step - speed.step(busy) if busy else 0.0
            harm = slowdown * sum(min(left, tokens) for left in self.left)
            return ttft, ttft + tokens * step + harm
        step = speed.step(busy)
        ttft = min(self.left) * step + speed.prefill(prompt) + step
        return ttft, ttft + tokens * step

    def take(self, tokens: float) -> None:
        """A planned grant of a free slot."""
        self.left.append(tokens)

    def reserve(self, tokens: float) -> None:
        """A planned wait for the soonest slot: it stays busy for the new request too."""
        soonest = self.left.index(min(self.left))
        self.left[soonest] += tokens


class SpeedPolicy:
    """The policy of ``--routing speed``."""

    def __init__(self, prefixes: PrefixIndex | None = None) -> None:
        self._slots = SlotPolicy(prefixes)
        self._prefixes = prefixes
        self._turns = itertools.count()
        self._sampler = CandidateSampler()
        # Each pool's typical reply length (its models and clients are its own).
        self._typical: dict[str, float] = {}
        # The fastest speed reported when the plan began: an agent reporting none is taken to
        # be this fast.
        self._fastest: AgentSpeed | None = None

    @property
    def typical_tokens(self) -> float:
        """The typical reply length in the pool "default"."""
        return self.typical(DEFAULT_POOL)

    def typical(self, pool: str) -> float:
        """The typical reply length in ``pool``."""
        return self._typical.get(pool, FIRST_TYPICAL_TOKENS)

    def finished(self, claim: StreamClaim) -> None:
        """Learn the typical length of the agent's pool from streams that ran to their
        summary."""
        if claim.completed:
            pool = claim.agent.pool
            typical = self.typical(pool)
            self._typical[pool] = typical + LENGTH_SMOOTHING * (claim.relayed - typical)

    def plan(
        self,
        requests: Sequence[PendingRequest],
        agents: Sequence[RegisteredAgent],
    ) -> Plan:
        """Grants for ``requests`` (oldest first); see the module's docstring."""
        sampled = self._sampler.candidates(agents)
        timelines = self._timelines(sampled)
        if timelines is None:
            return self._slots.plan(requests, agents)
        whole = len(sampled) == len(agents)
        grants: list[RegisteredAgent | None] = []
        recheck: float | None = None
        for request in requests:
            if not any(timeline.free for timeline in timelines):
                break  # no slot left to grant now: the rest wait
            held = holdings(self._prefixes, request)
            if not whole and (candidates := with_holders(sampled, held)) is not sampled:
                self._add_holders(timelines, candidates)
            tokens = self._expected_tokens(request.demand.max_tokens, request.pool)
            prompt = request.demand.prompt_tokens
            options = [
                (
                    timeline,
                    *timeline.estimate(
                        tokens, prompt - (held.tokens(timeline.agent) if held else 0)
                    ),
                )
                for timeline in timelines
                if request.accepts(timeline.agent)
            ]
            free = [ttft for timeline, ttft, _ in options if timeline.free]
            soonest_free = min(free, default=float("inf"))
            spares = [timeline.spare for timeline, _, _ in options]
            takes = spares if any(spares) else [timeline.free for timeline, _, _ in options]
            soonest_take = min(
                (option[1] for option, taken in zip(options, takes, strict=True) if taken),
                default=float("inf"),
            )
            eligible = [
                option
                for option, taken in zip(options, takes, strict=True)
                if taken
                or option[1] < soonest_free
                or (
                    held is not None
                    and option[0].free
                    and held.links(option[0].agent) > 0
                    and option[1] < soonest_take
                )
            ]
            if not eligible:
                grants.append(None)
                continue
            best, best_ttft, _ = min(eligible, key=lambda option: option[2])
            if best.free:
                best.take(tokens)
                grants.append(best.agent)
                continue
            best.reserve(tokens)
            grants.append(None)
            if free:  # a slot is free, yet a busy agent's is expected sooner: look again soon
                wait = best_ttft - soonest_free
                delay = min(max(wait, RECHECK_MIN_S), RECHECK_MAX_S)
                recheck = delay if recheck is None else min(recheck, delay)
        grants.extend([None] * (len(requests) - len(grants)))
        return Plan(grants, recheck)

    def _expected_tokens(self, cap: int | None, pool: str) -> float:
        typical = self.typical(pool)
        return typical if cap is None else min(float(cap), typical)

    def _timelines(self, agents: Sequence[RegisteredAgent]) -> list[_Timeline] | None:
        """Timelines of the serving candidates, starting at a rotating one (exact
        ties take turns); None when none has reported a speed."""
        if not agents:
            return []
        serving = [agent for agent in agents if agent.serving]
        known = [agent.speed for agent in serving if agent.speed is not None]
        if not known:
            return None
        self._fastest = min(known, key=lambda speed: speed.step_s[0])
        timelines = [self._timeline(agent) for agent in serving]
        if timelines:
            start = next(self._turns) % len(timelines)
            timelines = timelines[start:] + timelines[:start]
        return timelines

    def _timeline(self, agent: RegisteredAgent) -> _Timeline:
        typical = self.typical(agent.pool)
        left = [
            tokens_left(claim.relayed, claim.demand.max_tokens, typical) for claim in agent.streams
        ]
        left.extend([typical / 2] * agent.external_busy)
        speed = agent.speed or self._fastest
        assert speed is not None  # _timelines found a speed before any timeline is made
        return _Timeline(agent, speed, agent.status.slots_total, left)

    def _add_holders(
        self, timelines: list[_Timeline], candidates: Sequence[RegisteredAgent]
    ) -> None:
        """Timelines for candidates a large fleet's sample left out (agents holding the
        request's prefix), kept for the rest of the plan."""
        present = {timeline.agent.agent_id for timeline in timelines}
        timelines.extend(
            self._timeline(agent)
            for agent in candidates
            if agent.serving and agent.agent_id not in present
        )
