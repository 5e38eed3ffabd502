"""Domain errors, each carrying the gRPC status it maps to."""

from __future__ import annotations

from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field: its path (e.g. ``input.sampling.top_p``) and what to fix."""

    field: str
    description: str


class PaddlerError(Exception):
    """Base of every error a client may see; ``code`` is its gRPC status."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"
    # Seconds after which a retry may succeed (sent as RetryInfo); None: retrying won't help.
    retry_after_s: float | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgumentError(PaddlerError):
    """The request is malformed; the message and violations say what to fix."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.violations = (FieldViolation(field, description),)


class ResourceExhaustedError(PaddlerError):
    """No capacity right now; the client may retry after ``retry_after_s``."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "NO_FREE_SLOT"

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UnavailableError(PaddlerError):
    """The server cannot serve now (loading, draining, upstream gone); retry later."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"

    def __init__(self, message: str, reason: str = "UNAVAILABLE", retry_after_s: float = 1.0):
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s


class AgentCallError(PaddlerError):
    """A call to an agent failed without a status of the agent's own: the agent could not be
    reached, or the connection broke (gRPC's own status, e.g. UNAVAILABLE)."""

    reason = "AGENT_CALL_FAILED"

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        retryable = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.retry_after_s = 1.0 if code in retryable else None


class UnauthenticatedError(PaddlerError):
    """The call presented no credential, or not the one this surface takes."""

    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"

    def __init__(self, message: str, reason: str = "UNAUTHENTICATED") -> None:
        super().__init__(message)
        self.reason = reason


class NotFoundError(PaddlerError):
    """What the call names does not exist (a pool to delete)."""

    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class FailedPreconditionError(PaddlerError):
    """The call cannot be done in the cluster's present state; the message says what to
    change first."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class ConfigurationError(PaddlerError):
    """A server cannot start as configured (a credential file missing, an unsafe bind)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "BAD_CONFIGURATION"


class InternalError(PaddlerError):
    """A failure inside the server (for example llama.cpp refused to decode)."""

    code = grpc.StatusCode.INTERNAL
    reason = "INTERNAL"


class UnimplementedError(PaddlerError):
    """This server does not do what was asked (a simulated agent asked for embeddings)."""

    code = grpc.StatusCode.UNIMPLEMENTED
    reason = "UNIMPLEMENTED"


class DeadlineExceededError(PaddlerError):
    """The client's deadline passed before the request could be served."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"


class RelayedError(PaddlerError):
    """An agent's own error status, passed on to the client unchanged."""

    reason = "FROM_AGENT"

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        trailing_metadata: tuple[tuple[str, bytes], ...],
        reason: str = "FROM_AGENT",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.trailing_metadata = trailing_metadata
        self.reason = reason


LISTED_MODELS = 20
"""The most model names a ModelNotFoundError lists."""


class ModelNotFoundError(PaddlerError):
    """The request names a model the cluster does not serve."""

    code = grpc.StatusCode.NOT_FOUND
    reason = "MODEL_NOT_FOUND"

    def __init__(self, model: str, served: list[str]) -> None:
        names = ", ".join(served[:LISTED_MODELS]) or "none yet"
        if len(served) > LISTED_MODELS:
            names += f" and {len(served) - LISTED_MODELS} more"
        super().__init__(f"model {model[:256]!r} is not served here; served models: {names}")
        self.model = model
