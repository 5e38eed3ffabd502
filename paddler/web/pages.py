"""What the web server's responses share: the panel's static folder, the headers of its pages
and its error shape."""

from __future__ import annotations

from pathlib import Path

from fastapi.responses import FileResponse, JSONResponse

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
