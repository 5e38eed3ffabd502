"""Writes a model file into the cache safely: one writer at a time, never seen half-written.

Every process that wants ``target`` takes a file lock beside it (``target`` + ".lock"). The
holder reuses ``target`` when it passes the caller's check; otherwise it builds the file into a
temporary file in the same folder, syncs it to disk, checks it, and renames it over ``target``
in one step. Readers therefore see either no file or a complete one. What a crashed writer left
behind (a temporary ``.part`` file, or a target that fails the check) is removed and rebuilt
by the next holder of the lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock, Timeout

from paddler.agent.llama_model import ModelLoadError

LOCK_TIMEOUT_S = 600.0
"""How long a process waits for another one to finish writing the same model file."""

_READ_BLOCK = 1024 * 1024


def materialize(
    target: Path,
    build: Callable[[Path], None],
    is_valid: Callable[[Path], bool],
    *,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
) -> Path:
    """Return ``target`` once it holds a file that passes ``is_valid``, building it if need be.

    ``build(path)`` writes the whole file to ``path``, a temporary file beside ``target`` that
    already exists (empty); it may raise ``ModelLoadError``. Any ``OSError`` or lock timeout
    becomes a ``ModelLoadError`` naming the path.
    """
    lock_path = lock_path_for(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock_path), timeout=lock_timeout_s):
            return _materialize_locked(target, build, is_valid)
    except Timeout as error:
        raise ModelLoadError(
            f"timed out after {lock_timeout_s:g} s waiting for the lock {lock_path}"
            f" (another process is writing the model file {target})"
        ) from error
    except OSError as error:
        raise ModelLoadError(f"could not write the model file {target}: {error}") from error


def lock_path_for(target: Path) -> Path:
    """The lock file that guards writes of ``target``."""
    return target.with_name(target.name + ".lock")


def temporary_files(target: Path) -> list[Path]:
    """Temporary files of writes of ``target`` that are in its folder now."""
    return sorted(target.parent.glob(f".{target.name}.*.part"))


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file's contents."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _materialize_locked(
    target: Path, build: Callable[[Path], None], is_valid: Callable[[Path], bool]
) -> Path:
    # We hold the lock, so no other writer is running: any temporary file is a crash's leftover.
    for stale in temporary_files(target):
        stale.unlink(missing_ok=True)
    if target.exists():
        if target.is_file() and is_valid(target):
            return target
        target.unlink()
    descriptor, name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".part"
    )
    os.close(descriptor)
    partial = Path(name)
    try:
        build(partial)
        with partial.open("rb+") as handle:
            os.fsync(handle.fileno())
        if not is_valid(partial):
            raise ModelLoadError(f"the model file built for {target} failed its check")
        partial.chmod(0o644)
        partial.replace(target)  # atomic: readers see the old state or the whole file
    finally:
        partial.unlink(missing_ok=True)
    sync_directory(target.parent)
    return target


def sync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable, where the platform can open directories."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with contextlib.suppress(OSError):
            os.fsync(descriptor)
    finally:
        os.close(descriptor)
