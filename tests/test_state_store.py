"""The balancer's state file: written durably (a failed write leaves the old file and no
temporary one behind), and checked again when a restarted balancer reads it."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import json_format

from paddler.balancer.state_store import StateFileError, StateStore
from paddler.common.errors import InvalidArgumentError
from paddler.common.model_sources import ModelSourcePolicy
from paddler.v1 import desired_state_pb2
from tests.processes import run_paddler


def _state(**fields: object) -> desired_state_pb2.DesiredState:
    return desired_state_pb2.DesiredState(**fields)  # type: ignore[arg-type]


SMOLLM = _state(model=desired_state_pb2.ModelSource(packaged="smollm2-135m"))


def test_a_failed_write_keeps_the_old_state_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "desired.json"
    store = StateStore(path)
    first = store.set(SMOLLM)
    written = path.read_text()
    path.unlink()
    path.mkdir()  # the rename over it fails
    with pytest.raises(StateFileError) as caught:
        store.set(_state(model=desired_state_pb2.ModelSource(packaged="gemma3-270m")))
    assert str(path) in caught.value.message
    assert store.current == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["desired.json"]  # no ".desired.*"
    path.rmdir()
    path.write_text(written)
    assert StateStore(path).current == first


def test_a_restored_state_is_checked_like_a_new_one(tmp_path: Path) -> None:
    path = tmp_path / "desired.json"
    outside = _state(model=desired_state_pb2.ModelSource(local_path="/elsewhere/model.gguf"))
    StateStore(path).set(outside)
    assert StateStore(path).current.state == outside  # fine without an allow-list
    with pytest.raises(StateFileError) as caught:
        StateStore(path, ModelSourcePolicy(local_roots=("/models",)))
    assert "no longer valid" in caught.value.message
    assert "state.model.local_path" in caught.value.message
    bad = desired_state_pb2.VersionedDesiredState(version=3, state=SMOLLM, epoch="e")
    bad.state.defaults.context_size = 5  # written by hand, or by an older version
    path.write_text(json_format.MessageToJson(bad))
    with pytest.raises(StateFileError):
        StateStore(path)
    result = run_paddler("balancer", "--state-file", str(path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("paddler: the state in ")
    assert "state.defaults.context_size" in lines[-1]


def test_a_state_file_from_before_pools_is_the_default_pool(tmp_path: Path) -> None:
    path = tmp_path / "desired.json"
    old = desired_state_pb2.VersionedDesiredState(version=4, state=SMOLLM, epoch="e1")
    path.write_text(json_format.MessageToJson(old))
    store = StateStore(path)
    assert (store.current.version, store.current.epoch, store.current.pool) == (4, "e1", "default")
    assert store.current.state == SMOLLM
    gemma = _state(model=desired_state_pb2.ModelSource(packaged="gemma3-270m"))
    stored = store.set(gemma, "gemma", ["gemma-chat"])
    # Versions count up across the pools of the epoch.
    assert (stored.version, stored.pool, stored.epoch) == (5, "gemma", "e1")
    assert store.set(SMOLLM).version == 6
    restored = StateStore(path)  # the file is in the pools' form now
    assert restored.state_of("gemma") == stored
    assert restored.aliases_of("gemma") == ["gemma-chat"]
    assert restored.current.version == 6
    assert sorted(restored.pools()) == ["default", "gemma"]
    restored.set(gemma, "gemma")  # aliases kept unless given
    assert restored.aliases_of("gemma") == ["gemma-chat"]
    restored.set(gemma, "gemma", [])
    assert restored.aliases_of("gemma") == []


def test_a_bad_pool_in_the_state_file_names_its_pool(tmp_path: Path) -> None:
    path = tmp_path / "desired.json"
    StateStore(path).set(
        _state(model=desired_state_pb2.ModelSource(local_path="/elsewhere/m.gguf")), "side"
    )
    with pytest.raises(StateFileError) as caught:
        StateStore(path, ModelSourcePolicy(local_roots=("/models",)))
    assert "(pool 'side')" in caught.value.message


def test_new_aliases_with_the_same_state_roll_nothing_out(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "desired.json")
    announced: list[int] = []
    store.listen(lambda state: announced.append(state.version))
    first = store.set(SMOLLM, "chat", ["a"])
    again = store.set(SMOLLM, "chat", ["b", "c"])
    assert again == first and announced == [1]
    assert store.aliases_of("chat") == ["b", "c"]
    assert store.set(SMOLLM, "chat").version == 2  # no aliases given: a new version, as before


def test_a_pool_made_again_never_repeats_a_version(tmp_path: Path) -> None:
    path = tmp_path / "desired.json"
    store = StateStore(path)
    for _ in range(3):
        store.set(SMOLLM, "side")
    store.set(SMOLLM)  # the default pool: v4
    store.delete("side", agents=0)
    assert StateStore(path).set(SMOLLM, "side").version == 5  # not 1: its agents may report v1


def test_pool_names_and_aliases_never_shadow_one_another(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "desired.json")
    store.set(SMOLLM, "gemma", ["chat"])
    with pytest.raises(InvalidArgumentError) as caught:
        store.set(SMOLLM, "chat")
    assert "is an alias of the pool 'gemma'" in caught.value.message
    with pytest.raises(InvalidArgumentError):
        store.set(SMOLLM, "other", ["gemma"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("null", "cannot read the state file"),
        ("[1, 2]", "cannot read the state file"),
        ('{"epoch": "e", "pools": {"Bad Name": {}}}', "not a pool name"),
        (
            '{"epoch": "e", "pools": {"side": {"aliases": ["not ok"]}}}',
            "pools['side'].aliases[0]",
        ),
    ],
)
def test_a_state_file_out_of_bounds_is_refused(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "desired.json"
    path.write_text(text)
    with pytest.raises(StateFileError) as caught:
        StateStore(path)
    assert expected in caught.value.message
