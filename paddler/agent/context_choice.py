"""How many tokens each slot holds: the operator's number, or the model's trained context
capped by the memory the agent has."""

from __future__ import annotations

from dataclasses import dataclass

from paddler.agent.model_shape import ModelShape
from paddler.v1 import status_pb2

FALLBACK_CONTEXT = 4096
"""Tokens per slot for a model whose metadata does not give its trained context."""

CONTEXT_STEP = 256
"""A context cut to fit the memory is a multiple of this many tokens."""

MACHINE_RESERVE_BYTES = 1 << 30
"""Memory left to the rest of the machine when the context is sized from what is free (as
llama.cpp's ``--fit`` leaves 1 GiB); an explicit ``--memory-budget`` is taken whole."""

_SOURCES = {
    status_pb2.CONTEXT_SOURCE_FLAG: "the agent's --context-size",
    status_pb2.CONTEXT_SOURCE_DESIRED_STATE: "the desired state's defaults.context_size",
    status_pb2.CONTEXT_SOURCE_TRAINED: "the model's trained context",
    status_pb2.CONTEXT_SOURCE_MEMORY: "the memory the agent has",
    status_pb2.CONTEXT_SOURCE_FALLBACK: "a fallback: the model does not give its trained context",
}


@dataclass(frozen=True)
class ContextChoice:
    """Tokens per slot, the model's trained context (0: unknown) and what decided."""

    size: int
    trained: int
    source: status_pb2.ContextSource.ValueType

    @property
    def reason(self) -> str:
        """What decided the size, in words."""
        return _SOURCES.get(self.source, "unknown")

    def fill(self, status: status_pb2.AgentStatus, size: int) -> None:
        """Copy into a snapshot, with ``size`` the context the engine really holds."""
        status.context_size = size
        status.trained_context_size = self.trained
        status.context_source = self.source


def choose_context(
    shape: ModelShape,
    slots: int,
    *,
    flag: int,
    state: int | None,
    budget: int | None,
    measured: bool,
) -> ContextChoice:
    """The context per slot: the desired state's, else the ``flag`` (0: none), else the
    model's trained context while ``slots`` of it fit ``budget`` bytes with the weights (None:
    unknown, no cap). A ``measured`` budget (what the machine has free) keeps
    ``MACHINE_RESERVE_BYTES`` back."""
    trained = shape.trained_context
    if state is not None:
        return ContextChoice(state, trained, status_pb2.CONTEXT_SOURCE_DESIRED_STATE)
    if flag:
        return ContextChoice(flag, trained, status_pb2.CONTEXT_SOURCE_FLAG)
    wanted, source = (
        (trained, status_pb2.CONTEXT_SOURCE_TRAINED)
        if trained
        else (FALLBACK_CONTEXT, status_pb2.CONTEXT_SOURCE_FALLBACK)
    )
    if budget is None or not shape.kv_bytes_per_token:
        return ContextChoice(wanted, trained, source)
    room = budget - shape.file_bytes - (MACHINE_RESERVE_BYTES if measured else 0)
    fits = max(room, 0) // (slots * shape.kv_bytes_per_token)
    if fits >= wanted:
        return ContextChoice(wanted, trained, source)
    # Too little for even one step: the fit check then says what the model needs.
    capped = max(fits // CONTEXT_STEP * CONTEXT_STEP, CONTEXT_STEP)
    return ContextChoice(capped, trained, status_pb2.CONTEXT_SOURCE_MEMORY)
