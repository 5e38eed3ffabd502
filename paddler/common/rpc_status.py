"""The one place that turns a domain error into a rich gRPC status (google.rpc.Status)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from paddler.common.errors import InvalidArgumentError, PaddlerError, RelayedError

ERROR_DOMAIN = "paddler.v1"
# A status travels in HTTP/2 trailers, which clients cap (8 KiB by default): a message that
# quotes a huge input must not turn into the client's RESOURCE_EXHAUSTED.
MAX_MESSAGE_CHARS = 1024
STATUS_DETAILS_KEY = "grpc-status-details-bin"
# The agent has no model loaded right now (starting, or swapping to a new desired state).
NOT_READY = "NOT_READY"
# The model's tool call broke its tool's parameters: greedy decoding would do it again, so no
# other agent is tried.
INVALID_TOOL_CALL = "INVALID_TOOL_CALL"
# The agent cut the request to swap its model (--drain-timeout): another agent may resume it.
DRAIN_TIMED_OUT = "DRAIN_TIMED_OUT"
# The agent's engine made no step for --engine-stall-after: another agent may resume it.
ENGINE_STALLED = "ENGINE_STALLED"


def _packed(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


@dataclass(frozen=True)
class AbortStatus:
    """What a handler aborts with: code, message and the rich-status trailer."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def to_grpc_status(error: PaddlerError) -> AbortStatus:
    """Build the status with ErrorInfo, plus BadRequest or RetryInfo where they apply."""
    if isinstance(error, RelayedError):
        return AbortStatus(error.code, _bounded(error.message), error.trailing_metadata)
    details = [_packed(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN))]
    if isinstance(error, InvalidArgumentError):
        violations = [
            error_details_pb2.BadRequest.FieldViolation(
                field=_bounded(v.field), description=_bounded(v.description)
            )
            for v in error.violations
        ]
        details.append(_packed(error_details_pb2.BadRequest(field_violations=violations)))
    if error.retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after_s * 1e9))
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
    code_value: int = error.code.value[0]
    status = status_pb2.Status(code=code_value, message=_bounded(error.message), details=details)
    converted = rpc_status.to_status(status)
    return AbortStatus(converted.code, converted.details, tuple(converted.trailing_metadata))


def _bounded(text: str) -> str:
    """``text`` cut to ``MAX_MESSAGE_CHARS``, saying so."""
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    return text[:MAX_MESSAGE_CHARS] + f"... ({len(text)} characters in all)"


def error_reason(trailing_metadata: tuple[tuple[str, bytes], ...]) -> str:
    """The ErrorInfo reason in a rich-status trailer, or "" when there is none."""
    for key, value in trailing_metadata:
        if key != STATUS_DETAILS_KEY:
            continue
        for detail in status_pb2.Status.FromString(value).details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                return str(info.reason)
    return ""
