"""A credential kept in a file: read at start, read again when the file changes (rotation)."""

from __future__ import annotations

import hmac
import time
from pathlib import Path

import structlog

from paddler.common.errors import ConfigurationError

log = structlog.get_logger(__name__)

# How often at most a file's modification time is looked at: a check per call costs a stat.
RECHECK_INTERVAL_S = 1.0
# More than any token or key file needs: a bigger file is a mistake (a GGUF given as a key).
MAX_SECRET_FILE_BYTES = 64 * 1024
MIN_SECRET_LENGTH = 16


def read_secret_text(path: Path, what: str) -> str:
    """The file's text, refused when missing, unreadable, huge or not UTF-8 (the message names
    the file and ``what`` it should hold, never its content)."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as error:
        raise ConfigurationError(f"{what} file {path} cannot be read: {error.strerror}") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ConfigurationError(
            f"{what} file {path} is larger than {MAX_SECRET_FILE_BYTES} bytes: is it the right "
            "file?"
        )
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise ConfigurationError(f"{what} file {path} is not UTF-8 text") from None


def check_secret(secret: str, where: str) -> None:
    """Refuse a credential too short to resist guessing, or with characters a header cannot
    carry."""
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigurationError(
            f"{where}: a credential must be at least {MIN_SECRET_LENGTH} characters "
            "(e.g. `openssl rand -hex 32`)"
        )
    if not secret.isascii() or not secret.isprintable() or " " in secret:
        raise ConfigurationError(
            f"{where}: a credential must be printable ASCII without spaces (it travels in an "
            "HTTP header)"
        )


class ChangingFile:
    """Tells whether a file changed since it was last read, looking at most once a second."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = self._current_stamp()
        self._checked_at = time.monotonic()

    def _current_stamp(self) -> tuple[int, int, int]:
        try:
            stat = self.path.stat()
        except OSError:
            return (0, 0, 0)
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def changed(self) -> bool:
        """Whether the file's time, size or inode moved since the last True (a Kubernetes
        Secret volume swaps a symlink: the inode moves)."""
        now = time.monotonic()
        if now - self._checked_at < RECHECK_INTERVAL_S:
            return False
        self._checked_at = now
        stamp = self._current_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        return True


class SecretFile:
    """A token or key: the file's first line is the credential this process presents; every
    line is one it accepts. A rotation adds the new credential as a second line everywhere,
    moves it first, then drops the old one, and no call between two peers is refused meanwhile.
    Never logged."""

    def __init__(self, path: Path, what: str) -> None:
        self.what = what
        self._file = ChangingFile(path)
        self._secrets = self._read()

    def _read(self) -> tuple[bytes, ...]:
        path = self._file.path
        lines = [line.strip() for line in read_secret_text(path, self.what).splitlines()]
        secrets = [line for line in lines if line]
        if not secrets:
            raise ConfigurationError(f"{self.what} file {path} is empty")
        for number, secret in enumerate(secrets, start=1):
            check_secret(secret, f"{self.what} file {path} line {number}")
        return tuple(secret.encode() for secret in secrets)

    def _current(self) -> tuple[bytes, ...]:
        if self._file.changed():
            try:
                self._secrets = self._read()
            except ConfigurationError as error:  # keep the previous one; the next change retries
                log.warning(
                    "credential file not reloaded; the previous one stays", issue=error.message
                )
            else:
                log.info("credential file reloaded", what=self.what)
        return self._secrets

    @property
    def value(self) -> str:
        """The credential to present now (the first line; re-read when the file changed, a
        bad new file keeps the old)."""
        return self._current()[0].decode()

    def matches(self, presented: str) -> bool:
        """Whether ``presented`` is one of the credentials, compared in constant time."""
        candidate = presented.encode()
        found = False
        for secret in self._current():
            found |= hmac.compare_digest(secret, candidate)
        return found
