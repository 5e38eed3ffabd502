"""Model files over HTTP on loopback, as a web server or a CDN serves them: ``Range`` and
``If-Range`` against a strong ETag, 416 past the end, redirects, and connections the test cuts
after a number of bytes (as a flaky network would)."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from tests.local_http import serving


@dataclass
class FileSite:
    """What the server serves; the test may change it between downloads."""

    files: dict[str, bytes] = field(default_factory=dict)
    # path -> where it redirects (an absolute URL, or a path on this server)
    redirects: dict[str, str] = field(default_factory=dict)
    # Byte counts after which the next GETs' connections are cut, one per GET, in order.
    cuts: list[int] = field(default_factory=list)
    # (path, Range header) of every GET, in order.
    gets: list[tuple[str, str]] = field(default_factory=list)

    @staticmethod
    def etag(data: bytes) -> str:
        """The strong ETag the server gives ``data``."""
        return '"' + hashlib.sha256(data).hexdigest()[:16] + '"'


def _handler(site: FileSite) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked = self.headers.get("Range", "")
            site.gets.append((self.path, asked))
            if self.path in site.redirects:
                self.send_response(302)
                self.send_header("Location", site.redirects[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = site.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            tag = FileSite.etag(data)
            start = 0
            if asked and self.headers.get("If-Range", tag) == tag:
                start = int(asked.removeprefix("bytes=").split("-")[0])
            if start >= len(data) > 0:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206 if start else 200)
            self.send_header("ETag", tag)
            self.send_header("Content-Length", str(len(data) - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if site.cuts:
                self.wfile.write(data[start : start + site.cuts.pop(0)])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(data[start:])

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            """Quiet."""

    return Handler


@contextmanager
def file_site(site: FileSite) -> Iterator[str]:
    """Serve ``site`` for the ``with`` block; yields the base URL."""
    with serving(_handler(site)) as base:
        yield base
