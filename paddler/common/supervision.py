"""A process's background tasks are supervised: one that ends on its own (an error, or a
return it should never make) stops the process with a logged reason and a non-zero exit, so
its supervisor (Kubernetes, systemd) restarts it; nothing dies silently."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

import structlog

from paddler.common.errors import PaddlerError
from paddler.common.grpc_server import wait_for_termination_signal

log = structlog.get_logger(__name__)


class BackgroundTaskDiedError(PaddlerError):
    """A task the process needs ended while the process ran."""

    reason = "BACKGROUND_TASK_DIED"


async def until_stopped(tasks: Mapping[str, asyncio.Task[Any]]) -> None:
    """Return on SIGTERM or SIGINT; raise BackgroundTaskDiedError (logged) when one of ``tasks``
    (by name) ends first."""
    stop = asyncio.create_task(wait_for_termination_signal())
    try:
        done, _ = await asyncio.wait({stop, *tasks.values()}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not stop.done():
            stop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stop
    if stop in done:
        return
    for name, task in tasks.items():
        if task in done:
            error = None if task.cancelled() else task.exception()
            what = f"{type(error).__name__}: {error}" if error else "it ended"
            log.error("background task died", task=name, error=what)
            raise BackgroundTaskDiedError(
                f"the {name} task died ({what}); stopping so that a supervisor restarts the process"
            )
