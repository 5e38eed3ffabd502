"""``paddler state set --file`` (a ConfigMap's JSON) and ``--watch``, against a real balancer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import BalancerProcess, ServerProcess, run_paddler

STATE = {"model": {"packaged": "smollm2-135m"}, "defaults": {"sampling": {"temperature": 0.5}}}


@pytest.fixture(scope="module")
def balancer() -> Iterator[BalancerProcess]:
    process = BalancerProcess([])
    yield process
    process.stop()


def _shown(balancer: BalancerProcess) -> dict[str, object]:
    result = run_paddler("state", "show", "--address", balancer.management)
    assert result.returncode == 0, result.stderr
    shown: dict[str, object] = json.loads(result.stdout)
    return shown


def _temperature(shown: dict[str, object]) -> object:
    state = shown["state"]
    assert isinstance(state, dict)
    return state.get("defaults", {}).get("sampling", {}).get("temperature")


def test_a_state_file_sets_the_whole_state(tmp_path: Path, balancer: BalancerProcess) -> None:
    file = tmp_path / "state.json"
    file.write_text(json.dumps(STATE))
    result = run_paddler("state", "set", "--file", str(file), "--address", balancer.management)
    assert result.returncode == 0, result.stderr
    state = _shown(balancer)["state"]
    assert isinstance(state, dict)
    assert state["model"] == {"packaged": "smollm2-135m"}
    assert state["defaults"]["sampling"]["temperature"] == 0.5


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ("{not json", [], "is not a desired state in JSON"),
        ('{"model": {"packaged": "x"}, "colour": 1}', [], 'no field named "colour"'),
        (json.dumps(STATE), ["--temperature", "0.1"], "leave out --temperature"),
        (None, [], "cannot read"),
    ],
)
def test_a_bad_state_file_is_refused_before_any_call(
    tmp_path: Path, content: str | None, args: list[str], message: str
) -> None:
    file = tmp_path / "state.json"
    if content is not None:
        file.write_text(content)
    result = run_paddler("state", "set", "--file", str(file), "--address", "127.0.0.1:1", *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_watch_needs_a_file_and_set_needs_a_model_or_a_file() -> None:
    assert "--watch needs --file" in run_paddler("state", "set", "--watch").stderr
    assert "give --model, or --file" in run_paddler("state", "set").stderr


def test_an_invalid_state_in_the_file_is_the_balancers_invalid_argument(
    tmp_path: Path, balancer: BalancerProcess
) -> None:
    file = tmp_path / "state.json"
    file.write_text(json.dumps({"model": {"packaged": "no-such-model"}}))
    result = run_paddler("state", "set", "--file", str(file), "--address", balancer.management)
    assert result.returncode == 1
    assert result.stderr.startswith("paddler: INVALID_ARGUMENT")
    assert "no-such-model" in result.stderr


def test_watch_keeps_the_balancer_on_the_files_state(
    tmp_path: Path, balancer: BalancerProcess
) -> None:
    file = tmp_path / "state.json"
    file.write_text(json.dumps({**STATE, "defaults": {"sampling": {"temperature": 0.75}}}))
    args = ["set", "--file", str(file), "--watch", "--watch-interval", "0.2"]
    # Its log says when it set the state and when it found nothing to set (debug).
    watcher = ServerProcess(
        "state",
        [*args, "--address", balancer.management, "--log-level", "debug"],
        "desired state set",
        None,
    )
    try:
        watcher.wait_logs("desired state set", 1)
        first = _shown(balancer)
        assert _temperature(first) == 0.75
        # A change made elsewhere is undone; the file is the truth.
        changed = run_paddler(
            "state", "set", "--model", "smollm2-135m", "--address", balancer.management
        )
        assert changed.returncode == 0, changed.stderr
        watcher.wait_logs("desired state set", 2)
        restored = _shown(balancer)
        assert _temperature(restored) == 0.75
        assert int(str(restored["version"])) > int(str(first["version"])) + 1
        # Editing the file (as kubelet updates a mounted ConfigMap) sets the new state.
        file.write_text(json.dumps({**STATE, "defaults": {"sampling": {"temperature": 0.25}}}))
        watcher.wait_logs("desired state set", 3)
        edited = _shown(balancer)
        assert _temperature(edited) == 0.25
        # An unchanged file sets nothing more: checks go by and the version stays.
        checks = len(watcher.logs("desired state checked"))
        watcher.wait_logs("desired state checked", checks + 3)
        assert _shown(balancer)["version"] == edited["version"]
        assert len(watcher.logs("desired state set")) == 3
    finally:
        assert watcher.stop() == 0
    assert json.loads(watcher.lines[-1])["event"] == "state watch stopped"
