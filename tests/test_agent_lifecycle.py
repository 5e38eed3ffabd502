"""Start-up failures, health and reflection, and the SIGTERM drain."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from paddler.v1 import agent_pb2_grpc
from tests.client import generate, prompt_request
from tests.processes import AgentProcess, free_port, process_env, run_paddler


def _start_fails(model: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "paddler",
            "agent",
            "--model",
            str(model),
            "--port",
            "0",
            "--balancer",
            "",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=process_env()[0],
    )


def test_a_missing_model_file_exits_with_one_line(tmp_path: Path) -> None:
    result = _start_fails(tmp_path / "nope.gguf")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"paddler: model file {tmp_path}/nope.gguf does not exist"
    ]


def test_a_file_that_is_not_gguf_exits_with_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04 not a model")
    result = _start_fails(fake)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "is not a GGUF file" in lines[0]
    assert "Traceback" not in result.stderr


def test_health_and_reflection(agent4: AgentProcess) -> None:
    with grpc.insecure_channel(agent4.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "paddler.v1.AgentService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        watch = health.Watch(health_pb2.HealthCheckRequest(service="liveness"), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING  # streamed health
        watch.cancel()
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        reply = next(iter(reflection.ServerReflectionInfo(iter([request]))))
        names = {s.name for s in reply.list_services_response.service}
        assert {"paddler.v1.AgentService", "grpc.health.v1.Health"} <= names


def test_paddler_health_tells_readiness_from_liveness(agent4: AgentProcess) -> None:
    ready = run_paddler("health", agent4.address)
    assert (ready.returncode, ready.stdout.strip()) == (0, "SERVING")
    waiting = AgentProcess(["--balancer", f"127.0.0.1:{free_port()}"])  # no state, no model
    try:
        waiting.wait_logs("agent listening")
        not_ready = run_paddler("health", waiting.address)
        assert (not_ready.returncode, not_ready.stdout.strip()) == (1, "NOT_SERVING")
        alive = run_paddler("health", waiting.address, "--service", "liveness")
        assert (alive.returncode, alive.stdout.strip()) == (0, "SERVING")
    finally:
        waiting.stop()
    gone = run_paddler("health", waiting.address, "--timeout", "2")
    assert gone.returncode == 1
    assert gone.stderr.startswith(("paddler: UNAVAILABLE", "paddler: DEADLINE_EXCEEDED"))
    unknown = run_paddler("health", agent4.address, "--service", "no.Such")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("paddler: NOT_FOUND")


def test_sigterm_lets_in_flight_streams_finish_and_refuses_new_ones() -> None:
    agent = AgentProcess(["--slots", "2", "--grace-period", "30", "--balancer", ""])
    agent.wait_ready()
    with grpc.insecure_channel(agent.address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        stream = stub.Generate(prompt_request("Once upon a time", max_tokens=60), timeout=120)
        first = next(stream)
        agent.process.send_signal(signal.SIGTERM)
        agent.wait_logs("termination signal received")
        assert run_paddler("health", agent.address).returncode == 1  # not ready while draining
        pieces = [first.text] + [r.text for r in stream if r.HasField("text")]
        assert stream.code() == grpc.StatusCode.OK
        assert len(pieces) > 1
        try:
            generate(stub, prompt_request("Hello"), timeout=5)
            refused = False
        except grpc.RpcError:
            refused = True
        assert refused
    assert agent.stop() == 0
