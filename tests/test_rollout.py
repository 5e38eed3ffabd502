"""The rollout as a unit: which agent is sent which desired state, and when.

These drive the real AgentRegistry, StateStore and Rollout with status snapshots written by the
test (no agent process: the decisions alone are under test; test_desired_state runs real ones).
"""

from __future__ import annotations

import asyncio

from paddler.balancer.agent_registry import AgentRegistry, RegisteredAgent
from paddler.balancer.rollout import Rollout, RolloutFailure
from paddler.balancer.state_store import StateStore
from paddler.v1 import desired_state_pb2, status_pb2

VersionedState = desired_state_pb2.VersionedDesiredState


def _state(context: int) -> desired_state_pb2.DesiredState:
    return desired_state_pb2.DesiredState(
        model=desired_state_pb2.ModelSource(packaged="smollm2-135m"),
        defaults=desired_state_pb2.InferenceDefaults(context_size=context),
    )


def _report(
    registry: AgentRegistry,
    rollout: Rollout,
    agent: RegisteredAgent,
    applied: VersionedState | None,
    *,
    ready: bool = True,
    failed: VersionedState | None = None,
) -> None:
    """A snapshot from ``agent``: serving ``applied`` (or nothing), maybe failed ``failed``."""
    status = status_pb2.AgentStatus(name=agent.name, slots_total=1, ready=ready)
    if applied is not None:
        status.phase = status_pb2.STATE_PHASE_APPLIED
        status.applied_state_version, status.applied_state_epoch = applied.version, applied.epoch
        status.attempted_state_version, status.attempted_state_epoch = (
            applied.version,
            applied.epoch,
        )
    if failed is not None:
        status.phase = status_pb2.STATE_PHASE_FAILED
        status.attempted_state_version, status.attempted_state_epoch = failed.version, failed.epoch
        status.issues.append("the file does not exist")
    registry.update(agent, status)
    rollout.reported(agent)


def _sent(agent: RegisteredAgent) -> list[int]:
    """Versions sent to ``agent`` since the last look."""
    versions = []
    while not agent.outbox.empty():
        message = agent.outbox.get_nowait()
        assert message is not None
        versions.append(message.desired_state.version)
    return versions


def _setup(max_unavailable: int = 1) -> tuple[AgentRegistry, StateStore, Rollout, list[str]]:
    registry = AgentRegistry()
    states = StateStore(None)
    failures: list[str] = []

    def failed(failure: RolloutFailure) -> None:
        failures.append(failure.describe())

    return registry, states, Rollout(registry, states, max_unavailable, failed), failures


def test_serving_agents_take_the_new_state_one_at_a_time() -> None:
    async def scenario() -> None:
        registry, states, rollout, _ = _setup()
        old = states.set(_state(256))
        agents = [await registry.add(f"a{i}", f"127.0.0.1:{1000 + i}") for i in range(3)]
        for agent in agents:
            _report(registry, rollout, agent, old)
            assert _sent(agent) == []  # it has the state already (a balancer restart)
        new = states.set(_state(512))
        assert [_sent(agent) for agent in agents] == [[2], [], []]
        assert rollout.progress().rolling == 1
        _report(registry, rollout, agents[0], old)  # still applying: nobody else yet
        assert [_sent(agent) for agent in agents] == [[], [], []]
        _report(registry, rollout, agents[0], new)
        assert [_sent(agent) for agent in agents] == [[], [2], []]
        _report(registry, rollout, agents[1], new)
        assert [_sent(agent) for agent in agents] == [[], [], [2]]
        progress = rollout.progress()
        assert (progress.applied, progress.rolling, progress.agents) == (2, 1, 3)
        rollout.advance()
        assert _sent(agents[2]) == []  # sent once
        _report(registry, rollout, agents[2], new)
        progress = rollout.progress()
        assert (progress.applied, progress.rolling, progress.agents) == (3, 0, 3)

    asyncio.run(scenario())


def test_agents_that_serve_nothing_get_the_state_at_once_and_a_newer_one_overtakes() -> None:
    async def scenario() -> None:
        registry, states, rollout, _ = _setup(max_unavailable=1)
        old = states.set(_state(256))
        serving = [await registry.add(f"s{i}", f"127.0.0.1:{1000 + i}") for i in range(2)]
        for agent in serving:
            _report(registry, rollout, agent, old)
        states.set(_state(512))
        assert [_sent(agent) for agent in serving] == [[2], []]
        fresh = [await registry.add(f"f{i}", f"127.0.0.1:{2000 + i}") for i in range(2)]
        for agent in fresh:
            _report(registry, rollout, agent, None, ready=False)
        assert [_sent(agent) for agent in fresh] == [[2], [2]]  # no capacity to lose
        states.set(_state(1024))  # the agent rolling to v2 goes on to v3 at once
        assert [_sent(agent) for agent in serving] == [[3], []]
        assert [_sent(agent) for agent in fresh] == [[3], [3]]
        assert rollout.progress().rolling == 1

    asyncio.run(scenario())


def test_a_failure_stops_the_rollout_and_agents_without_a_model_get_the_last_good_state() -> None:
    async def scenario() -> None:
        registry, states, rollout, failures = _setup(max_unavailable=1)
        good = states.set(_state(256))
        agents = [await registry.add(f"a{i}", f"127.0.0.1:{1000 + i}") for i in range(2)]
        for agent in agents:
            _report(registry, rollout, agent, None, ready=False)
            assert _sent(agent) == [1]
            _report(registry, rollout, agent, good)
        bad = states.set(_state(512))
        assert [_sent(agent) for agent in agents] == [[2], []]
        _report(registry, rollout, agents[0], good, failed=bad)  # it went back to v1
        assert failures == ["v2 failed on agent a0: the file does not exist"]
        assert rollout.progress().failure == failures[0]
        assert rollout.progress().rolling == 0
        _report(registry, rollout, agents[1], good)
        assert [_sent(agent) for agent in agents] == [[], []]  # the rollout stopped
        newcomer = await registry.add("new", "127.0.0.1:3000")
        _report(registry, rollout, newcomer, None, ready=False)
        assert _sent(newcomer) == [1]  # the last state that applied anywhere
        states.set(_state(1024))  # a new state: a new rollout
        assert rollout.progress().failure == ""
        assert [_sent(agent) for agent in agents] == [[3], []]
        assert _sent(newcomer) == [3]
        assert len(failures) == 1

    asyncio.run(scenario())


def test_a_version_of_another_epoch_is_not_taken_for_the_desired_one() -> None:
    async def scenario() -> None:
        registry, states, rollout, _ = _setup()
        current = states.set(_state(256))
        earlier = VersionedState(version=1, epoch="earlier-run", state=_state(2048))
        agent = await registry.add("a", "127.0.0.1:1000")
        _report(registry, rollout, agent, earlier)
        assert _sent(agent) == [current.version]
        assert agent.rolling

    asyncio.run(scenario())
