"""``scripts/serve.sh``, the README's first command, as a service: it forwards agent flags, a
start after a setup installs nothing, SIGTERM stops both servers with exit status 0, and a
server that fails makes it stop the other and exit non-zero."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from tests.processes import free_port, process_env

ROOT = Path(__file__).resolve().parent.parent
READY_LINE = "Serving SmolLM2-135M-Instruct through a balancer."
WAIT_S = 180.0


class ServeScript:
    """``bash scripts/serve.sh ARGS`` on ports of its own; its output, line by line."""

    def __init__(self, *args: str, inference: int | None = None) -> None:
        management = free_port()
        env, _ = process_env(
            {
                "PADDLER_INFERENCE_ADDR": f"127.0.0.1:{inference or free_port()}",
                "PADDLER_MANAGEMENT_ADDR": f"127.0.0.1:{management}",
                "PADDLER_MANAGEMENT_ADDRESS": f"127.0.0.1:{management}",
                "PADDLER_BALANCER": f"127.0.0.1:{management}",
                "PADDLER_OPENAI_ADDR": f"127.0.0.1:{free_port()}",
                "PADDLER_WEB_ADDR": f"127.0.0.1:{free_port()}",
                "PADDLER_PORT": str(free_port()),
            }
        )
        self.process = subprocess.Popen(
            ["bash", "scripts/serve.sh", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,  # its own process group: a hung run is killed whole
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_line(self, text: str) -> None:
        """Wait until a line containing ``text`` was printed (or the script ended)."""
        deadline = time.monotonic() + WAIT_S
        while not any(text in line for line in self.lines):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self._reader.join(timeout=5)
                if any(text in line for line in self.lines):
                    return
                raise AssertionError(f"no {text!r} in:\n{''.join(self.lines)}")
            time.sleep(0.05)

    def records(self, event: str) -> list[dict[str, object]]:
        """The servers' JSON log records of ``event``."""
        parsed = [json.loads(line) for line in list(self.lines) if line.startswith("{")]
        return [record for record in parsed if record.get("event") == event]

    def wait(self) -> int:
        """The exit status, once the script ended and its output was read; a script still
        running after ``WAIT_S`` is killed and fails the test with what it printed."""
        try:
            code = self.process.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self._reader.join(timeout=5)
            raise AssertionError(
                f"serve.sh still ran after {WAIT_S:g} s; it printed:\n{''.join(self.lines)}"
            ) from None
        self._reader.join(timeout=5)
        return code

    def stop(self) -> int:
        """SIGTERM, as a supervisor sends it; the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.wait()


def test_serve_forwards_agent_flags_installs_nothing_twice_and_stops_with_zero() -> None:
    for _ in range(2):  # the second start finds the stamp of the first setup
        served = ServeScript(
            "--agent-arg", "--slots", "--agent-arg", "1", "--agent-arg=--context-size=256"
        )
        served.wait_line(READY_LINE)
        [chosen] = served.records("context size chosen")
        assert chosen["context_size"] == 256
        assert chosen["decided_by"] == "the agent's --context-size"
        assert served.stop() == 0, "".join(served.lines)
        output = "".join(served.lines)
        assert "setup: installing" not in output
        assert "BuildBackendWarning" not in output and "pip install" not in output
        # Both servers stopped on the signal, each cleanly.
        assert served.records("agent stopped") and served.records("balancer stopped"), output


def test_a_server_that_fails_stops_the_other_and_the_exit_status_says_so() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        served = ServeScript(inference=taken.getsockname()[1])
        code = served.wait()
    output = "".join(served.lines)
    assert code != 0, output
    assert "paddler: cannot listen on" in output and "Traceback" not in output, output
    assert "serve.sh: the balancer exited" in output
