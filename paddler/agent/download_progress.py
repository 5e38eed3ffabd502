"""A model download's progress, written into the agent's state report, and its cancellation."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from paddler.agent.state_report import StateReport


class DownloadCancelledError(Exception):
    """A newer desired state came while a model downloaded (the partial file stays for the
    next try to resume)."""


@dataclass
class DownloadProgress:
    """Byte counts for the status; ``advance`` stops the download once ``cancelled`` is set."""

    report: StateReport
    cancelled: threading.Event = field(default_factory=threading.Event)

    def start(self, done: int, total: int) -> None:
        """The download (re)starts with ``done`` of ``total`` bytes (0: size unknown)."""
        self.report.bytes_done, self.report.bytes_total = done, total

    def advance(self, count: int) -> None:
        """``count`` more bytes arrived; DownloadCancelledError once cancelled."""
        if self.cancelled.is_set():
            raise DownloadCancelledError
        self.report.bytes_done += count
