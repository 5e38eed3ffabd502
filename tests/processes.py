"""Real ``paddler`` processes on port 0 for the tests: they say where they listen in their logs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paddler.v1 import agent_pb2_grpc

STARTUP_TIMEOUT_S = 120.0
# Generous: a test waits for a state, never for a speed; a loaded machine only makes it slower.
LOG_TIMEOUT_S = 60.0
# Set by conftest to a folder under pytest's basetemp; each process's caches go below it.
PROCESS_ROOT_VARIABLE = "PADDLER_TEST_PROCESS_ROOT"


def process_env(extra: dict[str, str] | None = None) -> tuple[dict[str, str], Path]:
    """The environment of a process a test starts, and the folder of its own caches.

    Every process gets an empty ``PADDLER_CACHE_DIR`` and ``HF_HOME`` of its own, so the
    first-run paths (assembling a packaged model, downloading) run in every test run, as on a
    fresh machine; ``extra`` may name shared ones instead.
    """
    home = Path(tempfile.mkdtemp(prefix="process-", dir=os.environ.get(PROCESS_ROOT_VARIABLE)))
    caches = {"PADDLER_CACHE_DIR": str(home / "paddler"), "HF_HOME": str(home / "hf")}
    return {**os.environ, **caches, **(extra or {})}, home


def free_port() -> int:
    """A port nothing listens on right now (for servers that must keep their address)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run_paddler(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run ``paddler ARGS`` to completion, as a user would (with caches of its own)."""
    return subprocess.run(
        [sys.executable, "-m", "paddler", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=process_env()[0],
    )


class ServerProcess:
    """A running ``paddler COMMAND``; ``listening`` is its parsed 'listening' log record."""

    def __init__(
        self,
        command: str,
        args: list[str],
        listening_event: str,
        env: dict[str, str] | None,
        python: str = sys.executable,
        cwd: Path | None = None,
        tls_ca: Path | None = None,
        tls_pair: tuple[Path, Path] | None = None,
    ) -> None:
        environment, self._home = process_env(env)
        self._tls_ca = tls_ca
        self._tls_pair = tls_pair
        self.process = subprocess.Popen(
            [python, "-m", "paddler", command, *args],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
        )
        self.lines: list[str] = []
        self.listening: dict[str, str] = {}
        self._listening_event = f'"{listening_event}"'
        self._listening_seen = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            if not self.listening and line.startswith("{") and self._listening_event in line:
                self.listening = json.loads(line)
                self._listening_seen.set()
        self._listening_seen.set()

    def logs(self, event: str) -> list[dict[str, object]]:
        """Parsed log records whose event is ``event``."""
        records = [json.loads(line) for line in list(self.lines) if line.startswith("{")]
        return [record for record in records if record.get("event") == event]

    def wait_logs(
        self, event: str, count: int = 1, timeout_s: float = LOG_TIMEOUT_S
    ) -> list[dict[str, object]]:
        """Wait until at least ``count`` records of ``event`` were logged; return them all."""
        deadline = time.monotonic() + timeout_s
        while len(records := self.logs(event)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count} {event!r} lines in:\n{''.join(self.lines)}")
            time.sleep(0.02)
        return records

    def wait_serving(self, address_key: str) -> None:
        """Block until the server at ``listening[address_key]`` reports SERVING."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        self._listening_seen.wait(STARTUP_TIMEOUT_S)
        if not self.listening:
            raise RuntimeError(f"process did not start:\n{''.join(self.lines)}")
        with self.channel(address_key) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"process exited:\n{''.join(self.lines)}")
                try:
                    reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
                except grpc.RpcError:  # a busy machine: ask again until the deadline
                    continue
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                time.sleep(0.05)
        raise RuntimeError(f"never became SERVING:\n{''.join(self.lines)}")

    def channel(self, address_key: str) -> grpc.Channel:
        """A channel to ``listening[address_key]``: TLS when the process was given a CA (with a
        client certificate when it was given a pair)."""
        address = self.listening[address_key]
        if self._tls_ca is None:
            return grpc.insecure_channel(address)
        pair = self._tls_pair
        key, chain = (pair[1].read_bytes(), pair[0].read_bytes()) if pair else (None, None)
        credentials = grpc.ssl_channel_credentials(self._tls_ca.read_bytes(), key, chain)
        return grpc.secure_channel(address, credentials)

    def stop(self) -> int:
        """SIGTERM, wait, and return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        finally:
            self._reader.join(timeout=5)
            shutil.rmtree(self._home, ignore_errors=True)
        return code

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.process.kill()
        self.process.wait(timeout=30)
        shutil.rmtree(self._home, ignore_errors=True)


class AgentProcess(ServerProcess):
    """``paddler agent`` on 127.0.0.1, port 0."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str] | None = None,
        tls_ca: Path | None = None,
        tls_pair: tuple[Path, Path] | None = None,
    ) -> None:
        super().__init__(
            "agent",
            ["--host", "127.0.0.1", "--port", "0", "--metrics-addr", "127.0.0.1:0", *args],
            "agent listening",
            env,
            tls_ca=tls_ca,
            tls_pair=tls_pair,
        )

    @property
    def address(self) -> str:
        """Where its AgentService listens."""
        return self.listening["address"]

    @property
    def metrics(self) -> str:
        """Where its Prometheus metrics are served."""
        return f"http://{self.listening['metrics']}/metrics"

    def wait_ready(self) -> None:
        """Block until the model is loaded."""
        self.wait_serving("address")


class BalancerProcess(ServerProcess):
    """``paddler balancer`` with both servers on 127.0.0.1, port 0 unless given."""

    def __init__(
        self,
        args: list[str],
        management: str = "127.0.0.1:0",
        env: dict[str, str] | None = None,
        tls_ca: Path | None = None,
    ) -> None:
        addresses = [
            "--inference-addr", "127.0.0.1:0", "--management-addr", management,
            "--openai-addr", "127.0.0.1:0", "--web-addr", "127.0.0.1:0",
        ]  # fmt: skip
        super().__init__("balancer", [*addresses, *args], "balancer listening", env, tls_ca=tls_ca)
        self.wait_serving("inference")

    @property
    def inference(self) -> str:
        """Where clients call InferenceService."""
        return self.listening["inference"]

    @property
    def management(self) -> str:
        """Where agents register and ManagementService listens."""
        return self.listening["management"]

    @property
    def openai(self) -> str:
        """The OpenAI-compatible API's base URL."""
        return f"http://{self.listening['openai']}/v1"

    @property
    def web(self) -> str:
        """The web server's base URL (metrics)."""
        return f"http://{self.listening['web']}"


@contextmanager
def running_agent(
    *args: str, model: Path | None = None, env: dict[str, str] | None = None
) -> Iterator[AgentProcess]:
    """Run a standalone agent for the ``with`` block (default model unless ``model`` is given)."""
    extra = ["--model", str(model)] if model else []
    agent = AgentProcess(["--name", "test-agent", "--balancer", "", *extra, *args], env=env)
    try:
        agent.wait_ready()
        yield agent
    finally:
        agent.stop()


@contextmanager
def agent_stub(*args: str) -> Iterator[tuple[AgentProcess, agent_pb2_grpc.AgentServiceStub]]:
    """Run a standalone agent with ``args`` and give a client stub for it."""
    with running_agent(*args) as agent, grpc.insecure_channel(agent.address) as channel:
        yield agent, agent_pb2_grpc.AgentServiceStub(channel)
