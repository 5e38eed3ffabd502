"""Starts a real ``paddler agent`` process on port 0 and tells the tests where it listens."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paddler.v1 import agent_pb2_grpc

STARTUP_TIMEOUT_S = 60.0


class AgentProcess:
    """A running agent: its address, its log lines (parsed JSON) and the process."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "paddler", "agent", "--host", "127.0.0.1", "--port", "0", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[str] = []
        self.address = ""
        self._listening = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            if not self.address and '"agent listening"' in line:
                self.address = json.loads(line)["address"]
                self._listening.set()
        self._listening.set()

    def logs(self, event: str) -> list[dict[str, object]]:
        """Parsed log records whose event is ``event``."""
        records = [json.loads(line) for line in list(self.lines) if line.startswith("{")]
        return [record for record in records if record.get("event") == event]

    def wait_ready(self) -> None:
        """Block until health says SERVING; fail with the agent's output otherwise."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        self._listening.wait(STARTUP_TIMEOUT_S)
        if not self.address:
            raise RuntimeError(f"agent did not start:\n{''.join(self.lines)}")
        with grpc.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                time.sleep(0.1)
        raise RuntimeError(f"agent never became SERVING:\n{''.join(self.lines)}")

    def stop(self) -> int:
        """SIGTERM, wait, and return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        self._reader.join(timeout=5)
        return code


@contextmanager
def running_agent(
    *args: str, model: Path | None = None, env: dict[str, str] | None = None
) -> Iterator[AgentProcess]:
    """Run an agent for the ``with`` block (default model unless ``model`` is given)."""
    extra = ["--model", str(model)] if model else []
    agent = AgentProcess(["--name", "test-agent", *extra, *args], env=env)
    try:
        agent.wait_ready()
        yield agent
    finally:
        agent.stop()


@contextmanager
def agent_stub(*args: str) -> Iterator[tuple[AgentProcess, agent_pb2_grpc.AgentServiceStub]]:
    """Run an agent with ``args`` and give a client stub for it."""
    with running_agent(*args) as agent, grpc.insecure_channel(agent.address) as channel:
        yield agent, agent_pb2_grpc.AgentServiceStub(channel)
