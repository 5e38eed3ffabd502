"""The devices llama.cpp sees (ggml's backend registry: the CPU, GPUs), with their memory.
llama-cpp-python binds none of this, so the few ggml calls are declared here."""

from __future__ import annotations

import ctypes
import threading
import time
from dataclasses import dataclass

from llama_cpp._ggml import libggml

# Free memory changes while a GPU serves; reading it again at most this often is enough.
MEMORY_REFRESH_S = 1.0

_dev = ctypes.c_void_p
_size_p = ctypes.POINTER(ctypes.c_size_t)
libggml.ggml_backend_dev_count.argtypes = []
libggml.ggml_backend_dev_count.restype = ctypes.c_size_t
libggml.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
libggml.ggml_backend_dev_get.restype = _dev
libggml.ggml_backend_dev_name.argtypes = [_dev]
libggml.ggml_backend_dev_name.restype = ctypes.c_char_p
libggml.ggml_backend_dev_description.argtypes = [_dev]
libggml.ggml_backend_dev_description.restype = ctypes.c_char_p
libggml.ggml_backend_dev_memory.argtypes = [_dev, _size_p, _size_p]
libggml.ggml_backend_dev_memory.restype = None


@dataclass(frozen=True)
class DeviceInfo:
    """One device: llama.cpp's name for it, what it is, and its memory (0: not reported)."""

    name: str
    description: str
    memory_total_bytes: int
    memory_free_bytes: int


class Devices:
    """The devices, their memory read again at most every ``MEMORY_REFRESH_S`` (any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read_at = -MEMORY_REFRESH_S
        self._devices: tuple[DeviceInfo, ...] = ()

    def now(self) -> tuple[DeviceInfo, ...]:
        """Every device llama.cpp sees, in its order."""
        with self._lock:
            if time.monotonic() - self._read_at >= MEMORY_REFRESH_S:
                self._devices = tuple(_read(index) for index in range(_count()))
                self._read_at = time.monotonic()
            return self._devices


def _count() -> int:
    count: int = libggml.ggml_backend_dev_count()
    return count


def _read(index: int) -> DeviceInfo:
    device = libggml.ggml_backend_dev_get(index)
    free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
    libggml.ggml_backend_dev_memory(device, ctypes.byref(free), ctypes.byref(total))
    name: bytes = libggml.ggml_backend_dev_name(device) or b""
    description: bytes = libggml.ggml_backend_dev_description(device) or b""
    return DeviceInfo(
        name=name.decode(errors="replace"),
        description=description.decode(errors="replace"),
        memory_total_bytes=total.value,
        memory_free_bytes=free.value,
    )
