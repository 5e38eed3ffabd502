"""Secure by default: with no credentials, servers listen on loopback only; beyond it they
need their credentials or an explicit --allow-insecure."""

from __future__ import annotations

import secrets
from pathlib import Path

from tests.processes import AgentProcess, BalancerProcess, run_paddler

WILDCARD = "0.0.0.0:0"


def test_the_defaults_listen_on_loopback_only() -> None:
    help_text = run_paddler("balancer", "--help").stdout + run_paddler("agent", "--help").stdout
    flat = " ".join(help_text.split())
    assert "default: 0.0.0.0" not in flat
    for default in ("127.0.0.1:50051", "127.0.0.1:50053", "127.0.0.1:8080", "127.0.0.1:8081"):
        assert f"default: {default}" in flat
    assert "PADDLER_HOST; default: 127.0.0.1]" in flat


def test_a_wide_listen_without_credentials_is_refused_with_what_to_do() -> None:
    cases = {
        ("--inference-addr", WILDCARD): "API keys (--api-keys-file)",
        ("--openai-addr", WILDCARD): "API keys (--api-keys-file)",
        ("--management-addr", WILDCARD): "agent token (--agent-token-file)",
        ("--web-addr", WILDCARD): "admin key (--admin-key-file)",
    }
    for flag, missing in cases.items():
        result = run_paddler("balancer", *flag)
        assert result.returncode == 1, flag
        assert missing in result.stderr, result.stderr
        assert "--allow-insecure" in result.stderr
    agent = run_paddler("agent", "--host", "0.0.0.0", "--balancer", "")
    assert agent.returncode == 1
    assert "agent token (--agent-token-file)" in agent.stderr


def test_allow_insecure_starts_and_warns() -> None:
    # Metrics alone need no credential: only the inference server is warned about.
    balancer = BalancerProcess(
        ["--inference-addr", WILDCARD, "--metrics-addr", WILDCARD, "--allow-insecure"]
    )
    try:
        warnings = balancer.wait_logs("listening without credentials")
        assert [w["surface"] for w in warnings] == ["inference server"]
        assert warnings[0]["level"] == "warning"
    finally:
        assert balancer.stop() == 0


def test_with_its_credentials_a_server_listens_widely_without_warning(tmp_path: Path) -> None:
    files = {}
    for name in ("agent-token", "admin-key"):
        files[name] = tmp_path / name
        files[name].write_text(secrets.token_hex(24))
    keys = tmp_path / "api-keys"
    keys.write_text(f"someone:{secrets.token_hex(24)}\n")
    balancer = BalancerProcess(
        [
            "--inference-addr", WILDCARD, "--management-addr", WILDCARD,
            "--openai-addr", WILDCARD, "--web-addr", WILDCARD, "--metrics-addr", WILDCARD,
            "--agent-token-file", str(files["agent-token"]),
            "--admin-key-file", str(files["admin-key"]), "--api-keys-file", str(keys),
        ]
    )  # fmt: skip
    agent = AgentProcess(
        [
            "--host", "0.0.0.0", "--balancer", "",
            "--agent-token-file", str(files["agent-token"]),
        ]
    )  # fmt: skip
    try:
        agent.wait_ready()
        assert balancer.listening["inference"].startswith("0.0.0.0:")
        assert not balancer.logs("listening without credentials")
        assert not agent.logs("listening without credentials")
    finally:
        agent.stop()
        assert balancer.stop() == 0


def test_a_bad_credential_file_stops_the_start_with_its_name(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("abc")
    bad_keys = tmp_path / "keys"
    bad_keys.write_text("no-colon-here\n")
    cases = {
        ("--admin-key-file", str(short)): "at least 16 characters",
        ("--agent-token-file", str(tmp_path / "missing")): "cannot be read",
        ("--api-keys-file", str(bad_keys)): "line 1: expected name:key",
    }
    for flag, message in cases.items():
        result = run_paddler("balancer", *flag)
        assert result.returncode == 1, flag
        assert message in result.stderr, result.stderr
        assert "no-colon-here" not in result.stderr  # a key's text is never echoed
