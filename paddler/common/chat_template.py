"""Conversations rendered with the model's own Jinja chat template, in a bounded sandbox
(``template_sandbox``, ``template_measures``), traced against a deadline and an output cap."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from types import FrameType
from typing import Any, NoReturn

import jinja2

from paddler.common.errors import InvalidArgumentError
from paddler.common.template_measures import (
    MAX_RENDERED_CHARS,
    RenderBoundError,
    render_allowance,
)
from paddler.common.template_sandbox import BoundedEnvironment

_FIELD = "input.conversation"
# A template runs operator-supplied code on every conversation: bound its time and its output.
DEFAULT_RENDER_TIMEOUT_S = 2.0
# The ChatML layout llama-server also falls back to for a model without a template.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHATML_END_OF_TURN = "<|im_end|>"
# Jinja compiles a template loaded from a string into code of this file name.
_TEMPLATE_FILENAME = "<template>"


class TemplateRejectedError(Exception):
    """Raised by a template's own ``raise_exception`` call."""


def _raise_exception(message: str) -> NoReturn:
    raise TemplateRejectedError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now(UTC).strftime(fmt)


def _deadline_tracer(deadline: float, timeout_s: float) -> Callable[[FrameType, str, Any], Any]:
    """A trace function that checks the deadline on every call, and on every line of the
    template's own compiled code (where its loops run); other frames run untraced."""

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        if time.monotonic() > deadline:
            raise RenderBoundError(f"the template did not finish within {timeout_s:g} s")
        return trace if frame.f_code.co_filename == _TEMPLATE_FILENAME else None

    return trace


class ChatTemplate:
    """A compiled chat template; ``render`` turns role/content messages into a prompt."""

    def __init__(
        self,
        source: str,
        bos_token: str,
        eos_token: str,
        render_timeout_s: float = DEFAULT_RENDER_TIMEOUT_S,
    ) -> None:
        environment = BoundedEnvironment(trim_blocks=True, lstrip_blocks=True)
        environment.globals["raise_exception"] = _raise_exception
        environment.globals["strftime_now"] = _strftime_now
        self._template = environment.from_string(source)
        self._bos_token = bos_token
        self._eos_token = eos_token
        self._render_timeout_s = render_timeout_s

    def render(
        self,
        messages: Sequence[Mapping[str, object]],
        tools: Sequence[Mapping[str, object]] | None = None,
        options: Mapping[str, object] | None = None,
    ) -> str:
        """Render messages (``role``, ``content`` and what else the template reads) and the
        ``tools`` (OpenAI's shape, for a template with a tool syntax) with the generation prompt
        added and ``options`` as further variables (``enable_thinking``...); a template's own
        error, or one that runs past its render timeout or ``MAX_RENDERED_CHARS`` (in all, or in
        one padding, format width, repetition, join...), rejects the request.

        Blocking, and traced line by line against the deadline: call it from a worker thread.
        """
        chunks = self._template.generate(
            messages=list(messages),
            tools=list(tools) if tools else None,
            add_generation_prompt=True,
            bos_token=self._bos_token,
            eos_token=self._eos_token,
            **(options or {}),
        )
        try:
            with render_allowance():
                return _collect_traced(chunks, self._render_timeout_s)
        except (TemplateRejectedError, jinja2.TemplateError) as error:
            raise InvalidArgumentError(
                _FIELD, f"the model's chat template rejected the conversation: {error}"
            ) from error
        except (RenderBoundError, RecursionError, MemoryError) as error:
            raise InvalidArgumentError(
                _FIELD,
                f"the chat template could not render this conversation ({error or 'recursion'}); "
                "shorten the conversation, or fix the template (state.chat_template_override)",
            ) from error


def _collect_traced(chunks: Iterator[str], timeout_s: float) -> str:
    """Join the rendered chunks, tracing every line the template runs against a deadline
    ``timeout_s`` from now (this frame itself is not traced, so the trace is always put back)."""
    previous = sys.gettrace()
    sys.settrace(_deadline_tracer(time.monotonic() + timeout_s, timeout_s))
    try:
        parts: list[str] = []
        size = 0
        for chunk in chunks:
            size += len(chunk)
            if size > MAX_RENDERED_CHARS:
                raise RenderBoundError(f"the output passed {MAX_RENDERED_CHARS} characters")
            parts.append(chunk)
        return "".join(parts)
    finally:
        sys.settrace(previous)
