"""Checks of a DesiredState, and the names of the packaged models it may ask for."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

import jinja2

from paddler.common.chat_template import ChatTemplate
from paddler.common.errors import InvalidArgumentError
from paddler.common.generation_input import SamplingSettings
from paddler.common.model_sources import ModelSourcePolicy
from paddler.common.placement import check_placement
from paddler.v1 import desired_state_pb2

PACKAGED_MODELS = ("smollm2-135m", "gemma3-270m")
MIN_CONTEXT_SIZE = 16
# Upper bounds no real model reaches: each agent checks the model's own trained context and its
# memory before it lets its running model go.
MAX_CONTEXT_SIZE = 1 << 20
MAX_BATCH_SIZE = 1 << 16
# Real chat templates are 1-20 KiB; compiling 64 KiB takes well under a second.
MAX_TEMPLATE_CHARS = 64 * 1024
MAX_PATH_CHARS = 4096
MAX_HF_FIELD_CHARS = 256
MAX_URL_CHARS = 2048
SHA256_HEX_CHARS = 64


def check_desired_state(
    state: desired_state_pb2.DesiredState, sources: ModelSourcePolicy | None = None
) -> None:
    """Raise InvalidArgumentError naming the first bad field; nothing here needs a model.
    ``sources`` limits where models may come from."""
    _check_model(state.model)
    (sources or ModelSourcePolicy()).check(state.model)
    if state.HasField("mmproj"):
        _check_model(state.mmproj, "state.mmproj")
        (sources or ModelSourcePolicy()).check(state.mmproj, "state.mmproj")
    defaults = state.defaults
    _check_range(defaults, "context_size", MIN_CONTEXT_SIZE, MAX_CONTEXT_SIZE)
    _check_range(defaults, "batch_size", 1, MAX_BATCH_SIZE)
    if (
        defaults.HasField("batch_size")
        and defaults.HasField("context_size")
        and defaults.batch_size > defaults.context_size
    ):
        raise InvalidArgumentError(
            "state.defaults.batch_size",
            f"must be at most the context size ({defaults.context_size}), got "
            f"{defaults.batch_size}",
        )
    SamplingSettings().overridden_by(defaults.sampling, "state.defaults.sampling")
    batch = defaults.batch_size if defaults.HasField("batch_size") else None
    check_placement(state.placement, batch)
    if len(state.chat_template_override) > MAX_TEMPLATE_CHARS:
        raise InvalidArgumentError(
            "state.chat_template_override",
            f"must be at most {MAX_TEMPLATE_CHARS} characters, got "
            f"{len(state.chat_template_override)}",
        )
    if state.HasField("chat_template_override"):
        try:
            ChatTemplate(state.chat_template_override, "", "")
        except jinja2.TemplateSyntaxError as error:
            raise InvalidArgumentError(
                "state.chat_template_override",
                f"the template does not compile: {error.message} (line {error.lineno})",
            ) from error
        except (RecursionError, SyntaxError) as error:  # nested deeper than Python compiles
            raise InvalidArgumentError(
                "state.chat_template_override",
                f"the template does not compile: it nests too deeply ({type(error).__name__})",
            ) from None


def _check_range(
    defaults: desired_state_pb2.InferenceDefaults,
    name: Literal["context_size", "batch_size"],
    low: int,
    high: int,
) -> None:
    if defaults.HasField(name) and not low <= (value := getattr(defaults, name)) <= high:
        raise InvalidArgumentError(
            f"state.defaults.{name}", f"must be {low} to {high}, got {value}"
        )


def _check_model(model: desired_state_pb2.ModelSource, field: str = "state.model") -> None:
    source = model.WhichOneof("source")
    if source is None:
        raise InvalidArgumentError(
            field, "choose a model source: packaged, local_path, hugging_face or url"
        )
    if source == "packaged" and field == "state.mmproj":
        raise InvalidArgumentError(
            f"{field}.packaged",
            "no projector is packaged; give its local_path, hugging_face or url",
        )
    if source == "packaged" and model.packaged not in PACKAGED_MODELS:
        raise InvalidArgumentError(
            f"{field}.packaged",
            f"unknown packaged model {model.packaged!r}; use one of {', '.join(PACKAGED_MODELS)}",
        )
    if source == "local_path":
        path = model.local_path
        if not path.startswith("/") or len(path) > MAX_PATH_CHARS or "\0" in path:
            raise InvalidArgumentError(
                f"{field}.local_path",
                f"must be an absolute path on the agents, of at most {MAX_PATH_CHARS} characters",
            )
    if source == "hugging_face":
        reference = model.hugging_face
        for name in ("repo", "file", "revision"):
            if len(getattr(reference, name)) > MAX_HF_FIELD_CHARS:
                raise InvalidArgumentError(
                    f"{field}.hugging_face.{name}",
                    f"must be at most {MAX_HF_FIELD_CHARS} characters",
                )
        if reference.repo.count("/") != 1 or not all(reference.repo.split("/")):
            raise InvalidArgumentError(
                f"{field}.hugging_face.repo",
                f"must be 'owner/name', got {reference.repo!r}",
            )
        if not reference.file.endswith(".gguf"):
            raise InvalidArgumentError(
                f"{field}.hugging_face.file",
                f"must name a .gguf file in the repository, got {reference.file!r}",
            )
    if source == "url":
        _check_url(model.url, field)


def _check_url(model: desired_state_pb2.UrlModel, source_field: str) -> None:
    field = f"{source_field}.url.url"
    if len(model.url) > MAX_URL_CHARS:
        raise InvalidArgumentError(field, f"must be at most {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(model.url)
        parts.port  # noqa: B018 - raises ValueError on a port out of range
    except ValueError as error:
        raise InvalidArgumentError(field, f"is not a URL: {error}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgumentError(field, f"must be an https:// URL with a host, got {model.url!r}")
    if parts.username is not None or parts.password is not None:
        raise InvalidArgumentError(
            field,
            "must not carry a user name or password: the state is shown to operators and "
            "in the agents' status",
        )
    digest = model.sha256
    if digest and (
        len(digest) != SHA256_HEX_CHARS or any(c not in "0123456789abcdefABCDEF" for c in digest)
    ):
        raise InvalidArgumentError(
            f"{source_field}.url.sha256", f"must be {SHA256_HEX_CHARS} hex digits or empty"
        )
