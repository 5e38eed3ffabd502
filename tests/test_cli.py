"""The ``paddler`` command line, run as a user would."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from tests.processes import AgentProcess, ServerProcess, run_paddler

paddler = run_paddler


def test_every_command_documents_its_flags_and_variables() -> None:
    listing = paddler("--help").stdout
    for command in ("balancer", "agent", "generate", "chat", "embed", "agents"):
        assert command in listing
        text = paddler(command, "--help").stdout
        assert "PADDLER_" in text
        assert "default" in text or command in ("generate", "chat", "agents", "embed")


def test_an_unreachable_balancer_is_one_line_and_exit_1() -> None:
    result = paddler("generate", "--address", "127.0.0.1:1", "--timeout", "3", "Hello")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(("paddler: UNAVAILABLE", "paddler: DEADLINE_EXCEEDED"))


@pytest.mark.timeout(180)
def test_with_no_flags_everything_finds_the_local_balancer(tmp_path: Path) -> None:
    balancer = ServerProcess("balancer", [], "balancer listening", None)
    agent = AgentProcess([])
    try:
        balancer.wait_serving("inference")
        agent.wait_ready()
        balancer.wait_logs("agent registered")
        table = paddler("agents")
        assert table.returncode == 0, table.stderr
        assert agent.listening["name"] in table.stdout
        assert "SmolLM2-135M-Instruct.Q4_1" in table.stdout
        reply = paddler("generate", "--max-tokens", "8", "Say hello.")
        assert reply.returncode == 0, reply.stderr
        assert reply.stdout.strip()
        assert agent.listening["name"] in reply.stderr  # the summary line names the agent
        chat = paddler("chat", "--max-tokens", "8", stdin="Hi!\nWhat did I just say?\n\n")
        assert chat.returncode == 0, chat.stderr
        assert chat.stdout.count("model> ") == 2
        _check_grammar_files(tmp_path)
        _check_embed()
    finally:
        agent.stop()
        assert balancer.stop() == 0


def test_an_agent_stale_after_below_twice_the_status_interval_is_refused() -> None:
    result = paddler("balancer", "--agent-stale-after", "1.5")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr  # one line says what is wrong and why
    assert "must be at least 2 s, got 1.5" in errors[0]
    assert "Traceback" not in result.stderr


def _check_grammar_files(folder: Path) -> None:
    """--json-schema and --grammar constrain the reply; a bad grammar is one line, exit 1."""
    schema = {
        "type": "object",
        "properties": {"colour": {"enum": ["red", "blue"]}, "count": {"type": "integer"}},
        "required": ["colour", "count"],
    }
    schema_file = folder / "schema.json"
    schema_file.write_text(json.dumps(schema))
    reply = paddler("generate", "--json-schema", str(schema_file), "Pick a colour.")
    assert reply.returncode == 0, reply.stderr
    jsonschema.validate(json.loads(reply.stdout), schema)
    grammar_file = folder / "yes-no.gbnf"
    grammar_file.write_text('root ::= "yes" | "no"\n')
    reply = paddler("generate", "--grammar", str(grammar_file), "Is the sky blue?")
    assert reply.returncode == 0, reply.stderr
    assert reply.stdout.strip() in {"yes", "no"}
    both = paddler(
        "generate", "--json-schema", str(schema_file), "--grammar", str(grammar_file), "Hi"
    )
    assert both.returncode == 2
    assert "not both" in both.stderr
    grammar_file.write_text('root ::= "yes" | "no\n')
    refused = paddler("generate", "--grammar", str(grammar_file), "Is the sky blue?")
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert lines[0].startswith("paddler: INVALID_ARGUMENT")
    assert "input.grammar.gbnf" in lines[0]


def _check_embed() -> None:
    """JSON lines of unit vectors, or a similarity matrix with ones on its diagonal."""
    lines = paddler("embed", "The cat sat.", "A kitten rested.")
    assert lines.returncode == 0, lines.stderr
    rows = [json.loads(line) for line in lines.stdout.splitlines()]
    assert [row["index"] for row in rows] == [0, 1]
    for row in rows:
        assert row["tokens"] > 0
        assert abs(sum(value * value for value in row["embedding"]) - 1) < 1e-3
    matrix = paddler("embed", "--similarity", "The cat sat.", "A kitten rested.", "Taxes rose.")
    assert matrix.returncode == 0, matrix.stderr
    cells = [[float(cell) for cell in line.split()] for line in matrix.stdout.splitlines()]
    assert len(cells) == 3
    assert all(len(row) == 3 and abs(row[index] - 1) < 1e-3 for index, row in enumerate(cells))
    assert "tokens]" in matrix.stderr
