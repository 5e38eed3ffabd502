"""Client API keys: ``name:key`` or ``name:key:max_concurrent`` per line, re-read on change."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from paddler.common.errors import ConfigurationError, ResourceExhaustedError
from paddler.common.secret_file import ChangingFile, check_secret, read_secret_text

log = structlog.get_logger(__name__)

MAX_NAME_LENGTH = 64


class KeyBusyError(ResourceExhaustedError):
    """An API key already runs as many requests as its ``max_concurrent`` allows."""

    reason = "API_KEY_CONCURRENCY"


@dataclass(frozen=True)
class ApiKey:
    """One client's key: its name labels logs and metrics; the key itself is never shown."""

    name: str
    secret: bytes
    # Requests this key may run at once; None: no limit of its own.
    max_concurrent: int | None = None


def parse_api_keys(text: str, source: str) -> tuple[ApiKey, ...]:
    """The keys in ``text``; blank lines and lines starting with ``#`` are skipped. Errors name
    the line, never the key."""
    keys: list[ApiKey] = []
    names: set[str] = set()
    secrets: set[bytes] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source} line {number}"
        parts = line.split(":")
        if len(parts) not in (2, 3):
            raise ConfigurationError(f"{where}: expected name:key or name:key:max_concurrent")
        name, secret = parts[0], parts[1]
        if not name or len(name) > MAX_NAME_LENGTH or not name.replace("-", "_").isidentifier():
            raise ConfigurationError(
                f"{where}: the name must be letters, digits, '_' or '-' (at most "
                f"{MAX_NAME_LENGTH}), starting with a letter"
            )
        check_secret(secret, where)
        limit = None
        if len(parts) == 3:
            if not parts[2].isdigit() or int(parts[2]) < 1:
                raise ConfigurationError(f"{where}: max_concurrent must be a positive integer")
            limit = int(parts[2])
        if name in names or secret.encode() in secrets:
            raise ConfigurationError(f"{where}: the name or the key appears twice")
        names.add(name)
        secrets.add(secret.encode())
        keys.append(ApiKey(name, secret.encode(), limit))
    if not keys:
        raise ConfigurationError(f"{source} holds no key (one name:key per line)")
    return tuple(keys)


class ApiKeys:
    """The keys file in force, with each key's requests in flight."""

    def __init__(self, path: Path) -> None:
        self._file = ChangingFile(path)
        self._keys = self._read()
        self._in_flight: dict[str, int] = {}

    def _read(self) -> tuple[ApiKey, ...]:
        path = self._file.path
        return parse_api_keys(read_secret_text(path, "API keys"), str(path))

    def _current(self) -> tuple[ApiKey, ...]:
        if self._file.changed():
            try:
                self._keys = self._read()
            except ConfigurationError as error:
                log.warning(
                    "API keys file not reloaded; the previous keys stay", issue=error.message
                )
            else:
                log.info("API keys reloaded", keys=len(self._keys))
        return self._keys

    def identify(self, presented: str) -> ApiKey | None:
        """The key ``presented`` is, compared in constant time against every key."""
        found = None
        candidate = presented.encode()
        for key in self._current():
            if hmac.compare_digest(key.secret, candidate):
                found = key
        return found

    def claim(self, key: ApiKey) -> Callable[[], None]:
        """Count one request of ``key`` until the returned function is called; past its
        max_concurrent, KeyBusyError (RESOURCE_EXHAUSTED)."""
        count = self._in_flight.get(key.name, 0)
        if key.max_concurrent is not None and count >= key.max_concurrent:
            raise KeyBusyError(
                f"API key {key.name!r} already runs {count} requests, its max_concurrent; "
                "retry when one ends",
                retry_after_s=1.0,
            )
        self._in_flight[key.name] = count + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            left = self._in_flight[key.name] - 1
            if left:
                self._in_flight[key.name] = left
            else:
                del self._in_flight[key.name]

        return release
