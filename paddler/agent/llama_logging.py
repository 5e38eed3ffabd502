"""llama.cpp's own log lines: warnings and errors go to structlog, the chatter is dropped
(unless a block records it: what a model load says about where its layers went)."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import llama_cpp as llama
import structlog

log = structlog.get_logger("llama.cpp")

_GGML_LOG_LEVEL_WARN = 3
_GGML_LOG_LEVEL_ERROR = 4
_recording: list[str] | None = None
_one_recording = threading.Lock()


@llama.llama_log_callback  # type: ignore[untyped-decorator]
def _forward(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    message = text.decode(errors="replace").strip()
    if not message:
        return
    recording = _recording
    if recording is not None:
        recording.append(message)
    if level == _GGML_LOG_LEVEL_ERROR:
        log.error(message)
    elif level == _GGML_LOG_LEVEL_WARN:
        log.warning(message)


def route_llama_logs() -> None:
    """Install the callback (kept alive at module level for the process's lifetime)."""
    llama.llama_log_set(_forward, ctypes.c_void_p(0))


@contextmanager
def recorded_llama_logs() -> Iterator[list[str]]:
    """Every line llama.cpp logs while the block runs, at any level (one block at a time)."""
    global _recording  # noqa: PLW0603 - the C callback has nowhere else to write
    route_llama_logs()
    with _one_recording:
        lines: list[str] = []
        _recording = lines
        try:
            yield lines
        finally:
            _recording = None
