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
    if level in (_GGML_LOG_LEVEL_WARN, _GGML_LOG_LEVEL_ERROR):
        message = text.decode(errors="replace").strip()
        if message:
            log.warning(message, level="error" if level == _GGML_LOG_LEVEL_ERROR else "warn")


def route_llama_logs() -> None:
    """Install the callback (kept alive at module level for the process's lifetime)."""
    llama.llama_log_set(_forward, ctypes.c_void_p(0))
