"""Chaos soak: real processes under load while things break, and every request accounted for.

Starts a balancer (fixed ports, a state file) and `--agents` agents of the packaged SmolLM2, then
runs `--clients` clients for `--minutes`: gRPC and OpenAI requests, streaming and not, with 10 %
cancels, 1 % bad input, short client deadlines and slow readers (see `soak_clients.py`).
Meanwhile, at fixed points of the run:

- every minute (twice in a run of two minutes or less) an agent is killed with SIGKILL and
  started again;
- at 35 % another agent is hung with SIGSTOP for 8 s (past `--agent-stale-after`), then
  continued;
- at 50 % the balancer is stopped with SIGTERM (it drains) and started again on the same ports
  and state file; clients send refused requests again after the delay RetryInfo gives;
- at 65 % a new desired state (another context size: a reload on every agent) rolls out.

Every request ends in exactly one outcome, one of those `soak_clients.EXPECTED` documents. At the
end, with the load stopped, every agent (asked directly) and the balancer must report no slot in
use and no request buffered, and the processes that lived through the measured window must have
grown by less than 10 % in resident memory: the balancer from 10 s after its restart, the agents
never killed nor hung from the end of the rollout (a model reload moves an agent's resident
memory by some tens of MB either way, measured in docs/soak.md; the growth since the first
quarter of the run is printed too). Prints the counts as JSON and exits 1 when a check fails.

Run: `.venv/bin/python scripts/soak.py --minutes 30` (see `--help`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from soak_clients import EXPECTED, Clients, draw
from soak_fleet import Fleet, rss_bytes

from paddler.v1 import management_pb2

HANG_S = 8.0
SETTLE_TIMEOUT_S = 120.0
MEMORY_GROWTH_LIMIT = 0.10


class Soak:
    """One run: the fleet, the clients, the chaos and the checks."""

    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        self._args = args
        self.fleet = Fleet(folder, args.agents, args.slots, args.client_idle_timeout)
        self.clients: Clients | None = None
        self.events: list[str] = []
        self.failures: list[str] = []
        self.memory: dict[str, dict[str, int]] = {}
        self._started = 0.0

    def _event(self, what: str) -> None:
        self.events.append(f"{time.monotonic() - self._started:6.1f}s {what}")
        print(self.events[-1], file=sys.stderr, flush=True)

    async def run(self) -> None:
        """Start, load and break, stop the load, check."""
        args, fleet = self._args, self.fleet
        fleet.start()
        await fleet.wait_ready(args.agents)
        await fleet.set_context(512)
        clients = self.clients = Clients(
            fleet.addresses.inference, fleet.addresses.openai, args.client_idle_timeout
        )
        self._started = time.monotonic()
        duration = args.minutes * 60
        stop = asyncio.Event()
        workers = [
            asyncio.create_task(self._client(clients, random.Random(seed), stop))
            for seed in range(args.clients)
        ]
        await self._chaos(duration)
        stop.set()
        await asyncio.gather(*workers)
        self._event("load stopped")
        await self._settle()
        self._measure("end")
        await clients.close()

    async def _client(self, clients: Clients, rng: random.Random, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await clients.one(draw(rng))

    async def _chaos(self, duration: float) -> None:
        fleet = self.fleet
        names = fleet.agent_names()
        doomed, hung = names[-1], names[-2] if len(names) > 1 else names[-1]
        period = min(60.0, duration / 2)
        schedule = [(period * (i + 0.5), "kill") for i in range(int(duration // period))]
        schedule += [
            (duration * 0.25, "measure"),
            (duration * 0.35, "hang"),
            (duration * 0.5, "restart balancer"),
            (duration * 0.65, "change model"),
            (duration * 0.65 + 1, "measure after the change"),
        ]
        for at, what in sorted(schedule):
            await asyncio.sleep(max(0.0, self._started + at - time.monotonic()))
            if what == "kill":
                fleet.kill(doomed)
                self._event(f"SIGKILL {doomed}")
                fleet.start_agent(doomed)
            elif what == "measure":
                self._measure("warm", exclude=(doomed, hung))
            elif what == "hang":
                fleet.signal(hung, signal.SIGSTOP)
                self._event(f"SIGSTOP {hung}")
                await asyncio.sleep(HANG_S)
                fleet.signal(hung, signal.SIGCONT)
                self._event(f"SIGCONT {hung}")
            elif what == "restart balancer":
                code = fleet.stop_balancer()
                self._event(f"balancer stopped (exit {code})")
                if code != 0:
                    self.failures.append(f"the balancer's drain exited {code}")
                fleet.start_balancer()
                await fleet.wait_ready(1)
                self._event("balancer started again")
                await asyncio.sleep(10)
                self._measure("warm", only=("balancer",))
            elif what == "change model":
                version = await fleet.set_context(448)
                self._event(f"desired state v{version} set")
            else:
                await fleet.wait_rolled_out()
                self._event("desired state applied on every agent")
                self._measure("settled", exclude=(doomed, hung), only=tuple(names))
        await asyncio.sleep(max(0.0, self._started + duration - time.monotonic()))

    def _measure(
        self, when: str, exclude: Sequence[str] = (), only: Sequence[str] | None = None
    ) -> None:
        for name, pid in self.fleet.pids().items():
            if name in exclude or (only is not None and name not in only):
                continue
            self.memory.setdefault(name, {})[when] = rss_bytes(pid)

    async def _settle(self) -> None:
        """With the load stopped: no slot in use anywhere, nothing buffered."""
        fleet = self.fleet
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            agents = await fleet.listed()
            buffered = await fleet.management.GetBufferedRequests(
                management_pb2.GetBufferedRequestsRequest(), timeout=5
            )
            busy = {a.name: (a.slots_processing, a.slots_claimed) for a in agents}
            idle = all(used == (0, 0) for used in busy.values()) and buffered.count == 0
            if idle and len(agents) == self._args.agents:
                break
            if time.monotonic() > deadline:
                self.failures.append(f"not idle at the end: {busy}, {buffered.count} buffered")
                return
            await asyncio.sleep(0.5)
        for name in fleet.agent_names():
            if (held := await fleet.agent_busy_slots(name)) != 0:
                self.failures.append(f"{name} reports {held} busy slots at the end")
        self._event("every slot free, nothing buffered")

    def _growth(self, baselines: Sequence[str]) -> dict[str, float]:
        """Each measured process's growth to the end from the first of ``baselines`` taken."""
        growth = {}
        for name, sample in self.memory.items():
            base = next((sample[b] for b in baselines if sample.get(b)), 0)
            if base and sample.get("end"):
                growth[name] = round(sample["end"] / base - 1, 3)
        return growth

    def report(self) -> dict[str, object]:
        """The counts and checks, as printed."""
        clients = self.clients
        assert clients is not None
        growth = self._growth(("settled", "warm"))
        since_warm_up = self._growth(("warm",))
        failures = list(self.failures)
        failures += [
            f"memory of {n} grew {g:.1%}" for n, g in growth.items() if g > MEMORY_GROWTH_LIMIT
        ]
        if not growth:
            failures.append("no process lived through the measured window")
        ended = sum(clients.outcomes.values())
        if ended != clients.started:
            failures.append(f"{clients.started} requests started, {ended} ended")
        failures += clients.unexpected[:20]
        if not clients.outcomes.get("completed"):
            failures.append("no request completed")
        return {
            "minutes": self._args.minutes,
            "clients": self._args.clients,
            "agents": self._args.agents,
            "requests": clients.started,
            "outcomes": dict(sorted(clients.outcomes.items())),
            "retried_refusals": clients.retries,
            "migrated_streams": clients.migrated,
            "memory_growth": growth,
            "memory_growth_since_warm_up": since_warm_up,
            "events": self.events,
            "documented_outcomes": EXPECTED,
            "failures": failures,
        }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the load")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--agents", type=int, default=3, help="agents (at least 3)")
    parser.add_argument("--slots", type=int, default=2, help="slots per agent")
    parser.add_argument(
        "--client-idle-timeout", type=float, default=4.0, help="the balancer's flag"
    )
    parser.add_argument("--logs", type=Path, default=None, help="folder for the processes' logs")
    args = parser.parse_args(argv)
    if args.agents < 3:
        parser.error("--agents must be at least 3 (one killed, one hung, one steady)")
    return args


async def _main(args: argparse.Namespace, folder: Path) -> dict[str, object]:
    soak = Soak(args, folder)
    try:
        await soak.run()
    finally:
        await soak.fleet.close()
    return soak.report()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the soak; print the report; exit 1 on a failed check."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="soak-") as scratch:
        folder = args.logs or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        report = asyncio.run(_main(args, folder))
    print(json.dumps(report, indent=2))
    sys.exit(1 if report["failures"] else 0)


if __name__ == "__main__":
    main()
