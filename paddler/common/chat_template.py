"""Conversations rendered with the model's own Jinja chat template, in a sandbox."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NoReturn

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from paddler.common.errors import InvalidArgumentError

_FIELD = "input.conversation"


class TemplateRejectedError(Exception):
    """Raised by a template's own ``raise_exception`` call."""


def _raise_exception(message: str) -> NoReturn:
    raise TemplateRejectedError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now(UTC).strftime(fmt)


class ChatTemplate:
    """A compiled chat template; ``render`` turns role/content messages into a prompt."""

    def __init__(self, source: str, bos_token: str, eos_token: str) -> None:
        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        environment.globals["raise_exception"] = _raise_exception
        environment.globals["strftime_now"] = _strftime_now
        self._template = environment.from_string(source)
        self._bos_token = bos_token
        self._eos_token = eos_token

    def render(self, messages: Sequence[tuple[str, str]]) -> str:
        """Render messages with the generation prompt added; a template's own error rejects."""
        try:
            return self._template.render(
                messages=[{"role": role, "content": content} for role, content in messages],
                add_generation_prompt=True,
                bos_token=self._bos_token,
                eos_token=self._eos_token,
            )
        except (TemplateRejectedError, jinja2.TemplateError) as error:
            raise InvalidArgumentError(
                _FIELD, f"the model's chat template rejected the conversation: {error}"
            ) from error
