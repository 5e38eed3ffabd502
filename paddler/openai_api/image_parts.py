"""OpenAI's image content parts (``image_url`` on chat, ``input_image`` on Responses) as our
``Image``: base64 ``data:`` URIs (an allowed host's URL was inlined as one before, see
``remote_images``); any other URL is refused."""

from __future__ import annotations

import base64
import binascii
import re

from paddler.common.errors import InvalidArgumentError
from paddler.common.image_input import FORMATS, MAX_IMAGE_BYTES
from paddler.v1 import generation_pb2

_DATA_URI = re.compile(r"data:([A-Za-z0-9.+/-]+);base64,(.*)", re.DOTALL)


def image_from_url(url: str, field: str) -> generation_pb2.Image:
    """The image a ``data:`` URI holds; InvalidArgumentError naming ``field`` otherwise."""
    match = _DATA_URI.fullmatch(url)
    if match is None:
        scheme = url.partition(":")[0].lower() if ":" in url[:16] else ""
        if scheme in ("http", "https"):
            raise InvalidArgumentError(
                field,
                "image URLs are fetched only from hosts the balancer allows "
                "(--allowed-image-host): send the image inline as a base64 data: URI "
                "(data:image/png;base64,...)",
            )
        raise InvalidArgumentError(
            field, "is not a data: URI; send data:image/png;base64,... (or jpeg, webp)"
        )
    mime_type, encoded = match[1].lower(), match[2]
    if mime_type not in FORMATS:
        raise InvalidArgumentError(
            field, f"unknown image type {mime_type[:40]!r}; send one of {', '.join(FORMATS)}"
        )
    if len(encoded) * 3 // 4 > MAX_IMAGE_BYTES + 2:  # refused before it is decoded
        raise InvalidArgumentError(
            field, f"the image is over the limit of {MAX_IMAGE_BYTES >> 20} MiB per image"
        )
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgumentError(field, "the data: URI's base64 does not decode") from None
    return generation_pb2.Image(data=data, mime_type=mime_type)
