"""llama.cpp's own log lines: warnings and errors go to structlog, the chatter is dropped."""

from __future__ import annotations

import ctypes

import llama_cpp as llama
import structlog

log = structlog.get_logger("llama.cpp")

_GGML_LOG_LEVEL_WARN = 3
_GGML_LOG_LEVEL_ERROR = 4


@llama.llama_log_callback  # type: ignore[untyped-decorator]
def _forward(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    message = text.decode(errors="replace").strip()
    if not message:
        return
    if level == _GGML_LOG_LEVEL_ERROR:
        log.error(message)
    elif level == _GGML_LOG_LEVEL_WARN:
        log.warning(message)


def route_llama_logs() -> None:
    """Install the callback (kept alive at module level for the process's lifetime)."""
    llama.llama_log_set(_forward, ctypes.c_void_p(0))
