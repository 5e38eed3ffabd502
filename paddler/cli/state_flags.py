"""How ``paddler state set``'s flags become a desired state: the model source's forms and the
defaults."""

from __future__ import annotations

from pathlib import Path

import typer

from paddler.common.desired_state import PACKAGED_MODELS
from paddler.v1 import desired_state_pb2

HF_PREFIX = "hf:"
URL_PREFIXES = ("https://", "http://")


def model_source(
    model: str, sha256: str | None = None, flag: str = "--model"
) -> desired_state_pb2.ModelSource:
    """A packaged name, ``hf:OWNER/REPO/FILE.gguf[@REVISION]``, an http(s) URL (with the
    sha256 it must have, if given), or a path on the agents (``flag`` names the option)."""
    if model.startswith(URL_PREFIXES):
        url = desired_state_pb2.UrlModel(url=model, sha256=sha256 or "")
        return desired_state_pb2.ModelSource(url=url)
    if sha256 is not None:
        raise typer.BadParameter(
            f"only a file given by URL is checked against a sha256 (give {flag} a URL)",
            param_hint=f"{flag}-sha256",
        )
    if model in PACKAGED_MODELS:
        return desired_state_pb2.ModelSource(packaged=model)
    if model.startswith(HF_PREFIX):
        reference, _, revision = model.removeprefix(HF_PREFIX).partition("@")
        owner, _, rest = reference.partition("/")
        name, _, file = rest.partition("/")
        return desired_state_pb2.ModelSource(
            hugging_face=desired_state_pb2.HuggingFaceModel(
                repo=f"{owner}/{name}", file=file, revision=revision
            )
        )
    return desired_state_pb2.ModelSource(local_path=model)


def state_from_flags(
    model: desired_state_pb2.ModelSource,
    context_size: int | None,
    batch_size: int | None,
    chat_template: Path | None,
    sampling: dict[str, float | None],
) -> desired_state_pb2.DesiredState:
    """A desired state of ``model``, the sizes and the sampling defaults given (None: unset)."""
    defaults = desired_state_pb2.InferenceDefaults()
    if context_size is not None:
        defaults.context_size = context_size
    if batch_size is not None:
        defaults.batch_size = batch_size
    for name, value in sampling.items():
        if value is not None:
            setattr(defaults.sampling, name, value)
    state = desired_state_pb2.DesiredState(model=model, defaults=defaults)
    if chat_template is not None:
        state.chat_template_override = chat_template.read_text()
    return state
