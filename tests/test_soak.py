"""The chaos soak (`scripts/soak.py`) for two minutes: real processes killed, hung and restarted
under load, and every request accounted for (the 30-minute run's counts are in docs/soak.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.processes import process_env

SOAK = Path(__file__).resolve().parent.parent / "scripts" / "soak.py"


def test_a_two_minute_chaos_soak_loses_no_request(tmp_path: Path) -> None:
    env, _ = process_env()
    result = subprocess.run(
        [sys.executable, str(SOAK), "--minutes", "2", "--clients", "6", "--logs", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env=env,
    )
    assert result.stdout, result.stderr[-4000:]
    report = json.loads(result.stdout)
    assert report["failures"] == [], report
    assert result.returncode == 0
    outcomes = report["outcomes"]
    assert sum(outcomes.values()) == report["requests"]
    assert set(outcomes) <= set(report["documented_outcomes"])
    assert outcomes["completed"] > 0 and outcomes.get("cancelled", 0) > 0
    events = " ".join(report["events"])
    for happened in ("SIGKILL", "SIGSTOP", "balancer started again", "desired state v2 set"):
        assert happened in events
    assert "every slot free, nothing buffered" in events
    assert all(growth < 0.10 for growth in report["memory_growth"].values())
