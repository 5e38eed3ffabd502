"""Whether a desired state fits this agent: its model's trained context, the memory there is,
and the folders models may come from. Checked before the running model is let go."""

from __future__ import annotations

from pathlib import Path

from paddler.agent.model_shape import ModelShape
from paddler.common.errors import PaddlerError
from paddler.common.model_sources import ModelSourcePolicy


class DoesNotFitError(PaddlerError):
    """A desired state asks for more than the model or the agent's memory allows."""


def _mib(size: int) -> int:
    return round(size / (1 << 20))


def check_allowed_file(path: Path, sources: ModelSourcePolicy) -> None:
    """A local model must really lie in an allowed folder (its links followed)."""
    if not sources.local_roots:
        return
    real = path.resolve()
    if not any(real.is_relative_to(Path(root).resolve()) for root in sources.local_roots):
        raise DoesNotFitError(f"model file {path} is outside the allowed model folders")


def check_fits(
    shape: ModelShape,
    slots: int,
    context: int,
    *,
    budget: int | None,
    freed: int,
    from_state: bool,
) -> int:
    """The bytes an engine of ``slots`` x ``context`` tokens needs; DoesNotFitError beyond the
    model's trained context (a context the state asked for) or beyond ``budget`` (None:
    unknown) plus what the running engine ``freed``."""
    if from_state and shape.trained_context and context > shape.trained_context:
        raise DoesNotFitError(
            f"state.defaults.context_size {context} is beyond the model's trained context "
            f"({shape.trained_context} tokens): lower it"
        )
    needed = shape.memory_bytes(slots, context)
    if budget is not None and needed > budget + freed:
        raise DoesNotFitError(
            f"the model needs about {_mib(needed)} MiB (weights {_mib(shape.file_bytes)} MiB, "
            f"KV cache {_mib(shape.kv_bytes(slots, context))} MiB for {slots} slots x {context} "
            f"tokens) but the agent has about {_mib(budget + freed)} MiB: lower the context "
            "size or the slots"
        )
    return needed
