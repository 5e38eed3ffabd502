"""The balancer's gauges of how the cluster stands: agents, slots, buffers and rollouts, in
total and per pool, read from the registry and the dispatcher at each scrape (never stale)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from paddler.balancer.agent_registry import AgentRegistry
from paddler.balancer.rollout import Rollout


class ClusterGauges(Collector):
    """Gauges read at scrape time, so they are never stale."""

    def __init__(
        self,
        agents: AgentRegistry,
        rollout: Rollout,
        buffered: Callable[[str], int],
        pools: Callable[[], list[str]],
    ) -> None:
        self._agents = agents
        self._rollout = rollout
        self._buffered = buffered
        self._pools = pools

    def collect(self) -> Iterator[Metric]:
        """One sample per agent and state, and the cluster's totals."""
        agents = self._agents.agents()
        slots = GaugeMetricFamily(
            "paddler_agent_slots",
            "An agent's slots: busy (this balancer's claims and others' use) and total.",
            labels=["agent", "address", "state"],
        )
        ready = GaugeMetricFamily(
            "paddler_agent_ready",
            "1 while the agent serves (a model loaded: the desired state, or during a rollout "
            "the one it had), else 0.",
            labels=["agent", "address"],
        )
        version = GaugeMetricFamily(
            "paddler_agent_applied_state_version",
            "The desired-state version the agent last applied (0: none).",
            labels=["agent", "address"],
        )
        issues = GaugeMetricFamily(
            "paddler_agent_issues", "Issues the agent reports now.", labels=["agent", "address"]
        )
        for agent in agents:
            status = agent.status
            named = [agent.name, agent.address]  # names may repeat; addresses do not
            slots.add_metric([*named, "busy"], agent.busy_slots)
            slots.add_metric([*named, "total"], status.slots_total)
            ready.add_metric(named, 1 if agent.serving else 0)
            version.add_metric(named, status.applied_state_version)
            issues.add_metric(named, len(status.issues))
        yield from (slots, ready, version, issues)
        yield GaugeMetricFamily(
            "paddler_agents_registered", "Agents connected to the balancer.", value=len(agents)
        )
        pools = self._pools()
        yield GaugeMetricFamily(
            "paddler_buffered_requests",
            "Requests waiting for a slot, in every pool.",
            value=sum(self._buffered(pool) for pool in pools),
        )
        yield from self._by_pool(pools)
        progress = self._rollout.progress()
        rollout = GaugeMetricFamily(
            "paddler_rollout_agents",
            "Agents serving the desired state (applied) and taken out of service to apply it "
            "(rolling).",
            labels=["state"],
        )
        rollout.add_metric(["applied"], progress.applied)
        rollout.add_metric(["rolling"], progress.rolling)
        yield rollout
        yield GaugeMetricFamily(
            "paddler_rollout_stopped",
            "1 while the desired state's rollout is stopped by an agent that failed to apply "
            "it (see paddler state show), else 0.",
            value=1 if progress.failure else 0,
        )

    def _by_pool(self, pools: list[str]) -> Iterator[Metric]:
        """Each pool's buffer, agents, slots and rollout (an HPA per pool scales on its own
        buffered requests)."""
        buffered = GaugeMetricFamily(
            "paddler_pool_buffered_requests",
            "Requests waiting for one of the pool's slots.",
            labels=["pool"],
        )
        agents = GaugeMetricFamily(
            "paddler_pool_agents",
            "The pool's agents: registered, and serving now.",
            labels=["pool", "state"],
        )
        slots = GaugeMetricFamily(
            "paddler_pool_slots",
            "The pool's slots: busy, and total of its serving agents.",
            labels=["pool", "state"],
        )
        stopped = GaugeMetricFamily(
            "paddler_pool_rollout_stopped",
            "1 while the pool's rollout is stopped by an agent that failed to apply it.",
            labels=["pool"],
        )
        for pool in pools:
            members = self._agents.in_pool(pool)
            serving = [agent for agent in members if agent.serving]
            buffered.add_metric([pool], self._buffered(pool))
            agents.add_metric([pool, "registered"], len(members))
            agents.add_metric([pool, "serving"], len(serving))
            slots.add_metric([pool, "busy"], sum(agent.busy_slots for agent in serving))
            slots.add_metric([pool, "total"], sum(agent.status.slots_total for agent in serving))
            stopped.add_metric([pool], 1 if self._rollout.progress(pool).failure else 0)
        yield from (buffered, agents, slots, stopped)
