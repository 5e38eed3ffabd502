"""Long-running CLI commands stop on SIGTERM (a container's stop, even as PID 1) or SIGINT."""

from __future__ import annotations

import signal
import threading
from types import FrameType


def stop_requested() -> threading.Event:
    """An event that SIGTERM or SIGINT sets from now on (call from the main thread)."""
    stop = threading.Event()

    def request_stop(_signal: int, _frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, request_stop)
    return stop
