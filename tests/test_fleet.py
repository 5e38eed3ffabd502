"""``paddler fleet``: a balancer and agents as processes, serving, and stopping on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from paddler.v1 import inference_pb2_grpc
from tests.client import generate, prompt_request
from tests.cluster import to_inference
from tests.processes import LOG_TIMEOUT_S, STARTUP_TIMEOUT_S, process_env

AGENTS = 3
PORTS = [
    "--inference-port", "0", "--management-port", "0", "--openai-port", "0",
    "--web-port", "0", "--agent-port", "0", "--agent-metrics-port", "0",
]  # fmt: skip


def _fields(line: str) -> dict[str, str]:
    name, *pairs = line.split()
    return {"name": name, **dict(pair.split("=", 1) for pair in pairs)}


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.timeout(600)
def test_a_fleet_of_three_serves_on_every_agent_and_stops_on_sigint() -> None:
    command = ["fleet", "--agents", str(AGENTS), "--slots", "1", "--threads", "1", *PORTS]
    fleet = subprocess.Popen(
        [sys.executable, "-m", "paddler", *command],
        stdout=subprocess.PIPE,
        text=True,
        env=process_env()[0],
    )
    lines: list[str] = []
    try:
        assert fleet.stdout is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S * 2
        while not lines or not lines[-1].startswith("fleet ready"):
            line = fleet.stdout.readline()
            assert line, f"the fleet ended before it was ready: {lines}"
            lines.append(line.strip())
            assert time.monotonic() < deadline
        balancer, *agents = [_fields(line) for line in lines[:-1]]
        assert [a["name"] for a in agents] == [f"agent-{i}" for i in range(1, AGENTS + 1)]
        served: set[str] = set()
        request = to_inference(prompt_request("Tell me a long story about a boat.", max_tokens=48))
        with grpc.insecure_channel(balancer["inference"]) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            # One slot each: requests that overlap go to different agents. Rounds of three at
            # once until every agent has served one (a round may finish early, so it repeats).
            deadline = time.monotonic() + LOG_TIMEOUT_S * 3
            with ThreadPoolExecutor(AGENTS) as pool:
                while served != {a["name"] for a in agents}:
                    assert time.monotonic() < deadline, served
                    replies = pool.map(lambda _: generate(stub, request), range(AGENTS))
                    served |= {reply.summary.agent_name for reply in replies}
        fleet.send_signal(signal.SIGINT)
        assert fleet.wait(timeout=180) == 0
        rest = fleet.stdout.read()
        assert "fleet stopped\n" in rest
        for process in (balancer, *agents):
            assert _gone(int(process["pid"])), process
    finally:
        _stop_everything(fleet, lines)


@pytest.mark.timeout(600)
def test_a_fleet_with_a_second_pool_routes_by_model() -> None:
    command = ["fleet", "--agents", "1", "--pool", "side=1", "--slots", "1", "--threads", "1"]
    fleet = subprocess.Popen(
        [sys.executable, "-m", "paddler", *command, *PORTS],
        stdout=subprocess.PIPE,
        text=True,
        env=process_env()[0],
    )
    lines: list[str] = []
    try:
        assert fleet.stdout is not None
        while not lines or not lines[-1].startswith("fleet ready"):
            line = fleet.stdout.readline()
            assert line, f"the fleet ended before it was ready: {lines}"
            lines.append(line.strip())
        balancer, *agents = [_fields(line) for line in lines[:-1]]
        assert [a["name"] for a in agents] == ["agent-1", "side-1"]
        with grpc.insecure_channel(balancer["inference"]) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            for model, agent in (("side", "side-1"), ("", "agent-1"), ("side", "side-1")):
                request = to_inference(prompt_request("Hi", max_tokens=2))
                request.model = model
                assert generate(stub, request).summary.agent_name == agent
        fleet.send_signal(signal.SIGINT)
        assert fleet.wait(timeout=180) == 0
    finally:
        _stop_everything(fleet, lines)


@pytest.mark.parametrize("given", ["side", "side=0", "Side=1", "default=1", "side=x"])
def test_a_bad_pool_of_the_fleet_is_refused_before_anything_starts(given: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "paddler", "fleet", "--pool", given, *PORTS],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=process_env()[0],
    )
    assert result.returncode == 2
    assert "--pool" in result.stderr


def _stop_everything(fleet: subprocess.Popen[str], lines: list[str]) -> None:
    """After a failure too: the fleet's processes run in sessions of their own."""
    if fleet.poll() is None:
        fleet.send_signal(signal.SIGINT)
        try:
            fleet.wait(timeout=120)
        except subprocess.TimeoutExpired:
            fleet.kill()
            fleet.wait()
    for line in [line for line in lines if " pid=" in line]:
        pid = int(_fields(line)["pid"])
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)


def _failed_fleet(*args: str) -> subprocess.CompletedProcess[str]:
    """``paddler fleet ARGS`` (free ports) run to its end, which must be exit code 1."""
    result = subprocess.run(
        [sys.executable, "-m", "paddler", "fleet", *args, *PORTS],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=process_env()[0],
    )
    assert result.returncode == 1, result.stderr
    assert "fleet ready" not in result.stdout
    return result


def test_a_fleet_member_that_cannot_start_stops_the_fleet_with_exit_1() -> None:
    result = _failed_fleet("--agents", "1", "--model", "/nonexistent/model.gguf")
    assert "paddler: agent-1 exited with code 1; stopping the fleet" in result.stderr


def test_agents_not_ready_in_time_stop_the_fleet_with_exit_1() -> None:
    # A timeout of 0: the agents cannot have loaded and registered at the first look.
    result = _failed_fleet("--agents", "2", "--ready-timeout", "0")
    assert "paddler: not ready after 0 s: agent-1, agent-2" in result.stderr
