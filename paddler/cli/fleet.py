"""``paddler fleet``: a balancer and K agents on this machine, stopped together by Ctrl-C."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated

import typer

from paddler.cli.local_fleet import (
    FleetFailedError,
    FleetPlan,
    Member,
    check_running,
    members,
    start,
    stop_all,
    wait_ready,
)
from paddler.cli.options import GracePeriodOption, LogLevelOption
from paddler.cli.stop_signal import stop_requested
from paddler.common.errors import InvalidArgumentError
from paddler.common.pool_names import DEFAULT_POOL, check_pool_name
from paddler.common.status_bounds import MAX_SLOTS


def fleet(
    agents: Annotated[
        int,
        typer.Option(
            min=0, envvar="PADDLER_FLEET_AGENTS", help="Agents to start in the pool 'default'."
        ),
    ] = 2,
    pool: Annotated[
        list[str] | None,
        typer.Option(
            envvar="PADDLER_FLEET_POOL",
            help="NAME=K: also start K agents in the pool NAME (repeat for more pools); they "
            "serve that pool's desired state (paddler state set --pool NAME).",
            callback=_checked_pools,
        ),
    ] = None,
    slots: Annotated[
        int, typer.Option(min=1, max=MAX_SLOTS, envvar="PADDLER_SLOTS", help="Slots of each agent.")
    ] = 4,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            envvar="PADDLER_THREADS",
            help="llama.cpp threads of each agent (default: the CPUs shared out among them).",
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            envvar="PADDLER_MODEL",
            help="GGUF file every agent serves (default: the desired state, else SmolLM2).",
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(envvar="PADDLER_FLEET_HOST", help="Address every server binds.")
    ] = "127.0.0.1",
    inference_port: Annotated[
        int,
        typer.Option(
            min=0, envvar="PADDLER_FLEET_INFERENCE_PORT", help="Balancer inference gRPC port."
        ),
    ] = 50051,
    management_port: Annotated[
        int,
        typer.Option(
            min=0, envvar="PADDLER_FLEET_MANAGEMENT_PORT", help="Balancer management gRPC port."
        ),
    ] = 50053,
    openai_port: Annotated[
        int, typer.Option(min=0, envvar="PADDLER_FLEET_OPENAI_PORT", help="OpenAI API port.")
    ] = 8080,
    web_port: Annotated[
        int,
        typer.Option(min=0, envvar="PADDLER_FLEET_WEB_PORT", help="Admin panel and metrics port."),
    ] = 8081,
    agent_port: Annotated[
        int,
        typer.Option(
            min=0,
            envvar="PADDLER_FLEET_AGENT_PORT",
            help="The first agent's gRPC port; agent i takes this plus i-1 (0: free ports).",
        ),
    ] = 50100,
    agent_metrics_port: Annotated[
        int,
        typer.Option(
            min=0,
            envvar="PADDLER_FLEET_AGENT_METRICS_PORT",
            help="The first agent's metrics port; agent i takes this plus i-1 (0: free ports).",
        ),
    ] = 50200,
    ready_timeout: Annotated[
        float,
        typer.Option(
            min=0,
            envvar="PADDLER_FLEET_READY_TIMEOUT",
            help="Seconds the agents get to load their model and register; then the fleet "
            "stops with exit code 1, naming the agents not ready.",
        ),
    ] = 600.0,
    grace_period: GracePeriodOption = 30.0,
    log_level: LogLevelOption = "warning",
) -> None:
    """Start a balancer and K agents as separate processes with the flags the pods get, print
    where everything listens, and stop them all (agents first, each draining) on Ctrl-C."""
    pools = tuple(_pool_counts(pool or ()))
    total = agents + sum(k for _, k in pools)
    if not total:
        raise typer.BadParameter("start at least one agent", param_hint="--agents")
    plan = FleetPlan(
        agents=agents,
        pools=pools,
        slots=slots,
        threads=threads or max(1, (os.cpu_count() or 1) // total),
        model=model,
        host=host,
        inference_port=inference_port,
        management_port=management_port,
        openai_port=openai_port,
        web_port=web_port,
        agent_port=agent_port,
        agent_metrics_port=agent_metrics_port,
        grace_period_s=grace_period,
        log_level=log_level,
    )
    stop = stop_requested()
    fleet_members = members(plan)
    failure: FleetFailedError | None = None
    try:
        for member in fleet_members:
            start(member)
        if wait_ready(fleet_members, stop, ready_timeout):
            _print_listening(fleet_members)
            while not stop.wait(0.5):
                check_running(fleet_members)
    except FleetFailedError as error:
        failure = error
        typer.echo(f"paddler: {error}; stopping the fleet", err=True)
    finally:  # whatever ended the run, no process is left behind
        if failure is None:
            typer.echo("stopping: agents first (each drains its streams), then the balancer")
        clean = stop_all(fleet_members)
    if failure is not None:
        raise typer.Exit(1)
    typer.echo("fleet stopped" if clean else "fleet stopped; a process exited with an error")
    if not clean:
        raise typer.Exit(1)


MAX_POOL_AGENTS = 64
"""The most agents ``--pool NAME=K`` starts for one pool on this machine."""


def _pool_counts(given: Sequence[str]) -> Iterator[tuple[str, int]]:
    """Each NAME=K as (pool, K)."""
    for entry in given:
        name, _, count = entry.partition("=")
        try:
            pool = check_pool_name(name, "--pool")
        except InvalidArgumentError as error:
            raise typer.BadParameter(error.violations[0].description, param_hint="--pool") from None
        if pool == DEFAULT_POOL or not count.isdigit() or not 1 <= int(count) <= MAX_POOL_AGENTS:
            raise typer.BadParameter(
                f"{entry!r}: give NAME=K, K agents (1 to {MAX_POOL_AGENTS}) of a pool other than "
                "'default' (--agents counts those)",
                param_hint="--pool",
            )
        yield pool, int(count)


def _checked_pools(given: list[str] | None) -> list[str] | None:
    """Refuse a bad NAME=K before anything starts."""
    names = [pool for pool, _ in _pool_counts(given or ())]
    if len(set(names)) != len(names):
        raise typer.BadParameter("a pool is given twice", param_hint="--pool")
    return given


def _print_listening(fleet_members: list[Member]) -> None:
    """One line per process: its pid and where it listens."""
    for member in fleet_members:
        assert member.process is not None
        places = " ".join(f"{what}={where}" for what, where in member.listens.items())
        typer.echo(f"{member.name} pid={member.process.pid} {places}")
    typer.echo(f"fleet ready: {len(fleet_members) - 1} agents; Ctrl-C stops them all")
