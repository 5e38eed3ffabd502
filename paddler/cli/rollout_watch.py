"""``paddler state set --wait``: follow a rollout until every agent applied the state, it
stopped on a failure, or a newer state replaced it."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from paddler.cli.management_client import CALL_TIMEOUT_S
from paddler.v1 import desired_state_pb2, management_pb2, management_pb2_grpc, status_pb2

POLL_S = 0.5


@dataclass(frozen=True)
class AgentStep:
    """Where one agent is with the state: a word and a fraction done."""

    word: str
    done: float


def agent_step(agent: management_pb2.RegisteredAgent, version: int, epoch: str) -> AgentStep:
    """How far ``agent`` got with ``version`` of ``epoch``."""
    if (
        agent.phase == status_pb2.STATE_PHASE_APPLIED
        and agent.applied_state_version == version
        and agent.applied_state_epoch == epoch
    ):
        return AgentStep("applied", 1.0)
    if agent.phase == status_pb2.STATE_PHASE_FAILED:
        return AgentStep("failed", 0.0)
    if not agent.rolling:
        return AgentStep("serving the previous state, waiting for its turn", 0.0)
    download = agent.download
    if download.bytes_total:
        return AgentStep("downloading", download.bytes_done / download.bytes_total)
    return AgentStep("preparing" if agent.ready else "loading", 0.0)


def wait_for_rollout(
    stub: management_pb2_grpc.ManagementServiceStub,
    stored: desired_state_pb2.VersionedDesiredState,
    timeout_s: float,
) -> None:
    """Show the rollout of ``stored`` to its pool's agents until it ends; exit 1 unless every
    one of them applied it."""
    version, epoch, pool = stored.version, stored.epoch, stored.pool
    deadline = time.monotonic() + timeout_s
    terminal = sys.stderr.isatty()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[word]}"),
        disable=not terminal,
    ) as bars:
        tasks: dict[str, TaskID] = {}
        said: dict[str, str] = {}
        while True:
            reply = stub.GetDesiredState(
                management_pb2.GetDesiredStateRequest(pool=pool), timeout=CALL_TIMEOUT_S
            )
            agents = stub.ListAgents(
                management_pb2.ListAgentsRequest(), timeout=CALL_TIMEOUT_S
            ).agents
            for agent in agents:
                if agent.pool != pool:
                    continue
                step = agent_step(agent, version, epoch)
                if terminal:
                    if agent.agent_id not in tasks:
                        tasks[agent.agent_id] = bars.add_task(agent.name, total=1.0, word="")
                    bars.update(tasks[agent.agent_id], completed=step.done, word=step.word)
                elif said.get(agent.agent_id) != step.word:
                    said[agent.agent_id] = step.word
                    typer.echo(f"{agent.name}: {step.word}", err=True)
            rollout = reply.rollout
            if reply.desired_state.version != version or reply.desired_state.epoch != epoch:
                _fail(f"a newer desired state (v{reply.desired_state.version}) replaced v{version}")
            if rollout.failure:
                _fail(f"the rollout stopped: {rollout.failure}")
            if rollout.agents and rollout.applied == rollout.agents:
                typer.echo(f"v{version} applied on all {rollout.agents} agents", err=True)
                return
            if time.monotonic() > deadline:
                _fail(
                    f"v{version} applied on {rollout.applied} of {rollout.agents} agents after "
                    f"{timeout_s:g} s (--wait-timeout)"
                )
            time.sleep(POLL_S)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)
