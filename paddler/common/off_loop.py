"""Request checks that may take a while (compiling a grammar, the tools' schemas) run in a
worker thread within a time budget, so the event loop that relays every stream never waits
on them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from paddler.common.errors import InvalidArgumentError

T = TypeVar("T")
CHECK_BUDGET_S = 5.0


async def checked_off_loop(check: Callable[[], T], field: str) -> T:
    """``check()``'s result, computed in a worker thread; INVALID_ARGUMENT naming ``field``
    past ``CHECK_BUDGET_S`` (the thread finishes on its own, bounded by llguidance's fuel)."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(check), CHECK_BUDGET_S)
    except TimeoutError:
        raise InvalidArgumentError(
            field, f"took more than {CHECK_BUDGET_S:g} s to check; simplify it"
        ) from None
