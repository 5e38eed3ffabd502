"""How much memory an agent may use for a model: what the machine (or its cgroup) has free."""

from __future__ import annotations

from pathlib import Path

_MEMINFO = Path("/proc/meminfo")
_CGROUP = Path("/sys/fs/cgroup")


def available_memory_bytes() -> int | None:
    """The memory free for a new model now: the smaller of the kernel's MemAvailable and what
    the cgroup's limit leaves (a pod's); None where neither can be read."""
    candidates = [value for value in (_mem_available(), _cgroup_room()) if value is not None]
    return min(candidates) if candidates else None


def _mem_available() -> int | None:
    try:
        lines = _MEMINFO.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, rest = line.partition(":")
        if name == "MemAvailable":
            return int(rest.split()[0]) * 1024
    return None


def _cgroup_room() -> int | None:
    try:
        limit = (_CGROUP / "memory.max").read_text().strip()
        used = (_CGROUP / "memory.current").read_text().strip()
    except OSError:
        return None
    if not limit.isdigit() or not used.isdigit():
        return None  # "max": no limit of its own
    return max(int(limit) - int(used), 0)
