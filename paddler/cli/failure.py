"""Commands end on a domain error with one readable line and a non-zero exit, no traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import typer

from paddler.common.errors import PaddlerError


@contextmanager
def exit_on_domain_error() -> Iterator[None]:
    """Print ``paddler: <message>`` to stderr and exit 1 on a PaddlerError."""
    try:
        yield
    except PaddlerError as error:
        typer.echo(f"paddler: {error.message}", err=True)
        raise typer.Exit(1) from None
    except ModuleNotFoundError as error:
        if error.name != "llama_cpp":
            raise
        typer.echo(
            "paddler: the agent needs its inference extra: pip install 'paddler[agent]'", err=True
        )
        raise typer.Exit(1) from None


@contextmanager
def exit_on_rpc_error(prefix: str = "") -> Iterator[None]:
    """Print ``paddler: CODE: details`` to stderr and exit 1 when a call fails."""
    try:
        yield
    except grpc.RpcError as error:
        assert isinstance(error, grpc.Call)
        typer.echo(f"{prefix}paddler: {error.code().name}: {error.details()}", err=True)
        raise typer.Exit(1) from None
