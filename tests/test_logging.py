"""Every log line is one JSON object on stderr; a bad log level is one usage error."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.processes import process_env, run_paddler


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--log-level", "loud"], {}), ([], {"PADDLER_LOG_LEVEL": "loud"})],
    ids=["flag", "env-var"],
)
def test_an_unknown_log_level_is_a_usage_error(args: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "paddler", "balancer", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=process_env(env)[0],
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "'loud'" in result.stderr
    for level in ("debug", "info", "warning", "error"):
        assert level in result.stderr


def test_the_log_level_is_documented_with_its_default() -> None:
    text = run_paddler("balancer", "--help").stdout
    assert "PADDLER_LOG_LEVEL" in text
    assert "default: info" in text


def _log_records(code: str) -> list[dict[str, object]]:
    """Run ``code`` after ``configure_logging("info", json=True)`` in a child process."""
    setup = "from paddler.common.logging import configure_logging\n"
    setup += 'configure_logging("info", json=True)\n'
    result = subprocess.run(
        [sys.executable, "-c", setup + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=process_env()[0],
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines, "nothing was logged"
    for line in lines:
        assert line.startswith("{"), f"not a JSON line: {line!r} in:\n{result.stderr}"
    return [json.loads(line) for line in lines]


def test_stdlib_logging_and_warnings_come_out_as_json_lines() -> None:
    records = _log_records(
        """
        import logging, warnings
        import structlog
        import huggingface_hub.utils.logging
        logging.getLogger("grpc._cython.cygrpc").warning("x %s", 1)
        logging.getLogger("grpc._cython.cygrpc").info("grpc info")
        logging.getLogger("grpc._cython.cygrpc").debug("below the level")
        logging.getLogger("huggingface_hub.file_download").warning("hub says")
        warnings.warn("careful", UserWarning, stacklevel=1)
        structlog.get_logger("paddler.test").info("structlog line", answer=42)
        """
    )
    by_event = {str(record["event"]): record for record in records}
    assert "below the level" not in by_event
    grpc_record = by_event["x 1"]
    assert grpc_record["level"] == "warning"
    assert grpc_record["logger"] == "grpc._cython.cygrpc"
    assert str(grpc_record["timestamp"]).endswith("Z")
    assert by_event["grpc info"]["level"] == "info"
    hub_records = [record for record in records if record["event"] == "hub says"]
    assert len(hub_records) == 1  # not also in huggingface_hub's own plain-text handler
    assert hub_records[0]["logger"] == "huggingface_hub.file_download"
    (warning,) = [record for record in records if "careful" in str(record["event"])]
    assert warning["level"] == "warning"
    assert warning["logger"] == "py.warnings"
    assert "UserWarning" in str(warning["event"])
    ours = by_event["structlog line"]
    assert ours["level"] == "info"
    assert ours["logger"] == "paddler.test"
    assert ours["answer"] == 42
    assert str(ours["timestamp"]).endswith("Z")


def test_a_stdlib_exception_is_one_json_line_with_its_traceback() -> None:
    records = _log_records(
        """
        import logging
        try:
            raise ValueError("bad")
        except ValueError:
            logging.getLogger("grpc").exception("it failed")
        """
    )
    (record,) = records
    assert record["level"] == "error"
    assert "ValueError: bad" in str(record["exception"])


def test_llama_cpp_errors_are_logged_at_level_error() -> None:
    records = _log_records(
        """
        from paddler.agent.llama_logging import _forward
        _forward(4, b"boom\\n", None)
        _forward(3, b"hmm\\n", None)
        _forward(2, b"chatter\\n", None)
        """
    )
    assert [(record["event"], record["level"]) for record in records] == [
        ("boom", "error"),
        ("hmm", "warning"),
    ]
    assert {record["logger"] for record in records} == {"llama.cpp"}
