"""Every pool's desired state: validated, versioned, optionally kept in a JSON file."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog
from google.protobuf import json_format
from google.protobuf.message import Message

from paddler.common.desired_state import check_desired_state
from paddler.common.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PaddlerError,
    ResourceExhaustedError,
)
from paddler.common.model_sources import ModelSourcePolicy
from paddler.common.pool_names import (
    DEFAULT_POOL,
    MAX_POOLS,
    check_aliases,
    check_pool_name,
    pool_of,
)
from paddler.v1 import desired_state_pb2

log = structlog.get_logger(__name__)

VersionedState = desired_state_pb2.VersionedDesiredState


class StateFileError(PaddlerError):
    """The state file cannot be read or written."""


class StateStore:
    """Holds each pool's VersionedDesiredState and aliases; ``set`` validates, bumps, saves
    and announces. The pool "default" always exists (version 0 until a state is set)."""

    def __init__(self, path: Path | None, sources: ModelSourcePolicy | None = None) -> None:
        self._path = path
        self._sources = sources
        self._listeners: list[Callable[[VersionedState], None]] = []
        # A new epoch unless a state file restores one: versions counted from 1 again by a
        # balancer without a state file never match what agents applied under an older run.
        self._stored = desired_state_pb2.DesiredPools(epoch=uuid.uuid4().hex)
        if path is not None and path.exists():
            self._stored = _restored(path, self._stored.epoch, sources)
            log.info(
                "desired state restored",
                path=str(path),
                epoch=self._stored.epoch,
                pools={name: pool.desired_state.version for name, pool in self.pools().items()},
            )

    @property
    def epoch(self) -> str:
        """Who numbered the versions (see VersionedDesiredState.epoch)."""
        return self._stored.epoch

    @property
    def current(self) -> VersionedState:
        """The default pool's state."""
        return self.state_of(DEFAULT_POOL)

    def state_of(self, pool: str) -> VersionedState:
        """``pool``'s state (version 0: none set)."""
        stored = self._stored.pools.get(pool_of(pool))
        if stored is None:
            return VersionedState(epoch=self._stored.epoch, pool=pool_of(pool))
        return stored.desired_state

    def aliases_of(self, pool: str) -> list[str]:
        """``pool``'s aliases."""
        stored = self._stored.pools.get(pool_of(pool))
        return list(stored.aliases) if stored is not None else []

    def pools(self) -> dict[str, desired_state_pb2.PoolState]:
        """Every pool with a stored state or aliases, and "default", by name."""
        pools = {DEFAULT_POOL: desired_state_pb2.PoolState(desired_state=self.current)}
        pools.update(self._stored.pools)
        return dict(sorted(pools.items()))

    def listen(self, listener: Callable[[VersionedState], None]) -> None:
        """Call ``listener`` with every new state (its ``pool`` says whose)."""
        self._listeners.append(listener)

    def set(
        self,
        state: desired_state_pb2.DesiredState,
        pool: str = DEFAULT_POOL,
        aliases: Sequence[str] | None = None,
    ) -> VersionedState:
        """Validate and store ``state`` as ``pool``'s next version (``aliases``, unless None,
        replace the pool's; given with the state the pool has, they change alone: no new
        version); nothing changes on any error."""
        pool, aliases = self._check_pool(pool, aliases)
        check_desired_state(state, self._sources)
        return self._store(state, pool, aliases)

    async def submit(
        self,
        state: desired_state_pb2.DesiredState,
        pool: str = DEFAULT_POOL,
        aliases: Sequence[str] | None = None,
    ) -> VersionedState:
        """``set``, with the checks (a template's compile can take a while) off the event
        loop."""
        pool, aliases = self._check_pool(pool, aliases)
        await asyncio.to_thread(check_desired_state, state, self._sources)
        return self._store(state, pool, aliases)

    def delete(self, pool: str, agents: int) -> None:
        """Forget ``pool`` (which ``agents`` registered agents are in)."""
        name = check_pool_name(pool, "pool")
        if name == DEFAULT_POOL:
            raise InvalidArgumentError("pool", "the pool 'default' cannot be deleted")
        if agents:
            raise FailedPreconditionError(
                f"{agents} agents are in the pool {name!r}: scale them down (or move them to "
                "another --pool) before deleting it"
            )
        if name not in self._stored.pools:
            raise NotFoundError(f"no pool {name!r}; pools: {', '.join(self.pools())}")
        updated = desired_state_pb2.DesiredPools()
        updated.CopyFrom(self._stored)
        del updated.pools[name]
        self._save(updated)
        self._stored = updated
        log.info("pool deleted", pool=name)

    def _check_pool(self, pool: str, aliases: Sequence[str] | None) -> tuple[str, list[str] | None]:
        pool = check_pool_name(pool, "pool")
        if pool not in self.pools() and len(self.pools()) >= MAX_POOLS:
            raise ResourceExhaustedError(
                f"the balancer has {MAX_POOLS} pools, the most it keeps: delete one first"
            )
        taken = {name: name for name in self.pools() if name != pool}
        for other, stored in self._stored.pools.items():
            if other != pool:
                taken.update((alias, other) for alias in stored.aliases)
        if pool in taken:
            raise InvalidArgumentError(
                "pool", f"{pool!r} is an alias of the pool {taken[pool]!r}: choose another name"
            )
        if aliases is None:
            return pool, None
        aliases = check_aliases(aliases, "aliases.names")
        for alias in aliases:
            if alias in taken:
                raise InvalidArgumentError(
                    "aliases.names", f"{alias!r} already names the pool {taken[alias]!r}"
                )
        return pool, aliases

    def _store(
        self, state: desired_state_pb2.DesiredState, pool: str, aliases: list[str] | None
    ) -> VersionedState:
        # Checked again: another call may have taken a name or a place while this state's
        # checks ran off the event loop.
        pool, aliases = self._check_pool(pool, aliases)
        updated = desired_state_pb2.DesiredPools()
        updated.CopyFrom(self._stored)
        entry = updated.pools[pool]
        current = self.state_of(pool)
        if aliases is not None and current.version and _same_state(current.state, state):
            # Only the names change: no new version, nothing to roll out.
            entry.ClearField("aliases")
            entry.aliases.extend(aliases)
            self._save(updated)
            self._stored = updated
            log.info("pool aliases set", pool=pool, aliases=aliases)
            return current
        updated.last_version = max(self._stored.last_version, _highest(self._stored)) + 1
        entry.desired_state.CopyFrom(
            VersionedState(
                version=updated.last_version,
                state=state,
                epoch=self._stored.epoch,
                pool=pool,
            )
        )
        if aliases is not None:
            entry.ClearField("aliases")
            entry.aliases.extend(aliases)
        self._save(updated)
        self._stored = updated
        log.info(
            "desired state set",
            pool=pool,
            version=entry.desired_state.version,
            epoch=updated.epoch,
            model=str(state.model).strip(),
            aliases=list(entry.aliases),
        )
        for listener in list(self._listeners):
            listener(entry.desired_state)
        return entry.desired_state

    def _save(self, pools: desired_state_pb2.DesiredPools) -> None:
        """Write atomically and durably: a temporary file in the same folder, fsync, rename
        over, then fsync the folder (so the rename survives a power cut); on any error the
        temporary file is removed and the old file stays."""
        path = self._path
        if path is None:
            return
        text = json_format.MessageToJson(pools)
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


