"""Conversations rendered with the model's own Jinja chat template, in a bounded sandbox."""

from __future__ import annotations

import inspect
import itertools
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from types import BuiltinMethodType, FrameType, MethodType
from typing import Any, NoReturn

import jinja2
from jinja2 import filters, nodes, pass_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from markupsafe import EscapeFormatter, Markup

from paddler.common.errors import InvalidArgumentError
from paddler.common.generation_input import MAX_INPUT_BYTES

_FIELD = "input.conversation"
# A template runs operator-supplied code on every conversation: bound its time and its output.
DEFAULT_RENDER_TIMEOUT_S = 2.0
MAX_RENDERED_CHARS = 4 * MAX_INPUT_BYTES
# What one render may build with widths, paddings, repetitions, joins and replacements, all
# together (each alone stays within MAX_RENDERED_CHARS), and how large an integer may grow.
MAX_AMPLIFIED_CHARS = 4 * MAX_RENDERED_CHARS
MAX_INT_BITS = 1 << 16
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


class _RenderBoundError(Exception):
    """The template ran out of time or output, or asked one call for too much."""


def _raise_exception(message: str) -> NoReturn:
    raise TemplateRejectedError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now(UTC).strftime(fmt)


class _Allowance:
    """What one render may still build with widths, paddings, repetitions and the like."""

    def __init__(self) -> None:
        self.left = MAX_AMPLIFIED_CHARS


_ALLOWANCE: ContextVar[_Allowance | None] = ContextVar("template_allowance", default=None)


def _bounded(size: int, what: str) -> None:
    """Refuse, before it is built, a value of ``size`` characters (or items) over the limit."""
    if size > MAX_RENDERED_CHARS:
        raise _RenderBoundError(
            f"{what} in the template asks for {size} characters, over the limit of "
            f"{MAX_RENDERED_CHARS}"
        )


def _spend(size: int, what: str) -> None:
    """``_bounded``, and count ``size`` against the render's allowance."""
    _bounded(size, what)
    allowance = _ALLOWANCE.get()
    if allowance is not None:
        allowance.left -= max(size, 0)
        if allowance.left < 0:
            raise _RenderBoundError(
                f"{what}: the template's widths, paddings and repetitions together passed "
                f"{MAX_AMPLIFIED_CHARS} characters"
            )


def _count(value: object) -> int:
    """A width or count as given (a bool is an int); 0 for anything else (which the call
    itself refuses)."""
    return value if isinstance(value, int) else 0


def _footprint(value: object, indent: int = 0) -> int:
    """Characters (or items) ``value`` takes at least once printed, each container member on a
    line of its own indented by ``indent`` per level (JSON's layout) when ``indent`` is set;
    counted only to just past MAX_RENDERED_CHARS, so a value that repeats one big member
    many times is measured without walking all of it."""
    size = 0
    levels: list[tuple[Iterator[object], int]] = [(iter((value,)), 0)]
    while levels and size <= MAX_RENDERED_CHARS:
        members, depth = levels[-1]
        item = next(members, levels)  # ``levels`` itself: none left
        if item is levels:
            levels.pop()
        elif isinstance(item, str | bytes):
            size += len(item)
        elif isinstance(item, dict):
            size += len(item) * (1 + (depth + 1) * indent)
            levels.append((itertools.chain(item.keys(), item.values()), depth + 1))
        elif isinstance(item, list | tuple | set | frozenset):
            size += len(item) * (1 + (depth + 1) * indent)
            levels.append((iter(item), depth + 1))
        else:
            size += 1
    return size


def _digits(number: str) -> int:
    return int(number) if len(number) < 19 else sys.maxsize


# A printf conversion after its ``%`` (and its mapping key): flags, width, precision, type.
_PRINTF = re.compile(r"[-+ #0]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?(.?)", re.DOTALL)


def _printf_size(fmt: str, values: object) -> int:
    """Characters the widths and precisions of ``fmt % values`` ask for, at least."""
    positional = list(values) if isinstance(values, tuple) else [values]
    size = index = at = 0
    while (at := fmt.find("%", at) + 1) > 0:
        if fmt.startswith("(", at):
            at = _after_key(fmt, at)
        conversion = _PRINTF.match(fmt, at)
        assert conversion is not None  # every part of it is optional
        at = conversion.end()
        for number in conversion.group(1, 2):
            if number == "*":
                size += abs(_count(positional[index] if index < len(positional) else 0))
                index += 1
            elif number:
                size += _digits(number)
        index += conversion.group(3) != "%"
    return size


