"""The cluster's desired state: validated, versioned, optionally kept in a JSON file."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import structlog
from google.protobuf import json_format

from paddler.common.desired_state import check_desired_state
from paddler.common.errors import InvalidArgumentError, PaddlerError
from paddler.common.model_sources import ModelSourcePolicy
from paddler.v1 import desired_state_pb2

log = structlog.get_logger(__name__)


class StateFileError(PaddlerError):
    """The state file cannot be read or written."""


class StateStore:
    """Holds the current VersionedDesiredState; ``set`` validates, bumps, saves and announces."""

    def __init__(self, path: Path | None, sources: ModelSourcePolicy | None = None) -> None:
        self._path = path
        self._sources = sources
        self._listeners: list[Callable[[desired_state_pb2.VersionedDesiredState], None]] = []
        # A new epoch unless a state file restores one: versions counted from 1 again by a
        # balancer without a state file never match what agents applied under an older run.
        self.current = desired_state_pb2.VersionedDesiredState(epoch=uuid.uuid4().hex)
        if path is not None and path.exists():
            try:
                restored = json_format.Parse(
                    path.read_text(), desired_state_pb2.VersionedDesiredState()
                )
            except (OSError, json_format.ParseError) as error:
                raise StateFileError(f"cannot read the state file {path}: {error}") from error
            restored.epoch = restored.epoch or self.current.epoch  # a file from before epochs
            if restored.version:  # checked again: the file or the limits may have changed
                try:
                    check_desired_state(restored.state, sources)
                except InvalidArgumentError as error:
                    raise StateFileError(
                        f"the state in {path} is no longer valid: {error.message}"
                    ) from error
            self.current = restored
            log.info(
                "desired state restored",
                path=str(path),
                version=self.current.version,
                epoch=self.current.epoch,
            )

    def listen(self, listener: Callable[[desired_state_pb2.VersionedDesiredState], None]) -> None:
        """Call ``listener`` with every new state."""
        self._listeners.append(listener)

    def set(self, state: desired_state_pb2.DesiredState) -> desired_state_pb2.VersionedDesiredState:
        """Validate and store ``state`` under the next version; the old one stays on any error."""
        check_desired_state(state, self._sources)
        return self._store(state)

    async def submit(
        self, state: desired_state_pb2.DesiredState
    ) -> desired_state_pb2.VersionedDesiredState:
        """``set``, with the checks (a template's compile can take a while) off the event
        loop."""
        await asyncio.to_thread(check_desired_state, state, self._sources)
        return self._store(state)

    def _store(
        self, state: desired_state_pb2.DesiredState
    ) -> desired_state_pb2.VersionedDesiredState:
        updated = desired_state_pb2.VersionedDesiredState(
            version=self.current.version + 1,
            state=state,
            epoch=self.current.epoch,
        )
        if self._path is not None:
            self._save(updated, self._path)
        self.current = updated
        log.info(
            "desired state set",
            version=updated.version,
            epoch=updated.epoch,
            model=str(state.model).strip(),
        )
        for listener in list(self._listeners):
            listener(updated)
        return updated

    @staticmethod
    def _save(state: desired_state_pb2.VersionedDesiredState, path: Path) -> None:
        """Write atomically and durably: a temporary file in the same folder, fsync, rename
        over, then fsync the folder (so the rename survives a power cut); on any error the
        temporary file is removed and the old file stays."""
        text = json_format.MessageToJson(state)
        temporary: Path | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            temporary = Path(name)
            with os.fdopen(handle, "w") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            temporary.replace(path)
            temporary = None
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except OSError as error:
            raise StateFileError(f"cannot write the state file {path}: {error}") from error
        finally:
            if temporary is not None:
                temporary.unlink(missing_ok=True)
