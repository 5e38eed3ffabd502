"""scripts/check_coding_agent.sh against a real balancer and agent: a real coding agent
(opencode, installed from npm into .tools/ when missing) gets its streamed replies, a tool call
and its final message through the OpenAI API with no protocol error, with an API key."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cluster import cluster

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "check_coding_agent.sh"
# The script's own limit on its two turns (10-60 s on 2 cores); installing opencode comes on top.
TURNS_TIMEOUT_S = 300
SCRIPT_TIMEOUT_S = 480


@pytest.mark.timeout(600)
def test_opencode_gets_the_stream_a_tool_call_and_the_final_message(tmp_path: Path) -> None:
    if shutil.which("npm") is None:
        pytest.fail(
            "npm is missing: the coding agent check installs opencode-ai from npm "
            "(Debian: apt-get install -y npm)"
        )
    key = secrets.token_hex(16)
    keys = tmp_path / "api-keys"
    keys.write_text(f"coder:{key}\n")
    with cluster(balancer_args=("--api-keys-file", str(keys))) as c:
        # One slot (the turns come one at a time) with the default context (the model's trained
        # one, 8192) and both cores (the only agent).
        c.start_agent("coder", "--slots", "1", "--threads", "2")
        # None of the caller's PADDLER_CHECK_* settings or keys; temporary files under tmp_path.
        env = {name: value for name, value in os.environ.items() if "PADDLER_" not in name}
        env.update({"PADDLER_API_KEY": key, "TMPDIR": str(tmp_path)})
        command = ["bash", str(SCRIPT), "--base-url", c.balancer.openai]
        result = subprocess.run(
            [*command, "--timeout", str(TURNS_TIMEOUT_S)],
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_S,
            env=env,
            check=False,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "coding agent check passed" in result.stdout, output
        assert key not in output
        # Two streamed chat completions, each served: the turn that called a tool, then the one
        # that answered in text.
        served = c.balancer.wait_logs("request served", 2)
        assert len(served) == 2, served
        for record in served:
            assert record["endpoint"] == "/v1/chat/completions"
            assert record["method"] == "POST"
            assert record["streamed"] is True
            assert record["status"] == 200
            assert record["caller"] == "coder"
            assert record["agent"] == "coder"
            assert isinstance(record["prompt_tokens"], int) and record["prompt_tokens"] > 0
            assert isinstance(record["completion_tokens"], int)
            assert record["completion_tokens"] > 0
        assert not c.balancer.logs("request failed")
        assert not c.balancer.logs("stream failed")
    # Its temporary HOME, project and opencode's own temporary files are gone.
    assert not list(tmp_path.glob("paddler-coding-agent.*"))
