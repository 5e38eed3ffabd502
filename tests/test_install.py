"""scripts/install.sh, the one install path: CI runs it, and both images run it as tested here."""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
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


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore's ``patterns`` leave ``path`` (or a folder above it) out."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        anywhere = pattern.startswith("**/")
        name = pattern.removeprefix("**/")
        for prefix in prefixes:
            candidates = [prefix.rsplit("/", 1)[-1]] if anywhere else [prefix]
            if any(fnmatch.fnmatchcase(c, name) for c in candidates):
                return True
    return False


def build_context(target: Path) -> Path:
    """Copy what ``docker build .`` would send (tracked files less .dockerignore's)."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert not any(p.startswith("!") for p in patterns), "exceptions are not modelled here"
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for path in tracked:
        if not _ignored(path, patterns) and (ROOT / path).is_file():
            (target / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / path, target / path)
    return target


def _cpu_cmake_args() -> str:
    """The CMAKE_ARGS the agent image's CPU build stage sets."""
    text = (ROOT / "Dockerfile.agent").read_text()
    cpu_stage = text[text.index("AS build-cpu") : text.index("AS run-cpu")]
    (args,) = re.findall(r'CMAKE_ARGS="([^"]*)"', cpu_stage)
    return str(args)


def _install(dockerfile: str, venv: Path, cmake_args: str = "") -> Path:
    """Run scripts/install.sh as the Dockerfile does (in a copy of the build context, like
    ``COPY . .``), into ``venv``; return its python."""
    args = _install_args(dockerfile)
    args[args.index("--venv") + 1] = str(venv)
    context = build_context(venv.parent / "src")
    result = subprocess.run(
        ["bash", "scripts/install.sh", *args],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
        env=process_env({"CMAKE_ARGS": cmake_args} if cmake_args else None)[0],
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


def test_the_build_context_has_what_the_install_needs_and_nothing_local(tmp_path: Path) -> None:
    context = {str(p.relative_to(tmp_path)) for p in build_context(tmp_path).rglob("*")}
    assert {"pyproject.toml", "README.md", "scripts/install.sh", "paddler/cli/main.py"} <= context
    assert "generated/paddler/v1/inference_pb2.py" in context
    assert "paddler/web/static/index.html" in context
    assert not any(p.startswith(("tests", ".venv", ".git/", "deploy")) for p in context)
    assert not any("__pycache__" in p or p.startswith("Dockerfile") for p in context)


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
    # The CPU image's flags: llama-cpp-python builds anew (about 4 minutes on 2 cores).
    cmake_args = _cpu_cmake_args()
    assert "-DGGML_NATIVE=OFF" in cmake_args
    assert "-DGGML_OPENMP=OFF" in cmake_args
    python = _install("Dockerfile.agent", tmp_path / "venv", cmake_args)
    assert _runs(python, "import llama_cpp")
    libraries = list(
        (python.parent.parent / "lib").glob("python3.11/site-packages/llama_cpp/lib/*.so")
    )
    assert libraries
    for library in libraries:  # the slim image has no libgomp
        linked = subprocess.run(["ldd", str(library)], capture_output=True, text=True, check=True)
        assert "libgomp" not in linked.stdout, library
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
