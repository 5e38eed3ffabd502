"""Runs an HTTP app (the OpenAI-compatible API, the web server) on uvicorn inside the
balancer's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI

from paddler.common.addresses import join_host_port, split_host_port
from paddler.common.errors import ConfigurationError
from paddler.common.tls import ServerTls

STARTUP_POLL_S = 0.01


class _EmbeddedServer(uvicorn.Server):
    """uvicorn that leaves signals to the balancer, which stops it after draining gRPC."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (port 0: any free one); ConfigurationError when the
    address is taken or not this machine's."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ConfigurationError(
            f"cannot listen on {join_host_port(host, port)}: {error.strerror} (is another "
            "process using the port?)"
        ) from error
    sock.set_inheritable(True)
    return sock


class HttpServer:
    """One uvicorn server serving ``app`` as a task of the running loop."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._rotation: asyncio.Task[None] | None = None

    async def start(self, address: str, grace_period_s: float, tls: ServerTls | None = None) -> str:
        """Listen on ``address`` (port 0 picks one), with TLS when ``tls`` is given (a rotated
        certificate is served to new connections); returns the address bound."""
        host, port = split_host_port(address)
        config = uvicorn.Config(
            self._app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=max(math.ceil(grace_period_s), 1),
        )
        if tls is not None:
            config.load()
            config.ssl = tls.ssl_context()
            self._rotation = asyncio.create_task(tls.keep_fresh(config.ssl))
        server = _EmbeddedServer(config)
        self._server = server
        # Bound here: uvicorn would exit the whole process on a port in use.
        self._task = asyncio.create_task(server.serve(sockets=[_bound_socket(host, port)]))
        while not server.started:
            if self._task.done():
                self._task.result()  # the reason it could not start
                raise OSError(f"the HTTP server on {address} stopped while starting")
            await asyncio.sleep(STARTUP_POLL_S)
        bound = server.servers[0].sockets[0].getsockname()
        return join_host_port(host, bound[1])

    @property
    def task(self) -> asyncio.Task[None]:
        """The task serving (for supervision); the server must have started."""
        assert self._task is not None, "start() first"
        return self._task

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish within the grace period, then close."""
        if self._rotation is not None:
            self._rotation.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rotation
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task
