"""Whether the running asyncio task has been asked to stop (the client went away)."""

from __future__ import annotations

import asyncio


def being_cancelled() -> bool:
    """True while a cancellation of the current task is pending or being handled."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
