"""A balancer and K agents as separate processes on this machine, with the pods' flags."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from paddler.cli.options import dialer
from paddler.common.addresses import join_host_port
from paddler.common.dialer import Dialer
from paddler.common.pool_names import DEFAULT_POOL
from paddler.v1 import management_pb2, management_pb2_grpc

STOP_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class FleetPlan:
    """Where everything listens; a port of 0 is replaced by a free one."""

    agents: int
    slots: int
    threads: int
    model: Path | None
    host: str
    inference_port: int
    management_port: int
    openai_port: int
    web_port: int
    agent_port: int
    agent_metrics_port: int
    grace_period_s: float
    log_level: str
    # Agents of other pools than "default": (pool, how many), each started with --pool.
    pools: tuple[tuple[str, int], ...] = ()


@dataclass
class Member:
    """One process of the fleet."""

    name: str
    role: str
    listens: dict[str, str]  # what it serves -> where, as printed
    args: list[str]
    process: subprocess.Popen[bytes] | None = None


class FleetFailedError(Exception):
    """A process of the fleet exited on its own, or the agents never became ready."""


def _port(host: str, port: int) -> int:
    if port:
        return port
    with socket.socket() as probe:  # a free port now; the child binds it a moment later
        probe.bind((host, 0))
        free: int = probe.getsockname()[1]
        return free


def members(plan: FleetPlan) -> list[Member]:
    """The balancer first, then the agents, each with the flags its pod would get."""
    at = plan.host
    inference = join_host_port(at, _port(at, plan.inference_port))
    management = join_host_port(at, _port(at, plan.management_port))
    openai = join_host_port(at, _port(at, plan.openai_port))
    web = join_host_port(at, _port(at, plan.web_port))
    common = ["--grace-period", f"{plan.grace_period_s:g}", "--log-level", plan.log_level]
    balancer = Member(
        "balancer",
        "balancer",
        {
            "inference": inference,
            "management": management,
            "openai": f"http://{openai}/v1",
            "panel": f"http://{web}/",
            "metrics": f"http://{web}/metrics",
        },
        [
            "balancer",
            "--inference-addr", inference,
            "--management-addr", management,
            "--openai-addr", openai,
            "--web-addr", web,
            *common,
        ],
    )  # fmt: skip
    fleet = [balancer]
    named = [(f"agent-{index + 1}", DEFAULT_POOL) for index in range(plan.agents)]
    named += [(f"{pool}-{number + 1}", pool) for pool, k in plan.pools for number in range(k)]
    for index, (name, pool) in enumerate(named):
        port = _port(at, plan.agent_port + index if plan.agent_port else 0)
        metrics_port = plan.agent_metrics_port + index if plan.agent_metrics_port else 0
        metrics = join_host_port(at, _port(at, metrics_port))
        model = ["--model", str(plan.model)] if plan.model else []
        fleet.append(
            Member(
                name,
                "agent",
                {"grpc": join_host_port(at, port), "metrics": f"http://{metrics}/metrics"},
                [
                    "agent",
                    "--name", name,
                    "--balancer", management,
                    "--host", at,
                    "--port", str(port),
                    "--metrics-addr", metrics,
                    "--slots", str(plan.slots),
                    "--threads", str(plan.threads),
                    "--pool", pool,
                    *model,
                    *common,
                ],
            )
        )  # fmt: skip
    return fleet


def start(member: Member) -> None:
    """Start ``paddler ARGS`` in a session of its own (Ctrl-C reaches only the fleet)."""
    environment = {k: v for k, v in os.environ.items() if k != "POD_IP"}
    member.process = subprocess.Popen(
        [sys.executable, "-m", "paddler", *member.args],
        stdin=subprocess.DEVNULL,
        env=environment,
        start_new_session=True,
    )


def _management_dialer() -> Dialer:
    """How the fleet asks its balancer: with the TLS and admin key its processes got (they
    inherit this environment)."""

    def path(name: str) -> Path | None:
        value = os.environ.get(name)
        return Path(value) if value else None

    return dialer(
        path("PADDLER_TLS_CA"),
        os.environ.get("PADDLER_TLS_SERVER_NAME", ""),
        path("PADDLER_ADMIN_KEY_FILE"),
        (path("PADDLER_TLS_CERT"), path("PADDLER_TLS_KEY")),
    )


def wait_ready(fleet: list[Member], stop: threading.Event, timeout_s: float) -> bool:
    """Wait until every agent is registered and ready (False if asked to stop first)."""
    names = {m.name for m in fleet if m.role == "agent"}
    deadline = time.monotonic() + timeout_s
    with _management_dialer().channel(fleet[0].listens["management"]) as channel:
        stub = management_pb2_grpc.ManagementServiceStub(channel)
        while not stop.is_set():
            check_running(fleet)
            try:
                reply = stub.ListAgents(management_pb2.ListAgentsRequest(), timeout=5)
            except grpc.RpcError:  # the balancer is still starting
                reply = management_pb2.ListAgentsResponse()
            waiting = names - {a.name for a in reply.agents if a.ready}
            if not waiting:
                return True
            if time.monotonic() > deadline:
                raise FleetFailedError(
                    f"not ready after {timeout_s:g} s: {', '.join(sorted(waiting))} "
                    "(see their logs above)"
                )
            stop.wait(0.3)
    return False


def check_running(fleet: list[Member]) -> None:
    """Raise FleetFailedError if a member has exited."""
    for member in fleet:
        assert member.process is not None
        code = member.process.poll()
        if code is not None:
            raise FleetFailedError(f"{member.name} exited with code {code}")


def stop_all(fleet: list[Member]) -> bool:
    """SIGTERM the agents (they drain and leave), then the balancer; True if all exit 0."""
    clean = True
    agents = [m for m in fleet if m.role == "agent"]
    balancers = [m for m in fleet if m.role == "balancer"]
    for group in (agents, balancers):
        started = [m.process for m in group if m.process is not None]
        for process in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in started:
            try:
                code = process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
            clean = clean and code == 0
    return clean
