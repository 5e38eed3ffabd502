"""scripts/install.sh, the one install path: CI runs it, and both images run it as tested here."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import grpc
import httpx
import pytest

from paddler.v1 import agent_pb2_grpc
from tests.client import generate, prompt_request
from tests.processes import ServerProcess, process_env

ROOT = Path(__file__).resolve().parent.parent


def _install_args(dockerfile: str) -> list[str]:
    """The arguments the Dockerfile's one RUN of scripts/install.sh passes."""
    (line,) = re.findall(
        r"^RUN bash scripts/install\.sh (.*)$", (ROOT / dockerfile).read_text(), re.M
    )
    return shlex.split(line)


def _install(dockerfile: str, venv: Path) -> Path:
    """Run scripts/install.sh as the Dockerfile does, into ``venv``; return its python."""
    args = _install_args(dockerfile)
    args[args.index("--venv") + 1] = str(venv)
    result = subprocess.run(
        ["bash", "scripts/install.sh", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
        env=process_env()[0],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return venv / "bin" / "python"


def _health(python: Path, address: str) -> tuple[int, str]:
    """The installed ``paddler health ADDRESS``: exit code and output."""
    result = subprocess.run(
        [str(python.parent / "paddler"), "health", address],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode, result.stdout.strip()


def _runs(python: Path, code: str) -> bool:
    return (
        subprocess.run([str(python), "-c", code], capture_output=True, check=False).returncode == 0
    )


def test_ci_and_both_images_install_through_the_same_script() -> None:
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/setup.sh" in (ROOT / "scripts" / "test.sh").read_text()
    assert "bash scripts/install.sh " in (ROOT / "scripts" / "setup.sh").read_text()
    assert _install_args("Dockerfile.agent") == [
        "--venv", "/opt/paddler", "--extras", "agent", "--model",
    ]  # fmt: skip
    assert _install_args("Dockerfile.balancer") == ["--venv", "/opt/paddler"]


def test_an_unknown_install_argument_is_refused() -> None:
    result = subprocess.run(
        ["bash", "scripts/install.sh", "--extra", "agent"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown argument '--extra'" in result.stderr


@pytest.mark.timeout(1500)
def test_the_balancer_image_install_serves_without_an_inference_stack(tmp_path: Path) -> None:
    python = _install("Dockerfile.balancer", tmp_path / "venv")
    assert not _runs(python, "import llama_cpp")
    arguments = [
        "--inference-addr", "127.0.0.1:0", "--management-addr", "127.0.0.1:0",
        "--openai-addr", "127.0.0.1:0", "--web-addr", "127.0.0.1:0",
    ]  # fmt: skip
    balancer = ServerProcess(
        "balancer", arguments, "balancer listening", None, str(python), cwd=tmp_path
    )
    try:
        balancer.wait_serving("inference")
        assert _health(python, balancer.listening["inference"]) == (0, "SERVING")
        # The panel's static files are in the installed package, not only in the source tree.
        panel = httpx.get(f"http://{balancer.listening['web']}/", timeout=30)
        assert panel.status_code == 200
        assert "<html" in panel.text.lower()
    finally:
        assert balancer.stop() == 0


@pytest.mark.timeout(1500)
def test_the_agent_image_install_serves_the_default_model(tmp_path: Path) -> None:
    python = _install("Dockerfile.agent", tmp_path / "venv")
    assert _runs(python, "import llama_cpp")
    arguments = ["--host", "127.0.0.1", "--port", "0", "--balancer", ""]
    agent = ServerProcess("agent", arguments, "agent listening", None, str(python), cwd=tmp_path)
    try:
        agent.wait_serving("address")  # SERVING only once the model is loaded
        assert _health(python, agent.listening["address"]) == (0, "SERVING")
        with grpc.insecure_channel(agent.listening["address"]) as channel:
            reply = generate(agent_pb2_grpc.AgentServiceStub(channel), prompt_request("Hi", 8))
        assert reply.summary.model == "SmolLM2-135M-Instruct.Q4_1"
        assert reply.text
    finally:
        assert agent.stop() == 0
