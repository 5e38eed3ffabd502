"""A stand-in for the Hugging Face Hub on loopback (this machine cannot reach the real one).

It answers the two requests a download of one file makes, HEAD for the metadata and GET for the
bytes (from an offset with ``Range: bytes=N-``, as a resumed download asks); a download can be
held half-way until the test has watched it.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from tests.local_http import serving

COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
HOLD_TIMEOUT_S = 300.0


def _handler(
    path: str, data: bytes, half_way: threading.Event | None, starts: list[int]
) -> type[BaseHTTPRequestHandler]:
    etag = hashlib.sha256(data).hexdigest()

    class Handler(BaseHTTPRequestHandler):
        def _headers(self, start: int = 0) -> bool:
            if self.path != path:
                self.send_error(404)
                return False
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{etag}"')
            self.send_header("Content-Length", str(len(data) - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            return True

        def do_HEAD(self) -> None:
            self._headers()

        def do_GET(self) -> None:
            asked = self.headers.get("Range", "")
            start = int(asked.removeprefix("bytes=").split("-")[0]) if asked else 0
            starts.append(start)
            if not self._headers(start):
                return
            half = max(len(data) // 2, start)
            self.wfile.write(data[start:half])
            self.wfile.flush()
            if half_way is not None:
                half_way.wait(HOLD_TIMEOUT_S)
            self.wfile.write(data[half:])

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            """Quiet."""

    return Handler


@contextmanager
def local_hub(
    repo: str,
    file: str,
    source: Path,
    half_way: threading.Event | None = None,
    starts: list[int] | None = None,
) -> Iterator[str]:
    """Serve ``source`` as ``repo``'s ``file`` at revision main; yields the endpoint URL.

    With ``half_way``, every download stops after half the bytes until the event is set.
    ``starts`` gets the offset each download asked to start from.
    """
    handler = _handler(
        f"/{repo}/resolve/main/{file}",
        source.read_bytes(),
        half_way,
        starts if starts is not None else [],
    )
    with serving(handler) as url:
        yield url
