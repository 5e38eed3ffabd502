"""CPU time and context switches of every thread of a process, read from Linux's /proc.

Benchmarks read a process before and after a run and print where its CPU went, per thread name.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ThreadReading:
    """One thread at one moment: its name, CPU seconds, and context switches so far."""

    name: str
    cpu_s: float
    voluntary: int  # the thread gave the CPU up (waited: a wake-up follows)
    involuntary: int  # the thread was preempted


@dataclass(frozen=True)
class ThreadUse:
    """What the threads of one name used between two readings."""

    cpu_s: float = 0.0
    wakeups: int = 0
    preemptions: int = 0

    def __add__(self, other: ThreadUse) -> ThreadUse:
        return ThreadUse(
            self.cpu_s + other.cpu_s,
            self.wakeups + other.wakeups,
            self.preemptions + other.preemptions,
        )


def _after_name(stat: str) -> list[str]:
    """The fields of a /proc stat line after the name (which sits in parentheses and may hold
    spaces); index 2 is the process group, 11 and 12 the user and system CPU ticks."""
    return stat[stat.rindex(")") + 2 :].split()


def _cpu_s(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def read_threads(pid: int) -> dict[int, ThreadReading]:
    """Every live thread of ``pid``, by thread id (threads that end meanwhile are skipped)."""
    readings: dict[int, ThreadReading] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            status = (task / "status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        switches = dict(
            line.split(":\t") for line in status.splitlines() if "ctxt_switches" in line
        )
        readings[int(task.name)] = ThreadReading(
            name=name,
            cpu_s=_cpu_s(_after_name(stat)),
            voluntary=int(switches["voluntary_ctxt_switches"]),
            involuntary=int(switches["nonvoluntary_ctxt_switches"]),
        )
    return readings


def use_by_name(
    before: dict[int, ThreadReading], after: dict[int, ThreadReading]
) -> dict[str, ThreadUse]:
    """What each thread name used from ``before`` to ``after`` (new threads count from zero)."""
    cpu: dict[str, float] = {}
    wakeups: Counter[str] = Counter()
    preemptions: Counter[str] = Counter()
    for tid, now in after.items():
        then = before.get(tid, ThreadReading(now.name, 0.0, 0, 0))
        cpu[now.name] = cpu.get(now.name, 0.0) + now.cpu_s - then.cpu_s
        wakeups[now.name] += now.voluntary - then.voluntary
        preemptions[now.name] += now.involuntary - then.involuntary
    return {
        name: ThreadUse(cpu[name], wakeups[name], preemptions[name])
        for name in sorted(cpu, key=lambda n: -cpu[n])
    }


def process_cpu_s(pid: int) -> float:
    """CPU seconds of the whole process so far, threads that already ended included."""
    return _cpu_s(_after_name(Path(f"/proc/{pid}/stat").read_text()))


def group_cpu_s(pgid: int) -> float:
    """CPU seconds so far of every live process in process group ``pgid`` (a server started in
    its own session, with the workers it forked: nginx's, say)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = _after_name(stat)
        if int(fields[2]) == pgid:
            total += _cpu_s(fields)
    return total
