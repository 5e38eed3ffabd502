"""The one place domain errors become OpenAI's error JSON and an HTTP status."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import grpc
import structlog
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from paddler.common.errors import InvalidArgumentError, PaddlerError

log = structlog.get_logger(__name__)

# HTTP status and OpenAI error type per gRPC status code.
_BY_CODE: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request_error"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request_error"),
    grpc.StatusCode.NOT_FOUND: (404, "invalid_request_error"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "invalid_request_error"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    grpc.StatusCode.UNAVAILABLE: (503, "service_unavailable_error"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout_error"),
}
# Reasons whose status differs from their gRPC code's: a request that waited its whole
# --buffered-request-timeout for a slot timed out, as far as an HTTP client is concerned.
_BY_REASON: dict[str, tuple[int, str]] = {"BUFFER_TIMEOUT": (504, "timeout_error")}
# gRPC field paths of a GenerationInput, as the OpenAI request names them.
_FIELD_PREFIXES = (
    ("input.conversation.messages", "messages"),
    ("input.sampling.", ""),
    ("input.", ""),
)


class ErrorDetail(BaseModel):
    """What went wrong, in OpenAI's words."""

    message: str
    type: str
    param: str | None
    code: str


class ErrorBody(BaseModel):
    """OpenAI's error body."""

    error: ErrorDetail


# The error statuses every generating endpoint documents in its OpenAPI operation.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "A bad field; `param` names it."),
        (404, "A model the cluster does not serve."),
        (413, "A body over the balancer's cap (--max-request-body)."),
        (429, "The buffer is full; see Retry-After."),
        (503, "No agent can serve now; see Retry-After."),
        (504, "No slot freed within the buffer timeout."),
    )
}


def openai_param(field: str) -> str:
    """The request field an error about a GenerationInput field is about."""
    for prefix, replacement in _FIELD_PREFIXES:
        if field.startswith(prefix):
            return replacement + field.removeprefix(prefix)
    return field


def _error_body(error: PaddlerError) -> tuple[int, dict[str, object]]:
    status, kind = _BY_REASON.get(error.reason) or _BY_CODE.get(error.code, (500, "server_error"))
    param = None
    message = error.message
    if isinstance(error, InvalidArgumentError):
        violation = error.violations[0]
        param = openai_param(violation.field)
        message = f"{param}: {violation.description}"
    body: dict[str, object] = {
        "error": {"message": message, "type": kind, "param": param, "code": error.reason.lower()}
    }
    return status, body


def error_response(error: PaddlerError, request_id: str) -> JSONResponse:
    """The HTTP response for a request that failed before its stream began; logged once."""
    status, body = _error_body(error)
    headers = {}
    if error.retry_after_s is not None and status in (429, 503):
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
    log.info("request failed", request_id=request_id, status=status, error=error.message)
    return JSONResponse(body, status_code=status, headers=headers)


def stream_error_event(error: PaddlerError, request_id: str) -> str:
    """The one SSE event that ends a stream a failure broke after it began; logged once."""
    status, body = _error_body(error)
    log.info("stream failed", request_id=request_id, status=status, error=error.message)
    return f"data: {json.dumps(body)}\n\n"


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _location(loc: Sequence[int | str]) -> str:
    """A pydantic error location (``("body", "messages", 0, "role")``) as ``messages[0].role``."""
    path = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _is_field(str(part)):
            path += f".{part}" if path else str(part)
    return path


def _is_field(part: str) -> bool:
    """Whether a location part names a field, not the member of a union pydantic tried
    (``literal['auto','none']``, ``ChatNamedChoice``, ``str``, ``function-after[...]``)."""
    return part.isidentifier() and part.islower() and part not in _TYPE_TAGS


async def validation_error(request: Request, error: Exception) -> JSONResponse:
    """A body that does not parse or breaks a field's bounds: 400 naming the first bad field."""
    assert isinstance(error, RequestValidationError)
    first = error.errors()[0]
    param = _location(first.get("loc", ())) or None
    message = str(first.get("msg", "invalid request"))
    wrapped = InvalidArgumentError(param or "body", message)
    request_id = getattr(request.state, "request_id", "")
    return error_response(wrapped, request_id)


async def paddler_error(request: Request, error: Exception) -> JSONResponse:
    """A domain error raised by an endpoint before any response went out."""
    assert isinstance(error, PaddlerError)
    return error_response(error, getattr(request.state, "request_id", ""))


def body_too_large(request_id: str, max_bytes: int) -> JSONResponse:
    """The 413 for a body over the balancer's cap; logged once."""
    message = (
        f"the request body is larger than {max_bytes} bytes, the balancer's cap; send less, or "
        "have the operator raise it (--max-request-body, PADDLER_MAX_REQUEST_BODY)"
    )
    detail = {
        "message": message,
        "type": "invalid_request_error",
        "param": None,
        "code": "request_too_large",
    }
    log.info("request failed", request_id=request_id, status=413, error=message)
    return JSONResponse({"error": detail}, status_code=413)


async def http_error(request: Request, error: Exception) -> JSONResponse:
    """Starlette's own refusals (a body that does not parse, an unknown path, a wrong method)
    in OpenAI's shape."""
    assert isinstance(error, StarletteHTTPException)
    codes = {400: "invalid_body", 404: "not_found", 405: "method_not_allowed"}
    kind = "invalid_request_error" if error.status_code < 500 else "server_error"
    detail = {
        "message": str(error.detail),
        "type": kind,
        "param": None,
        "code": codes.get(error.status_code, "http_error"),
    }
    log.info(
        "request failed",
        request_id=getattr(request.state, "request_id", ""),
        status=error.status_code,
        error=str(error.detail),
    )
    return JSONResponse({"error": detail}, status_code=error.status_code, headers=error.headers)
