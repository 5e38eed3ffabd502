"""What the web server's responses share: the panel's static folder, the headers of its pages
and its error shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.responses import FileResponse, JSONResponse
from google.protobuf import json_format
from google.protobuf.message import Message

STATIC = Path(__file__).parent / "static"
# The pages load their own scripts and styles only, and no other site may frame them.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def page(name: str) -> FileResponse:
    """One of the panel's HTML pages (the panel, the sign-in page) with ``PAGE_HEADERS``."""
    return FileResponse(STATIC / name, headers=PAGE_HEADERS)


def error_response(status: int, message: str, field: str | None = None) -> JSONResponse:
    """The panel's refusal shape, ``{"error": {"field", "message"}}``."""
    return JSONResponse({"error": {"field": field, "message": message}}, status_code=status)


def refused(field: str | None, message: str) -> JSONResponse:
    """A 400 naming the field to fix."""
    return error_response(400, message, field)


def as_dict(message: Message) -> dict[str, Any]:
    """A protobuf message as the panel's JSON (every field shown)."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
