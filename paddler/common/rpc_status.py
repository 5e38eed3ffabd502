"""The one place that turns a domain error into a rich gRPC status (google.rpc.Status)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from paddler.common.errors import (
    InvalidArgumentError,
    PaddlerError,
    ResourceExhaustedError,
    UnavailableError,
)

ERROR_DOMAIN = "paddler.v1"


def _packed(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_grpc_status(error: PaddlerError) -> grpc.Status:
    """Build the status with ErrorInfo, plus BadRequest or RetryInfo where they apply."""
    details = [_packed(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN))]
    if isinstance(error, InvalidArgumentError):
        violations = [
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in error.violations
        ]
        details.append(_packed(error_details_pb2.BadRequest(field_violations=violations)))
    if isinstance(error, ResourceExhaustedError | UnavailableError):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after_s * 1e9))
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
    code_value: int = error.code.value[0]
    status = status_pb2.Status(code=code_value, message=error.message, details=details)
    result: grpc.Status = rpc_status.to_status(status)
    return result
