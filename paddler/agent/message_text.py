"""A chat message's text as the chat template gets it: images stand as libmtmd's marker."""

from __future__ import annotations

from paddler.v1 import generation_pb2

# libmtmd's default media marker (``mtmd_default_marker()``): where each image goes.
MEDIA_MARKER = "<__media__>"


def message_text(message: generation_pb2.ChatMessage) -> str:
    """``content``, or the parts joined with a marker in each image's place."""
    if not message.parts:
        return message.content
    return "".join(part.text if part.HasField("text") else MEDIA_MARKER for part in message.parts)
