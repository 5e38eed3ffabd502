"""Shared fixtures: real agent processes on the real default model."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import grpc
import pytest

from paddler.agent.default_model import DefaultModelMissingError, default_model_path
from paddler.v1 import agent_pb2_grpc
from tests.processes import PROCESS_ROOT_VARIABLE, AgentProcess, running_agent


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fail the whole run, loudly, when the inference stack or the model is missing."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.exit("llama-cpp-python is not installed: pip install -e '.[agent,dev]'", 3)
    try:
        default_model_path()
    except DefaultModelMissingError as error:
        pytest.exit(f"the test model is missing: {error.message}", 3)


@pytest.fixture(scope="session", autouse=True)
def empty_caches(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Nothing in a test run reads the machine's own caches.

    Each process a test starts gets empty caches of its own below this folder (see
    ``process_env``), and this process's own (in-process model resolution) start empty too.
    """
    root = tmp_path_factory.mktemp("caches")
    saved = {name: os.environ.get(name) for name in ("PADDLER_CACHE_DIR", "HF_HOME")}
    os.environ.update(
        {
            PROCESS_ROOT_VARIABLE: str(root),
            "PADDLER_CACHE_DIR": str(root / "pytest" / "paddler"),
            "HF_HOME": str(root / "pytest" / "hf"),
        }
    )
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def agent4() -> Iterator[AgentProcess]:
    """A 4-slot agent shared by tests that leave it idle."""
    with running_agent("--slots", "4", "--context-size", "512") as agent:
        yield agent


@pytest.fixture(scope="session")
def stub4(agent4: AgentProcess) -> Iterator[agent_pb2_grpc.AgentServiceStub]:
    """A client of the shared 4-slot agent."""
    with grpc.insecure_channel(agent4.address) as channel:
        yield agent_pb2_grpc.AgentServiceStub(channel)
