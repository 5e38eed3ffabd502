"""The processes of a chaos soak (`soak.py`): one balancer on fixed ports with a state file, so
it can be restarted in place, and agents that can be killed, restarted, stopped and continued."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc import aio

from paddler.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    desired_state_pb2,
    management_pb2,
    management_pb2_grpc,
)

READY_TIMEOUT_S = 180.0


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def rss_bytes(pid: int) -> int:
    """The resident memory of process ``pid`` (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


@dataclass
class Addresses:
    """Where the balancer listens (fixed, so a restart keeps them)."""

    inference: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")
    management: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")
    openai: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")


class Fleet:
    """A balancer and agents started as ``python -m paddler``, logging JSON into ``folder``."""

    def __init__(self, folder: Path, agents: int, slots: int, client_idle_s: float) -> None:
        self.folder = folder
        self.addresses = Addresses()
        self._agent_count = agents
        self._slots = slots
        self._client_idle_s = client_idle_s
        self.balancer: subprocess.Popen[bytes] | None = None
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.agent_ports: dict[str, int] = {}
        self._management = aio.insecure_channel(self.addresses.management)
        self.management = management_pb2_grpc.ManagementServiceStub(self._management)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{name}.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "paddler", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def start_balancer(self) -> None:
        """Start (or start again) the balancer on the same addresses and state file."""
        a = self.addresses
        self.balancer = self._spawn(
            "balancer",
            [
                "balancer",
                "--inference-addr", a.inference,
                "--management-addr", a.management,
                "--openai-addr", a.openai,
                "--web-addr", "",
                "--state-file", str(self.folder / "state.json"),
                "--buffered-request-timeout", "60",
                "--agent-stale-after", "3",
                "--client-idle-timeout", str(self._client_idle_s),
                "--agent-idle-timeout", "30",
                "--grace-period", "10",
            ],
        )  # fmt: skip

    def start_agent(self, name: str) -> None:
        """Start (or start again) agent ``name`` on the port it had."""
        port = self.agent_ports.setdefault(name, free_port())
        self.agents[name] = self._spawn(
            name,
            [
                "agent",
                "--name", name,
                "--port", str(port),
                "--balancer", self.addresses.management,
                "--slots", str(self._slots),
                "--context-size", "512",
                "--threads", "1",
                "--engine-stall-after", "30",
                "--grace-period", "10",
            ],
        )  # fmt: skip

    def start(self) -> None:
        """The balancer, then the agents."""
        self.start_balancer()
        for index in range(self._agent_count):
            self.start_agent(f"agent-{index}")

    def agent_names(self) -> list[str]:
        """Every agent's name, in start order."""
        return list(self.agents)

    def kill(self, name: str) -> None:
        """SIGKILL, as a crash would."""
        process = self.agents[name]
        process.kill()
        process.wait(30)

    def signal(self, name: str, number: signal.Signals) -> None:
        """Send ``number`` to agent ``name`` (SIGSTOP: hung; SIGCONT: back)."""
        self.agents[name].send_signal(number)

    def stop_balancer(self) -> int:
        """SIGTERM the balancer and wait for its drain; its exit code."""
        assert self.balancer is not None
        self.balancer.send_signal(signal.SIGTERM)
        return self.balancer.wait(60)

    async def listed(self) -> list[management_pb2.RegisteredAgent]:
        """ListAgents ([] while the balancer does not answer)."""
        try:
            reply = await self.management.ListAgents(management_pb2.ListAgentsRequest(), timeout=5)
        except grpc.RpcError:
            return []
        return list(reply.agents)

    async def wait_ready(self, count: int, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until ``count`` agents are registered and ready."""
        deadline = time.monotonic() + timeout_s
        while sum(1 for agent in await self.listed() if agent.ready) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} agents ready after {timeout_s:g} s")
            await asyncio.sleep(0.2)

    async def wait_rolled_out(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until every agent serves the desired state."""
        deadline = time.monotonic() + timeout_s
        while True:
            reply = await self.management.GetDesiredState(
                management_pb2.GetDesiredStateRequest(), timeout=5
            )
            rollout = reply.rollout
            if rollout.agents and rollout.applied == rollout.agents:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the rollout did not end in {timeout_s:g} s: {rollout}")
            await asyncio.sleep(0.5)

    async def set_context(self, context_size: int) -> int:
        """Set the packaged default model with ``context_size`` per slot (a reload); the
        version."""
        state = desired_state_pb2.DesiredState(
            model=desired_state_pb2.ModelSource(packaged="smollm2-135m"),
            defaults=desired_state_pb2.InferenceDefaults(context_size=context_size),
        )
        reply = await self.management.SetDesiredState(
            management_pb2.SetDesiredStateRequest(state=state), timeout=10
        )
        return reply.desired_state.version

    async def agent_busy_slots(self, name: str) -> int:
        """The agent's own count of busy slots, asked directly."""
        address = f"127.0.0.1:{self.agent_ports[name]}"
        async with aio.insecure_channel(address) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            reply = await stub.GetStatus(agent_pb2.GetStatusRequest(), timeout=5)
            return reply.status.slots_processing

    def pids(self) -> dict[str, int]:
        """Every running process's pid, by name."""
        running = {name: p.pid for name, p in self.agents.items() if p.poll() is None}
        if self.balancer is not None and self.balancer.poll() is None:
            running["balancer"] = self.balancer.pid
        return running

    async def close(self) -> None:
        """SIGTERM everything still running (SIGCONT first, for a stopped agent)."""
        await self._management.close()
        processes = [*self.agents.values(), self.balancer]
        for process in processes:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.send_signal(signal.SIGTERM)
        for process in processes:
            if process is not None:
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
