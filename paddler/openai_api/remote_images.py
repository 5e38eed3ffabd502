"""Image URLs of hosts the operator allows (``--allowed-image-host``), fetched by the balancer
and inlined as ``data:`` URIs before the request is checked; any other URL stays refused.

A fetch is bounded: at most a request's images, no redirects, no compression, one image's size
limit, a timeout for the whole fetch, an image MIME type."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx

from paddler.common.errors import InvalidArgumentError
from paddler.common.image_input import FORMATS, MAX_IMAGE_BYTES, MAX_IMAGES

FETCH_TIMEOUT_S = 10.0


class RemoteImages:
    """Fetches images of the allowed hosts (none: nothing is fetched)."""

    def __init__(self, hosts: Sequence[str]) -> None:
        self.hosts = frozenset(host.lower() for host in hosts)

    def allows(self, url: str) -> bool:
        """Whether ``url`` is an http(s) URL of an allowed host."""
        try:
            parts = urlsplit(url)
        except ValueError:
            return False
        return parts.scheme in ("http", "https") and (parts.hostname or "") in self.hosts

    async def inline_all(self, urls: Sequence[tuple[str, str]]) -> list[str]:
        """Each ``(url, field)`` as ``inline`` makes it; more image parts than a request may
        carry are refused before anything is fetched."""
        if len(urls) > MAX_IMAGES:
            raise InvalidArgumentError(
                urls[MAX_IMAGES][1],
                f"the request has {len(urls)} images; the limit is {MAX_IMAGES}",
            )
        return [await self.inline(url, field) for url, field in urls]

    async def inline(self, url: str, field: str) -> str:
        """``url`` unchanged unless an allowed host's: then the image as a data: URI."""
        if not self.allows(url):
            return url
        try:
            async with asyncio.timeout(FETCH_TIMEOUT_S):
                mime_type, data = await _fetch(url, field)
        except TimeoutError:
            raise InvalidArgumentError(
                field, f"the image did not arrive within {FETCH_TIMEOUT_S:.0f} s"
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            raise InvalidArgumentError(
                field, f"the image could not be fetched: {type(error).__name__}"
            ) from None
        return f"data:{mime_type};base64,{base64.b64encode(data).decode()}"


async def _fetch(url: str, field: str) -> tuple[str, bytes]:
    """The image's MIME type and bytes, within the limits (no redirects, no decompression)."""
    headers = {"Accept-Encoding": "identity"}
    async with (
        httpx.AsyncClient(timeout=FETCH_TIMEOUT_S, follow_redirects=False) as client,
        client.stream("GET", url, headers=headers) as response,
    ):
        if response.status_code != httpx.codes.OK:
            raise InvalidArgumentError(
                field,
                f"fetching the image answered HTTP {response.status_code} (redirects are not "
                "followed: give the image's own URL)",
            )
        mime_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if mime_type not in FORMATS:
            raise InvalidArgumentError(
                field, f"the URL serves {mime_type[:40]!r}, not one of {', '.join(FORMATS)}"
            )
        data = bytearray()
        async for chunk in response.aiter_raw():
            data += chunk
            if len(data) > MAX_IMAGE_BYTES:
                raise InvalidArgumentError(
                    field, f"the image is over the limit of {MAX_IMAGE_BYTES >> 20} MiB"
                )
    return mime_type, bytes(data)
