"""Who may call a surface: an agent token, an admin key or a client's API key, each presented
as ``authorization: Bearer <credential>`` and checked once per call."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Protocol

import structlog

from paddler.common.api_keys import ApiKeys
from paddler.common.errors import UnauthenticatedError
from paddler.common.secret_file import SecretFile

CALLER: ContextVar[str] = ContextVar("paddler_caller", default="")
"""Who the current call is: an API key's name, "agent", "admin"; "" on an open surface. The
request metrics and log lines carry it, never the credential."""
AUTHORIZATION = "authorization"
BEARER_PREFIX = "Bearer "
MISSING = "MISSING_CREDENTIAL"
WRONG = "WRONG_CREDENTIAL"


def bearer(value: str | None) -> str | None:
    """The credential of an ``authorization`` value (``Bearer <credential>``, the scheme in any
    case), else None."""
    if value is None:
        return None
    scheme, _, credential = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credential.strip() or None


def bearer_metadata(credential: str) -> tuple[tuple[str, str], ...]:
    """gRPC metadata presenting ``credential``."""
    return ((AUTHORIZATION, BEARER_PREFIX + credential),)


class Admission:
    """An admitted call: the caller's name, and what to release when the call ends."""

    def __init__(self, caller: str, release: Callable[[], None] | None = None) -> None:
        self.caller = caller
        self._release = release

    def __enter__(self) -> str:
        CALLER.set(self.caller)
        structlog.contextvars.bind_contextvars(caller=self.caller)
        return self.caller

    def __exit__(self, *exc: object) -> None:
        if self._release is not None:
            self._release()


class Guard(Protocol):
    """Admits a call that presents the right credential."""

    @property
    def credential(self) -> str:
        """What the surface takes, for messages: "the agent token", "an API key"."""
        ...

    def admit(self, presented: str | None) -> Admission:
        """The admission, held for the call's duration; UnauthenticatedError (or a limit's
        error) when refused."""
        ...


def refuse(credential: str, presented: str | None) -> UnauthenticatedError:
    """The error for a call without ``credential`` (no word of what was presented)."""
    if presented is None:
        return UnauthenticatedError(
            f"this call needs {credential}: send it as 'authorization: Bearer <credential>'",
            reason=MISSING,
        )
    return UnauthenticatedError(f"the credential presented is not {credential}", reason=WRONG)


class SecretGuard:
    """One shared secret (the agent token, the admin key); callers are all ``caller``."""

    def __init__(self, secret: SecretFile, credential: str, caller: str) -> None:
        self._secret = secret
        self.credential = credential
        self._caller = caller

    def admit(self, presented: str | None) -> Admission:
        """Admit the holder of the secret."""
        if presented is None or not self._secret.matches(presented):
            raise refuse(self.credential, presented)
        return Admission(self._caller)


class ApiKeyGuard:
    """Clients' keys; each call counts against its key's ``max_concurrent``."""

    credential = "an API key"

    def __init__(self, keys: ApiKeys) -> None:
        self._keys = keys

    def admit(self, presented: str | None) -> Admission:
        """Admit a known key while its limit allows."""
        key = self._keys.identify(presented) if presented is not None else None
        if key is None:
            raise refuse(self.credential, presented)
        return Admission(key.name, self._keys.claim(key))
