"""The agent's count of claimed slots; a claim is released however the call ends."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from paddler.common.errors import ResourceExhaustedError


class SlotClaims:
    """Counts in-flight generations against the slot total (asyncio side only).

    ``changed`` is set on every claim and release, so status snapshots go out at once.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.in_use = 0
        self.changed = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    @contextmanager
    def claim(self) -> Iterator[None]:
        """Hold one slot for the ``with`` block, or raise RESOURCE_EXHAUSTED if none is free."""
        if self.in_use >= self.total:
            raise ResourceExhaustedError(
                f"all {self.total} slots of this agent are busy; retry later or send the request "
                "through a balancer, which queues it"
            )
        self.in_use += 1
        self._idle.clear()
        self.changed.set()
        try:
            yield
        finally:
            self.in_use -= 1
            if not self.in_use:
                self._idle.set()
            self.changed.set()

    async def wait_idle(self) -> None:
        """Return once no slot is claimed."""
        await self._idle.wait()
