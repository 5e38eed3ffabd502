"""Supervision: a background task that dies stops the process with a logged reason and a
non-zero exit; a balancer whose own loop stalled does not take that for a dead fleet."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any

import grpc
import pytest

from paddler.common.supervision import BackgroundTaskDiedError, until_stopped
from paddler.v1 import management_pb2, management_pb2_grpc
from tests.processes import BalancerProcess, ServerProcess

STALE_AFTER_S = 2.0


async def _fails() -> None:
    await asyncio.sleep(0)
    raise RuntimeError("the disk went away")


async def _ends() -> None:
    await asyncio.sleep(0)


async def _forever() -> None:
    await asyncio.Event().wait()


@pytest.mark.parametrize(
    ("work", "said"), [(_fails, "RuntimeError: the disk went away"), (_ends, "it ended")]
)
def test_a_task_that_ends_stops_the_process_saying_which(
    work: Callable[[], Coroutine[Any, Any, None]], said: str
) -> None:
    async def scenario() -> None:
        tasks = {"link": asyncio.create_task(work()), "other": asyncio.create_task(_forever())}
        with pytest.raises(BackgroundTaskDiedError) as caught:
            await until_stopped(tasks)
        assert caught.value.message.startswith(f"the link task died ({said})")
        tasks["other"].cancel()

    asyncio.run(scenario())


def test_a_termination_signal_is_a_clean_stop() -> None:
    async def scenario() -> None:
        task = asyncio.create_task(_forever())
        asyncio.get_running_loop().call_later(0.1, os.kill, os.getpid(), signal.SIGTERM)
        await until_stopped({"work": task})  # returns: no error
        assert not task.done()
        task.cancel()

    asyncio.run(scenario())


def test_a_stalled_balancer_keeps_its_agents() -> None:
    balancer = BalancerProcess(["--agent-stale-after", str(STALE_AFTER_S)])
    fleet = ServerProcess(
        "simulated-fleet",
        ["--balancer", balancer.management, "--agents", "1", "--slots", "1"],
        "simulated fleet listening",
        None,
    )
    try:
        with grpc.insecure_channel(balancer.management) as channel:
            stub = management_pb2_grpc.ManagementServiceStub(channel)
            _wait_for_agents(stub, 1)
            balancer.process.send_signal(signal.SIGSTOP)
            # The stimulus, not a wait: how long the balancer's loop stands still (past
            # --agent-stale-after; a slower machine only makes the stall longer).
            time.sleep(STALE_AFTER_S * 2)
            balancer.process.send_signal(signal.SIGCONT)
            balancer.wait_logs("event loop stalled: no agent judged stale this round")
            assert not balancer.logs("agent removed")
            _wait_for_agents(stub, 1)
    finally:
        fleet.stop()
        assert balancer.stop() == 0


def _wait_for_agents(stub: management_pb2_grpc.ManagementServiceStub, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(stub.ListAgents(management_pb2.ListAgentsRequest(), timeout=30).agents) != count:
        assert time.monotonic() < deadline
        time.sleep(0.05)
