"""Whether a desired state fits this agent: its model's trained context, the memory there is,
and the folders models may come from. Checked before the running model is let go."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import structlog

from paddler.agent.config import AgentConfig
from paddler.agent.context_choice import MACHINE_RESERVE_BYTES, ContextChoice, choose_context
from paddler.agent.llama_context import EngineConfig
from paddler.agent.model_shape import ModelShape
from paddler.common.errors import PaddlerError
from paddler.common.model_sources import ModelSourcePolicy
from paddler.common.placement import PlacementSettings
from paddler.v1 import desired_state_pb2

log = structlog.get_logger(__name__)


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


def fit_engine(
    shape: ModelShape,
    config: AgentConfig,
    defaults: desired_state_pb2.InferenceDefaults,
    placement: desired_state_pb2.Placement,
    *,
    budget: int | None,
    freed: int,
) -> tuple[EngineConfig, ContextChoice, int]:
    """The engine's sizes for a model of ``shape`` (the desired state's ``defaults`` and
    ``placement`` over the agent's flags, the context chosen and logged), how the context was
    chosen, and the bytes it needs; DoesNotFitError when it does not fit."""
    placed = config.placement.over(placement)
    placed.check()
    shape = replace(shape, kv_bytes_per_token=round(shape.kv_bytes_per_token * _kv_scale(placed)))
    state_context = defaults.context_size if defaults.HasField("context_size") else None
    room = None if budget is None else budget + freed
    context = choose_context(
        shape,
        config.slots,
        flag=config.context_size,
        state=state_context,
        budget=room,
        measured=not config.memory_budget_bytes,
    )
    batch = defaults.batch_size if defaults.HasField("batch_size") else config.batch_size
    if defaults.HasField("batch_size") and batch > config.slots * context.size:
        raise DoesNotFitError(
            f"state.defaults.batch_size {batch} is more than the context it would fill "
            f"({config.slots} slots x {context.size} tokens): lower it"
        )
    if placed.ubatch_size is not None and placed.ubatch_size > batch:
        raise DoesNotFitError(
            f"placement.ubatch_size {placed.ubatch_size} is more than the batch size {batch}: "
            "lower it"
        )
    memory = check_fits(
        shape,
        config.slots,
        context.size,
        budget=budget,
        freed=freed,
        from_state=state_context is not None,
    )
    store = _prompt_store_bytes(config, budget, freed, memory)
    _log_context(context, config.slots, shape, store)
    engine = EngineConfig(
        slots=config.slots,
        context_size=context.size,
        batch_size=batch,
        threads=config.threads,
        prompt_cache=config.prompt_cache,
        prompt_store_bytes=store,
        placement=placed,
    )
    return engine, context, memory


# Bytes per KV cache element against f16's 2 (q8_0 and q4_0 blocks: 32 values and a scale).
_KV_ELEMENT_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


def _kv_scale(placement: PlacementSettings) -> float:
    """The KV cache's size with the placement's types, as a share of an f16 cache's (K and V
    are half of it each)."""
    k = _KV_ELEMENT_BYTES[placement.cache_type_k]
    v = _KV_ELEMENT_BYTES[placement.cache_type_v]
    return (k + v) / (2 * _KV_ELEMENT_BYTES["f16"])


def _prompt_store_bytes(config: AgentConfig, budget: int | None, freed: int, needed: int) -> int:
    """--prompt-cache-mib, cut to the memory the engine leaves (less MACHINE_RESERVE_BYTES of
    what the machine has free)."""
    wanted = config.prompt_cache_mib << 20 if config.prompt_cache else 0
    if budget is None:
        return wanted
    reserve = 0 if config.memory_budget_bytes else MACHINE_RESERVE_BYTES
    return max(min(wanted, budget + freed - needed - reserve), 0)


def _log_context(context: ContextChoice, slots: int, shape: ModelShape, store: int) -> None:
    """Say how big each slot's context is and why, and the prompt cache's cap; warn beyond the
    trained context."""
    log.info(
        "context size chosen",
        context_size=context.size,
        trained_context_size=context.trained or None,
        slots=slots,
        kv_cache_mib=_mib(shape.kv_bytes(slots, context.size)),
        decided_by=context.reason,
        prompt_cache_mib=_mib(store),
    )
    if context.trained and context.size > context.trained:
        log.warning(
            "context beyond the model's trained context: replies may degrade past it",
            context_size=context.size,
            trained_context_size=context.trained,
        )