def _highest(pools: desired_state_pb2.DesiredPools) -> int:
    """The highest version any pool has."""
    return max((pool.desired_state.version for pool in pools.pools.values()), default=0)


def _same_state(a: desired_state_pb2.DesiredState, b: desired_state_pb2.DesiredState) -> bool:
    """Whether two states say the same (an empty message set counts as unset, as the panel
    sends every section of its form)."""
    return _pruned(a) == _pruned(b)


def _pruned(message: Message) -> Message:
    """A copy of ``message`` without its empty sub-messages."""
    copy = type(message)()
    copy.CopyFrom(message)
    for field, value in copy.ListFields():
        if field.message_type is not None and not field.is_repeated:
            value.CopyFrom(_pruned(value))
            if not value.ByteSize():
                copy.ClearField(field.name)
    return copy


def _restored(
    path: Path, new_epoch: str, sources: ModelSourcePolicy | None
) -> desired_state_pb2.DesiredPools:
    """The pools in the state file, each checked again (the file or the limits may have
    changed). A file from before pools holds one VersionedDesiredState: the default pool's."""
    try:
        text = path.read_text()
        parsed = json.loads(text)
        if isinstance(parsed, dict) and "pools" in parsed:
            restored = json_format.Parse(text, desired_state_pb2.DesiredPools())
        else:
            single = json_format.Parse(text, VersionedState())
            restored = desired_state_pb2.DesiredPools(epoch=single.epoch)
            if single.version:
                restored.pools[DEFAULT_POOL].desired_state.CopyFrom(single)
    except (OSError, ValueError, json_format.ParseError) as error:
        raise StateFileError(f"cannot read the state file {path}: {error}") from error
    restored.epoch = restored.epoch or new_epoch  # a file from before epochs
    restored.last_version = max(restored.last_version, _highest(restored))
    if len(restored.pools) > MAX_POOLS:
        raise StateFileError(f"the state file {path} has more than {MAX_POOLS} pools")
    for name, pool in restored.pools.items():
        pool.desired_state.epoch = restored.epoch
        pool.desired_state.pool = name
        try:
            check_pool_name(name, "pools")
            check_aliases(pool.aliases, f"pools[{name!r}].aliases")
            if pool.desired_state.version:
                check_desired_state(pool.desired_state.state, sources)
        except InvalidArgumentError as error:
            raise StateFileError(
                f"the state in {path} is no longer valid: {error.message}"
                + ("" if name == DEFAULT_POOL else f" (pool {name!r})")
            ) from error
    return restored
