"""A port another process holds stops a server at start with one line that names it (exit 1),
never a traceback, and never a port silently shared with the first process (gRPC's default
SO_REUSEPORT would have split the calls between two agents)."""

from __future__ import annotations

import socket

from tests.processes import free_port, run_paddler, running_agent


def _refused(result_stderr: str, address: str) -> None:
    assert f"paddler: cannot listen on {address}" in result_stderr, result_stderr
    assert "Traceback" not in result_stderr, result_stderr


def test_a_second_agent_on_the_same_port_is_refused() -> None:
    port = free_port()
    with running_agent("--port", str(port)):
        second = run_paddler("agent", "--balancer", "", "--port", str(port))
    assert second.returncode == 1
    _refused(second.stderr, f"127.0.0.1:{port}")


def test_a_balancer_whose_http_port_is_taken_says_so() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        result = run_paddler(
            "balancer",
            *("--inference-addr", "127.0.0.1:0", "--management-addr", "127.0.0.1:0"),
            *("--web-addr", "127.0.0.1:0", "--openai-addr", address),
        )
    assert result.returncode == 1
    _refused(result.stderr, address)