def _after_key(fmt: str, start: int) -> int:
    """Where a printf mapping key that opens at ``start`` ends (past its matching
    parenthesis; keys may hold balanced ones)."""
    depth = 0
    for at in range(start, len(fmt)):
        depth += {"(": 1, ")": -1}.get(fmt[at], 0)
        if depth == 0:
            return at + 1
    return len(fmt)


def _format_spec_size(spec: str) -> int:
    """Characters a ``str.format`` field's spec (its width, its precision) asks for, at
    least."""
    return sum(_digits(number) for number in re.findall(r"\d+", spec))


class _BoundedFormatter(SandboxedFormatter):
    """``str.format`` in the sandbox, refusing a width or precision over the limit."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        """Format one field once its spec (nested fields filled in) is within bounds."""
        _spend(_format_spec_size(format_spec), "a format width")
        return super().format_field(value, format_spec)


class _BoundedEscapeFormatter(_BoundedFormatter, EscapeFormatter):
    """The same, for a ``Markup`` string's ``format``."""


def _padded_size(text: str | bytes, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    return max(len(text), _count(args[0])) if args else len(text)


def _tabs_size(text: str | bytes, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    tab_size = _count(args[0] if args else kwargs.get("tabsize", 8))
    tabs = text.count("\t") if isinstance(text, str) else text.count(b"\t")
    return len(text) + tabs * max(tab_size, 0)


def _replaced_size(text: str | bytes, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    if len(args) < 2:
        return len(text)
    old, new = args[0], args[1]
    found = text.count(old) + (0 if old else 1)  # "" is found between every two characters
    limit = _count(args[2]) if len(args) > 2 else -1
    found = found if limit < 0 else min(found, limit)
    return len(text) + found * max(len(new) - len(old), 0)


def _joined_size(text: str | bytes, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    items = args[0] if args else ()
    return _footprint(items) + len(text) * max(len(items) - 1, 0)


def _translated_size(text: str | bytes, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    table = args[0] if args else None
    if not isinstance(text, str) or not isinstance(table, dict):
        return len(text)
    longest = max((len(v) for v in table.values() if isinstance(v, str)), default=1)
    return len(text) * max(longest, 1)


_Estimate = Callable[[str | bytes, tuple[Any, ...], dict[str, Any]], int]
# What a str (or bytes) method called from a template builds, before it builds it.
_STRING_METHODS: dict[str, _Estimate] = {
    "center": _padded_size,
    "ljust": _padded_size,
    "rjust": _padded_size,
    "zfill": _padded_size,
    "expandtabs": _tabs_size,
    "replace": _replaced_size,
    "join": _joined_size,
    "translate": _translated_size,
}


@pass_context
def _center(context: Context, value: Any, width: int = 80) -> str:
    _spend(_count(width), "a centring width")
    return filters.do_center(value, width)


@pass_context
def _indent(
    context: Context, s: str, width: int | str = 4, first: bool = False, blank: bool = False
) -> str:
    indentation = len(width) if isinstance(width, str) else _count(width)
    lines = str(s).count("\n") + 2
    _spend(len(str(s)) + lines * max(indentation, 0), "an indentation")
    return filters.do_indent(s, width, first, blank)


@pass_context
def _format(context: Context, value: Any, *args: Any, **kwargs: Any) -> str:
    _spend(_printf_size(str(value), kwargs or args), "a format width")
    return filters.do_format(value, *args, **kwargs)


@pass_context
def _wordwrap(context: Context, s: str, *args: Any, **kwargs: Any) -> str:
    bound = inspect.signature(filters.do_wordwrap).bind(context.environment, s, *args, **kwargs)
    joint = bound.arguments.get("wrapstring") or context.environment.newline_sequence
    text = str(s)
    _spend(len(text) + (len(text) + 1) * len(joint), "a word wrap")  # a character a line, at most
    return filters.do_wordwrap(context.environment, s, *args, **kwargs)


@pass_context
def _replace(context: Context, s: str, old: str, new: str, count: int | None = None) -> str:
    size = _replaced_size(str(s), (str(old), str(new), -1 if count is None else count), {})
    _spend(size, "a replacement")
    return filters.do_replace(context.eval_ctx, s, old, new, count)


@pass_context
def _join(
    context: Context, value: Iterable[Any], d: str = "", attribute: str | int | None = None
) -> str:
    items = list(value)
    if attribute is not None:
        items = list(map(filters.make_attrgetter(context.environment, attribute), items))
    _spend(_joined_size(str(d), (items,), {}), "a join")
    return filters.sync_do_join(context.eval_ctx, items, d)


@pass_context
def _batch(
    context: Context, value: Iterable[Any], linecount: int, fill_with: Any = None
) -> Iterator[list[Any]]:
    _spend(_count(linecount) if fill_with is not None else 0, "a batch's filling")
    return filters.do_batch(value, linecount, fill_with)


@pass_context
def _tojson(context: Context, value: Any, indent: int | str | None = None) -> Markup:
    if indent is not None:
        width = len(indent) if isinstance(indent, str) else max(_count(indent), 0)
        _spend(_footprint(value, width), "a JSON indentation")
    # json.dumps takes a str indent too, which Jinja's annotation leaves out.
    return filters.do_tojson(context.eval_ctx, value, indent)  # type: ignore[arg-type]


@pass_context
def _sum(
    context: Context,
    iterable: Iterable[Any],
    attribute: str | int | None = None,
    start: Any = 0,
) -> Any:
    items = list(iterable)
    if attribute is not None:
        items = list(map(filters.make_attrgetter(context.environment, attribute), items))
    if not isinstance(start, int | float):  # lists or strings: each sum copies the total
        _spend(len(items) * _footprint([start, items]), "a sum of sequences")
    return sum(items, start)


# Filters that build as much as their arguments say, bounded; taking the context keeps them
# from running at compile time, outside the render's allowance.
_BOUNDED_FILTERS: dict[str, Callable[..., Any]] = {
    "center": _center,
    "indent": _indent,
    "format": _format,
    "wordwrap": _wordwrap,
    "replace": _replace,
    "join": _join,
    "batch": _batch,
    "tojson": _tojson,
    "sum": _sum,
}


def _concat(parts: Iterable[str]) -> str:
    """Join text the template builds (``~``, a macro's or a block's output) once the total is
    known to be within bounds."""
    pieces = list(parts)
    _bounded(sum(map(len, pieces)), "a text")
    return "".join(pieces)


class _BoundedCodeGenerator(CodeGenerator):
    """Compiles ``~`` into a bounded join."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:  # noqa: N802 - Jinja's name
        """``a ~ b`` as ``environment.concat(map(str, (a, b)))``; in autoescaped code, Jinja's
        own join, bounded once built (its parts are bounded, and as many as the source has)."""
        if frame.eval_ctx.volatile or frame.eval_ctx.autoescape:
            self.write("environment.concat((")
            super().visit_Concat(node, frame)
            self.write(",))")
            return
        self.write("environment.concat(map(str, (")
        for part in node.nodes:
            self.visit(part, frame)
            self.write(", ")
        self.write(")))")


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, unable to build a string, list or number that would exhaust memory in
    one C call (where no time check can run): repetitions, powers, concatenations, ``%`` and
    ``format`` widths, paddings, joins and replacements are measured before they run, and
    refused over MAX_RENDERED_CHARS (and, together, over MAX_AMPLIFIED_CHARS a render)."""

    intercepted_binops = frozenset(["*", "**", "+", "%"])
    code_generator_class = _BoundedCodeGenerator
    concat = staticmethod(_concat)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters.update(_BOUNDED_FILTERS)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """Refuse an operation whose result would be huge."""
        if operator == "*":
            _check_product(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "+" and isinstance(left, str | list | tuple):
            _bounded(_footprint((left, right)), "a concatenation")
        elif operator == "%" and isinstance(left, str):
            _spend(_printf_size(left, right), "a format width")
        return super().call_binop(context, operator, left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Call ``obj``; a string method that pads, joins or replaces is measured first."""
        # Markup's methods are Python ones (they escape their arguments), str's built in.
        if isinstance(obj, BuiltinMethodType | MethodType):
            target, name = obj.__self__, obj.__name__
            if name in _STRING_METHODS and isinstance(target, str | bytes):
                if name == "join" and args:
                    args = (list(args[0]), *args[1:])  # measured, then joined, once
                size = _STRING_METHODS[name](target, args, kwargs)
                _spend(size, f"a {type(target).__name__}.{name}")
            elif name == "to_bytes" and isinstance(target, int):
                _spend(_count(args[0] if args else kwargs.get("length", 1)), "an int.to_bytes")
        return super().call(context, obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """A string's ``format`` or ``format_map``, refusing widths over the limit."""
        if super().wrap_str_format(value) is None:
            return None
        text: str = value.__self__
        formatter = (
            _BoundedEscapeFormatter(self, escape=text.escape)
            if isinstance(text, Markup)
            else _BoundedFormatter(self)
        )
        by_name = value.__name__ == "format_map"

        def bounded_format(*args: Any, **kwargs: Any) -> str:
            if not by_name:
                return type(text)(formatter.vformat(text, args, kwargs))
            if kwargs or len(args) != 1:
                raise TypeError("format_map() takes exactly one mapping")
            return type(text)(formatter.vformat(text, (), args[0]))

        return bounded_format


def _check_product(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS:
            raise _RenderBoundError("a product in the template is too large")
        return
    for sequence, count in ((left, right), (right, left)):
        if isinstance(sequence, str | list | tuple) and isinstance(count, int):
            _spend(_footprint(sequence) * count, "a repetition")


def _check_power(left: Any, right: Any) -> None:
    if isinstance(right, int) and (
        abs(right) > 1024
        or (isinstance(left, int) and abs(left).bit_length() * right > MAX_INT_BITS)
    ):
        raise _RenderBoundError("a power in the template is too large")


def _deadline_tracer(deadline: float, timeout_s: float) -> Callable[[FrameType, str, Any], Any]:
    """A trace function that checks the deadline on every call, and on every line of the
    template's own compiled code (where its loops run); other frames run untraced."""

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        if time.monotonic() > deadline:
            raise _RenderBoundError(f"the template did not finish within {timeout_s:g} s")
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
        environment = _BoundedEnvironment(trim_blocks=True, lstrip_blocks=True)
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
    ) -> str:
        """Render messages (``role``, ``content`` and what else the template reads) and the
        ``tools`` (OpenAI's shape, for a template with a tool syntax) with the generation prompt
        added; a template's own error, or one that runs past its render timeout or
        ``MAX_RENDERED_CHARS`` (in all, or in one padding, format width, repetition, join...),
        rejects the request.

        Blocking, and traced line by line against the deadline: call it from a worker thread.
        """
        chunks = self._template.generate(
            messages=list(messages),
            tools=list(tools) if tools else None,
            add_generation_prompt=True,
            bos_token=self._bos_token,
            eos_token=self._eos_token,
        )
        try:
            return _collect_traced(chunks, self._render_timeout_s)
        except (TemplateRejectedError, jinja2.TemplateError) as error:
            raise InvalidArgumentError(
                _FIELD, f"the model's chat template rejected the conversation: {error}"
            ) from error
        except (_RenderBoundError, RecursionError, MemoryError) as error:
            raise InvalidArgumentError(
                _FIELD,
                f"the chat template could not render this conversation ({error or 'recursion'}); "
                "shorten the conversation, or fix the template (state.chat_template_override)",
            ) from error


def _collect_traced(chunks: Iterator[str], timeout_s: float) -> str:
    """Join the rendered chunks, tracing every line the template runs against a deadline
    ``timeout_s`` from now (this frame itself is not traced, so the trace is always put back)."""
    previous = sys.gettrace()
    allowance = _ALLOWANCE.set(_Allowance())
    sys.settrace(_deadline_tracer(time.monotonic() + timeout_s, timeout_s))
    try:
        parts: list[str] = []
        size = 0
        for chunk in chunks:
            size += len(chunk)
            if size > MAX_RENDERED_CHARS:
                raise _RenderBoundError(f"the output passed {MAX_RENDERED_CHARS} characters")
            parts.append(chunk)
        return "".join(parts)
    finally:
        sys.settrace(previous)
        _ALLOWANCE.reset(allowance)
