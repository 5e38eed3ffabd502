"""Server interceptor: any PaddlerError raised by a handler ends the call with its rich status."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import structlog
from grpc import aio

from paddler.common.errors import PaddlerError
from paddler.common.rpc_status import to_grpc_status

log = structlog.get_logger(__name__)

_Req = TypeVar("_Req")
_Res = TypeVar("_Res")


async def _abort(context: aio.ServicerContext[Any, Any], method: str, error: PaddlerError) -> None:
    status = to_grpc_status(error)
    log.info(
        "request rejected",
        method=method,
        code=status.code.name,
        reason=error.reason,
        message=error.message,
    )
    await context.abort(status.code, status.details, status.trailing_metadata)


def _wrap_unary(
    behavior: Any, method: str
) -> Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]:
    async def handler(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await behavior(request, context)  # aio behaviours are coroutines
        except PaddlerError as error:
            await _abort(context, method, error)
            raise  # unreachable: abort raises

    return handler


_Context = aio.ServicerContext[Any, Any]


def _wrap_stream(behavior: Any, method: str) -> Callable[[Any, _Context], Any]:
    if not inspect.isasyncgenfunction(behavior):
        # A coroutine that streams with context.write (grpc.health's Watch): wrapped as such.
        return _wrap_unary(behavior, method)

    async def handler(request: Any, context: _Context) -> AsyncIterator[Any]:
        try:
            async for response in behavior(request, context):
                yield response
        except PaddlerError as error:
            await _abort(context, method, error)

    return handler


class ErrorInterceptor(aio.ServerInterceptor):
    """Maps domain errors to statuses for unary and response-streaming methods."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Req, _Res] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Res] | None:
        """Wrap the method's behaviour so domain errors become statuses."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        wrapped: grpc.RpcMethodHandler[_Req, _Res] = handler
        if handler.unary_unary is not None:
            wrapped = grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, handler_call_details.method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        elif handler.unary_stream is not None:
            wrapped = grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, handler_call_details.method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        elif handler.stream_stream is not None:
            wrapped = grpc.stream_stream_rpc_method_handler(
                _wrap_stream(handler.stream_stream, handler_call_details.method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return wrapped
