"""What decided an agent's context per slot, in words for tables (``paddler agents``, the
panel): ``flag``, ``desired state``, ``trained``, ``memory`` or ``fallback``."""

from __future__ import annotations

from paddler.v1 import status_pb2


def context_source_label(source: status_pb2.ContextSource.ValueType) -> str:
    """The source's enum name, short and lower case ("" for an unspecified one)."""
    if source == status_pb2.CONTEXT_SOURCE_UNSPECIFIED:
        return ""
    name = status_pb2.ContextSource.Name(source).removeprefix("CONTEXT_SOURCE_")
    return name.lower().replace("_", " ")
