"""A bound on how many of one kind of long-lived call run at once (watchers, live views)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from paddler.common.errors import ResourceExhaustedError


class LimitReachedError(ResourceExhaustedError):
    """As many such calls run as the limit allows."""

    reason = "TOO_MANY_CALLS"


class ConcurrencyLimit:
    """At most ``limit`` holders at once; one more gets RESOURCE_EXHAUSTED naming ``what`` and
    the ``flag`` that raises the limit."""

    def __init__(self, limit: int, what: str, flag: str) -> None:
        self.limit = limit
        self._what = what
        self._flag = flag
        self.held = 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Count one holder for the ``with`` block."""
        if self.held >= self.limit:
            raise LimitReachedError(
                f"{self.held} {self._what} run already, the most allowed ({self._flag}); "
                "retry when one ends",
                retry_after_s=5.0,
            )
        self.held += 1
        try:
            yield
        finally:
            self.held -= 1
