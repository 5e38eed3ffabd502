"""The agent's count of claimed slots; a claim is released however the call ends."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from paddler.common.errors import ResourceExhaustedError


class SlotClaims:
    """Counts in-flight generations against the slot total (asyncio side only).

    ``on_change`` runs after every claim and release, so a status snapshot goes out at once.
    """

    def __init__(self, total: int, on_change: Callable[[], None]) -> None:
        self.total = total
        self.in_use = 0
        # Requests being checked against the model (no slot yet): a model swap waits for them.
        self._preparing = 0
        self._on_change = on_change
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
        self._on_change()
        try:
            yield
        finally:
            self.in_use -= 1
            self._settle()
            self._on_change()

    @contextmanager
    def preparing(self) -> Iterator[None]:
        """Hold the model (not a slot) while a request is rendered, tokenized and compiled
        against it, so that a swap cannot free it underneath."""
        self._preparing += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._preparing -= 1
            self._settle()

    def _settle(self) -> None:
        if not self.in_use and not self._preparing:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no slot is claimed and no request is being prepared."""
        await self._idle.wait()
