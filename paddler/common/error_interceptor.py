"""Server interceptor: each call's credential is checked once, before its handler runs, and any
PaddlerError raised by a handler ends the call with its rich status."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc
import structlog
from google.protobuf.message import DecodeError
from grpc import aio

from paddler.common.errors import InvalidArgumentError, PaddlerError, UnauthenticatedError
from paddler.common.guards import AUTHORIZATION, Admission, Guard, bearer
from paddler.common.request_context import GRPC_METHOD, call_context
from paddler.common.rpc_status import to_grpc_status

log = structlog.get_logger(__name__)

_Req = TypeVar("_Req")
_Res = TypeVar("_Res")


async def _abort(context: aio.ServicerContext[Any, Any], method: str, error: PaddlerError) -> None:
    status = to_grpc_status(error)
    log.info(
        "request rejected",
        endpoint=method,
        status=status.code.name,
        reason=error.reason,
        message=error.message,
    )
    await context.abort(status.code, status.details, status.trailing_metadata)


class _Undecodable:
    """A request whose bytes did not parse: the call ends with INVALID_ARGUMENT, not gRPC's
    UNKNOWN with a traceback."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as error:
            return _Undecodable(error)

    return deserialize


def _check_decoded(request: Any) -> None:
    if isinstance(request, _Undecodable):
        raise InvalidArgumentError(
            "request", f"the bytes are not a valid message of this method: {request.error}"
        )


# Admits one call (its credential checked) given its context; None: the surface is open.
Admit = Callable[[aio.ServicerContext[Any, Any]], Admission] | None


def _admitted(
    admit: Admit, context: aio.ServicerContext[Any, Any]
) -> contextlib.AbstractContextManager[object]:
    """The call's admission, held while it runs (nothing to hold on an open surface)."""
    return admit(context) if admit is not None else contextlib.nullcontext()


def _identified(
    method: str, context: aio.ServicerContext[Any, Any], *, streamed: bool
) -> contextlib.AbstractContextManager[None]:
    """The call's identity on every line it logs (see ``call_context``)."""
    return call_context(
        api="grpc", endpoint=method, method=GRPC_METHOD, client=context.peer(), streamed=streamed
    )


def _wrap_unary(
    behavior: Any, method: str, admit: Admit
) -> Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]:
    async def handler(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        with _identified(method, context, streamed=False):
            try:
                with _admitted(admit, context):  # the credential first: a stranger learns no more
                    _check_decoded(request)
                    return await behavior(request, context)  # aio behaviours are coroutines
            except PaddlerError as error:
                await _abort(context, method, error)
                raise  # unreachable: abort raises

    return handler


_Context = aio.ServicerContext[Any, Any]


def _wrap_stream(behavior: Any, method: str, admit: Admit) -> Callable[[Any, _Context], Any]:
    if not inspect.isasyncgenfunction(behavior):
        # A coroutine that streams with context.write (grpc.health's Watch): wrapped as such.
        return _wrap_unary(behavior, method, admit)

    async def handler(request: Any, context: _Context) -> AsyncIterator[Any]:
        with _identified(method, context, streamed=True):
            try:
                with _admitted(admit, context):
                    _check_decoded(request)
                    async for response in behavior(request, context):
                        yield response
            except PaddlerError as error:
                await _abort(context, method, error)

    return handler


Refused = Callable[[str, str], None]
"""Told of each refused credential: the service and the reason (a metric counts them)."""


class ErrorInterceptor(aio.ServerInterceptor):
    """Checks credentials and maps domain errors to statuses for unary and response-streaming
    methods. ``guards`` maps a service's full name to who may call it; other services (health,
    reflection) are open."""

    def __init__(
        self, guards: Mapping[str, Guard] | None = None, on_refused: Refused | None = None
    ) -> None:
        self._guards = dict(guards or {})
        self._on_refused = on_refused

    def _admit(self, details: grpc.HandlerCallDetails) -> Admit:
        service = details.method.lstrip("/").rpartition("/")[0]
        guard = self._guards.get(service)
        if guard is None:
            return None
        authorization = None
        for key, value in details.invocation_metadata or ():
            if key == AUTHORIZATION and isinstance(value, str):
                authorization = value
        presented = bearer(authorization)
        on_refused = self._on_refused

        def admit(context: aio.ServicerContext[Any, Any]) -> Admission:
            try:
                admission = guard.admit(presented)
            except UnauthenticatedError as error:
                log.warning(
                    "credential refused",
                    peer=context.peer(),
                    reason=error.reason,
                )
                if on_refused is not None:
                    on_refused(service, error.reason)
                raise
            return admission

        return admit

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Req, _Res] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Res] | None:
        """Wrap the method's behaviour so its credential is checked and domain errors become
        statuses."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        admit = self._admit(handler_call_details)
        wrapped: grpc.RpcMethodHandler[_Req, _Res] = handler
        if handler.unary_unary is not None:
            wrapped = grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method, admit),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        elif handler.unary_stream is not None:
            wrapped = grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, method, admit),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        elif handler.stream_stream is not None:
            wrapped = grpc.stream_stream_rpc_method_handler(
                _wrap_stream(handler.stream_stream, method, admit),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return wrapped
