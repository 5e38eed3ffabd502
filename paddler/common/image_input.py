"""Images in conversations: their limits, and the checks that need no model (each file's
header, read with Pillow without decoding the pixels)."""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, UnidentifiedImageError

from paddler.common.errors import InvalidArgumentError
from paddler.v1 import generation_pb2

MAX_IMAGES = 4
MAX_IMAGE_BYTES = 2 << 20
MAX_IMAGES_BYTES = 4 << 20
MAX_IMAGE_SIDE = 4096
MAX_IMAGE_PIXELS = MAX_IMAGE_SIDE * MAX_IMAGE_SIDE
# The MIME types served, and the format Pillow must find in the bytes.
FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}


def check_parts(messages: Sequence[generation_pb2.ChatMessage], field: str) -> int:
    """Check every message's content parts; return the text bytes they hold (counted with the
    contents against the input limit). Raise InvalidArgumentError naming the part to fix."""
    text_bytes = 0
    images: list[tuple[str, generation_pb2.Image]] = []
    for index, message in enumerate(messages):
        if not message.parts:
            continue
        here = f"{field}[{index}]"
        if message.content:
            raise InvalidArgumentError(
                f"{here}.content",
                "a message with parts has its text in text parts; leave content empty",
            )
        for number, part in enumerate(message.parts):
            kind = part.WhichOneof("kind")
            if kind is None:
                raise InvalidArgumentError(
                    f"{here}.parts[{number}]", "is empty; set its text or its image"
                )
            if kind == "text":
                text_bytes += len(part.text.encode())
                continue
            if message.role != "user":
                raise InvalidArgumentError(
                    f"{here}.parts[{number}].image",
                    f"only user messages carry images, not {message.role!r} ones",
                )
            images.append((f"{here}.parts[{number}].image", part.image))
    _check_images(images)
    return text_bytes


def image_count(messages: Sequence[generation_pb2.ChatMessage]) -> int:
    """How many images the messages carry."""
    return sum(part.HasField("image") for message in messages for part in message.parts)


def _check_images(images: list[tuple[str, generation_pb2.Image]]) -> None:
    if len(images) > MAX_IMAGES:
        raise InvalidArgumentError(
            images[MAX_IMAGES][0],
            f"the request has {len(images)} images; the limit is {MAX_IMAGES}",
        )
    total = 0
    for field, image in images:
        check_image(image, field)
        total += len(image.data)
        if total > MAX_IMAGES_BYTES:
            raise InvalidArgumentError(
                field,
                f"the images come to more than {MAX_IMAGES_BYTES >> 20} MiB together "
                "(the limit per request); send fewer or smaller images",
            )


def check_image(image: generation_pb2.Image, field: str) -> tuple[int, int]:
    """The image's width and height, once its type, size and header are within the limits."""
    expected = FORMATS.get(image.mime_type)
    if expected is None:
        raise InvalidArgumentError(
            f"{field}.mime_type",
            f"unknown type {image.mime_type[:40]!r}; send one of {', '.join(FORMATS)}",
        )
    if not image.data:
        raise InvalidArgumentError(f"{field}.data", "is empty; send the image file's bytes")
    if len(image.data) > MAX_IMAGE_BYTES:
        raise InvalidArgumentError(
            f"{field}.data",
            f"is {len(image.data)} bytes; the limit is {MAX_IMAGE_BYTES >> 20} MiB per image",
        )
    try:
        with Image.open(io.BytesIO(image.data), formats=list(FORMATS.values())) as opened:
            found, (width, height) = opened.format, opened.size
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise InvalidArgumentError(
            f"{field}.data", f"is not a PNG, JPEG or WebP file Pillow can read ({error})"
        ) from None
    if found != expected:
        raise InvalidArgumentError(
            f"{field}.mime_type", f"says {image.mime_type} but the bytes are {found}"
        )
    if width * height > MAX_IMAGE_PIXELS:
        raise InvalidArgumentError(
            f"{field}.data",
            f"is {width} x {height} pixels; the limit is {MAX_IMAGE_PIXELS:,} pixels "
            f"({MAX_IMAGE_SIDE} x {MAX_IMAGE_SIDE})",
        )
    return width, height
