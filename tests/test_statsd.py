"""StatsD: a UDP socket in the test receives the balancer's gauges, and they follow the cluster."""

from __future__ import annotations

import socket
import time

from tests.cluster import cluster

WAIT_S = 60.0


def gauges_until(receiver: socket.socket, wanted: dict[str, float]) -> dict[str, float]:
    """The latest value of every gauge received, once they include ``wanted``."""
    latest: dict[str, float] = {}
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            datagram = receiver.recv(4096).decode()
        except TimeoutError:
            continue
        for line in datagram.splitlines():
            name, _, rest = line.partition(":")
            number, kind = rest.split("|")
            assert kind == "g", line
            latest[name] = float(number)
        if all(latest.get(name) == number for name, number in wanted.items()):
            return latest
    raise AssertionError(f"no gauges {wanted}; latest {latest}")


def test_the_gauges_arrive_with_the_prefix_and_follow_the_agents() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(1.0)
        port = receiver.getsockname()[1]
        args = ("--statsd-addr", f"127.0.0.1:{port}", "--statsd-prefix", "ptest")
        with cluster(("solo", 2), balancer_args=args) as c:
            latest = gauges_until(receiver, {"ptest.slots_total": 2, "ptest.agents_registered": 1})
            assert latest["ptest.slots_busy"] == 0
            assert latest["ptest.buffered_requests"] == 0
            c.start_agent("second", "--slots", "3", "--context-size", "512")
            gauges_until(receiver, {"ptest.slots_total": 5, "ptest.agents_registered": 2})
