"""What an engine is built from, and how a desired state maps onto it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import structlog

from paddler.agent.context_choice import ContextChoice
from paddler.agent.engine import Engine
from paddler.agent.job_factory import JobFactory
from paddler.agent.llama_context import EngineConfig
from paddler.agent.llama_logging import recorded_llama_logs
from paddler.agent.llama_model import LlamaModel
from paddler.agent.metrics import AgentMetrics
from paddler.agent.placement_report import read_placement
from paddler.agent.projector import Projector
from paddler.common.generation_input import SamplingSettings
from paddler.v1 import desired_state_pb2

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class EngineSettings:
    """Everything an engine is built from."""

    model: Path
    engine: EngineConfig
    context: ContextChoice
    sampling: SamplingSettings
    chat_template: str | None
    chat_template_timeout_s: float
    # Weights plus KV cache, as estimated before the build.
    memory_bytes: int = 0
    # The multimodal projector's GGUF, if the model reads images.
    mmproj: Path | None = None


def build_engine(
    settings: EngineSettings, metrics: AgentMetrics | None = None
) -> tuple[Engine, JobFactory]:
    """Load the model, its grammar tokenizer and the context (blocking; run it off the event
    loop)."""
    with recorded_llama_logs() as lines:
        model = LlamaModel(settings.model, settings.engine.placement)
        projector = None
        try:
            model.grammars.prepare()
            if settings.mmproj is not None:
                projector = Projector(settings.mmproj, model, settings.engine.threads)
            engine = Engine(model, settings.engine, metrics, projector)
        except BaseException:
            if projector is not None:
                projector.close()
            model.close()
            raise
    engine.placement = read_placement(lines)
    log.info("model placed", model=model.name, **asdict(engine.placement))
    return engine, job_factory(engine, settings)


def same_engine(
    a: desired_state_pb2.VersionedDesiredState, b: desired_state_pb2.VersionedDesiredState
) -> bool:
    """Whether two states need the same engine: they differ at most in sampling defaults and
    the chat template."""
    engines = []
    for update in (a, b):
        state = desired_state_pb2.DesiredState()
        state.CopyFrom(update.state)
        state.defaults.ClearField("sampling")
        state.ClearField("chat_template_override")
        engines.append(state)
    return engines[0] == engines[1]


def state_sampling(state: desired_state_pb2.DesiredState) -> SamplingSettings:
    """The state's sampling defaults over the built-in ones."""
    return SamplingSettings().overridden_by(state.defaults.sampling, "state.defaults.sampling")


def state_template(state: desired_state_pb2.DesiredState) -> str | None:
    """The state's chat template override, if it has one."""
    return state.chat_template_override if state.HasField("chat_template_override") else None


def job_factory(engine: Engine, settings: EngineSettings) -> JobFactory:
    """Requests' checks and rendering for ``engine`` under ``settings``."""
    return JobFactory(
        engine.model,
        engine.context_per_slot,
        settings.sampling,
        settings.chat_template,
        settings.chat_template_timeout_s,
        projector=engine.projector,
    )
