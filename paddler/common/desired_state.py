"""Checks of a DesiredState, and the names of the packaged models it may ask for."""

from __future__ import annotations

import jinja2

from paddler.common.chat_template import ChatTemplate
from paddler.common.errors import InvalidArgumentError
from paddler.common.generation_input import SamplingSettings
from paddler.v1 import desired_state_pb2

PACKAGED_MODELS = ("smollm2-135m", "gemma3-270m")
MIN_CONTEXT_SIZE = 16


def check_desired_state(state: desired_state_pb2.DesiredState) -> None:
    """Raise InvalidArgumentError naming the first bad field; nothing here needs a model."""
    _check_model(state.model)
    defaults = state.defaults
    if defaults.HasField("context_size") and defaults.context_size < MIN_CONTEXT_SIZE:
        raise InvalidArgumentError(
            "state.defaults.context_size",
            f"must be at least {MIN_CONTEXT_SIZE} tokens, got {defaults.context_size}",
        )
    if defaults.HasField("batch_size") and defaults.batch_size < 1:
        raise InvalidArgumentError(
            "state.defaults.batch_size", f"must be at least 1, got {defaults.batch_size}"
        )
    SamplingSettings().overridden_by(defaults.sampling, "state.defaults.sampling")
    if state.HasField("chat_template_override"):
        try:
            ChatTemplate(state.chat_template_override, "", "")
        except jinja2.TemplateSyntaxError as error:
            raise InvalidArgumentError(
                "state.chat_template_override",
                f"the template does not compile: {error.message} (line {error.lineno})",
            ) from error


def _check_model(model: desired_state_pb2.ModelSource) -> None:
    source = model.WhichOneof("source")
    if source is None:
        raise InvalidArgumentError(
            "state.model", "choose a model source: packaged, local_path or hugging_face"
        )
    if source == "packaged" and model.packaged not in PACKAGED_MODELS:
        raise InvalidArgumentError(
            "state.model.packaged",
            f"unknown packaged model {model.packaged!r}; use one of {', '.join(PACKAGED_MODELS)}",
        )
    if source == "local_path" and not model.local_path:
        raise InvalidArgumentError("state.model.local_path", "the path is empty")
    if source == "hugging_face":
        reference = model.hugging_face
        if reference.repo.count("/") != 1 or not all(reference.repo.split("/")):
            raise InvalidArgumentError(
                "state.model.hugging_face.repo",
                f"must be 'owner/name', got {reference.repo!r}",
            )
        if not reference.file.endswith(".gguf"):
            raise InvalidArgumentError(
                "state.model.hugging_face.file",
                f"must name a .gguf file in the repository, got {reference.file!r}",
            )
