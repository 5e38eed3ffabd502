"""Rolls each pool's desired state out to the pool's agents with no capacity gap.

Agents serve the state they have until they apply the new one. An agent that serves (ready,
with a model) is sent the new state only while fewer than ``max_unavailable`` others are out of
service applying it; an agent that serves nothing (starting, just registered) gets it at once,
since sending it costs no capacity. An agent that fails to apply the state goes back to the one
it served (the agent does that itself), and the rollout stops there: the agents not reached keep
the old state, agents that serve nothing get the last state that applied anywhere, and the
failure is reported until a new state is set. Each pool rolls out on its own: a change to one
pool takes none of another's agents out of service.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

from paddler.balancer.agent_registry import AgentRegistry, RegisteredAgent
from paddler.balancer.state_store import StateStore
from paddler.common.pool_names import DEFAULT_POOL
from paddler.v1 import desired_state_pb2, management_pb2

log = structlog.get_logger(__name__)

DEFAULT_MAX_UNAVAILABLE = 1
VersionedState = desired_state_pb2.VersionedDesiredState


@dataclass(frozen=True)
class RolloutFailure:
    """Why the rollout of ``version`` stopped."""

    version: int
    agent: str
    issue: str
    pool: str = DEFAULT_POOL

    def describe(self) -> str:
        """One line for operators."""
        return f"v{self.version} failed on agent {self.agent}: {self.issue}"


class Rollout:
    """Decides which agent gets which desired state, and when."""

    def __init__(
        self,
        registry: AgentRegistry,
        states: StateStore,
        max_unavailable: int = DEFAULT_MAX_UNAVAILABLE,
        on_failure: Callable[[RolloutFailure], None] = lambda failure: None,
    ) -> None:
        self._registry = registry
        self.states = states
        self.max_unavailable = max_unavailable
        self._on_failure = on_failure
        # Per pool: why its rollout stopped, and the last state one of its agents applied
        # (what its agents that serve nothing get once a rollout failed).
        self._failures: dict[str, RolloutFailure] = {}
        self._stable: dict[str, VersionedState] = {}
        states.listen(self._retarget)

    def _retarget(self, state: VersionedState) -> None:
        """A new desired state: a new rollout of its pool."""
        self._failures.pop(state.pool, None)
        log.info(
            "rollout started",
            pool=state.pool,
            version=state.version,
            max_unavailable=self.max_unavailable,
        )
        self.advance(state.pool)

    def reported(self, agent: RegisteredAgent) -> None:
        """``agent`` sent a status snapshot: move on if that changes anything."""
        sent = agent.sent
        if sent is not None and agent.on_state(sent) and not agent.rolling:
            self._stable[agent.pool] = sent
            if _same(sent, self.states.state_of(agent.pool)):
                return  # settled on the desired state: nothing to do
        self.advance(agent.pool)

    def advance(self, pool: str = DEFAULT_POOL) -> None:
        """Send ``pool``'s state to its agents that may get it now."""
        target = self.states.state_of(pool)
        agents = [agent for agent in self._registry.in_pool(pool) if agent.reported]
        for agent in agents:
            self._settle(agent, target)
        rolling = sum(1 for agent in agents if agent.rolling)
        for agent in agents:
            if pool in self._failures:
                self._fall_back(agent, target)
            elif agent.sent is not None and _same(agent.sent, target):
                continue
            elif agent.on_state(target):
                agent.sent = target  # it has it already (the balancer restarted)
            elif not agent.serving:
                self._registry.send_state(agent, target, rolling=False)
            elif agent.rolling or rolling < self.max_unavailable:
                rolling += 0 if agent.rolling else 1
                self._registry.send_state(agent, target, rolling=True)

    def _fall_back(self, agent: RegisteredAgent, target: VersionedState) -> None:
        """After a failure: an agent that serves nothing gets the last state that applied
        anywhere (the failed one when none did); the others keep what they serve."""
        state = self._stable.get(agent.pool, target)
        if not agent.serving and (agent.sent is None or not _same(agent.sent, state)):
            self._registry.send_state(agent, state, rolling=False)

    def _settle(self, agent: RegisteredAgent, target: VersionedState) -> None:
        """Read what the agent's snapshot says about the state it was sent."""
        sent = agent.sent
        if sent is None:
            return
        if agent.on_state(sent):
            agent.rolling = False
            self._stable[agent.pool] = sent
        elif agent.failed_state(sent):
            agent.rolling = False
            if _same(sent, target) and agent.pool not in self._failures:
                issue = agent.status.issues[0] if agent.status.issues else "no reason given"
                failure = self._failures[agent.pool] = RolloutFailure(
                    sent.version, agent.name, issue, agent.pool
                )
                log.error("rollout stopped", pool=agent.pool, failure=failure.describe())
                self._on_failure(failure)

    def forget(self, pool: str) -> None:
        """``pool`` was deleted."""
        self._failures.pop(pool, None)
        self._stable.pop(pool, None)

    def progress(self, pool: str = DEFAULT_POOL) -> management_pb2.StateRollout:
        """Where the rollout of ``pool``'s desired state stands."""
        target = self.states.state_of(pool)
        agents = self._registry.in_pool(pool)
        failure = self._failures.get(pool)
        return management_pb2.StateRollout(
            version=target.version,
            agents=len(agents),
            applied=sum(1 for agent in agents if agent.serving and agent.on_state(target)),
            rolling=sum(1 for agent in agents if agent.rolling),
            max_unavailable=self.max_unavailable,
            failure=failure.describe() if failure else "",
        )


def _same(a: VersionedState, b: VersionedState) -> bool:
    return a.version == b.version and a.epoch == b.epoch
