"""The sandbox chat templates render in, unable to build a string, list or number that would
exhaust memory in one C call: widths, paddings, repetitions, joins, replacements, powers and
concatenations are measured before they run."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from types import BuiltinMethodType, MethodType
from typing import Any

from jinja2 import filters, nodes, pass_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from markupsafe import EscapeFormatter, Markup

from paddler.common.template_measures import (
    MAX_INT_BITS,
    STRING_METHODS,
    RenderBoundError,
    bounded,
    count,
    footprint,
    format_spec_size,
    joined_size,
    printf_size,
    replaced_size,
    spend,
)


class _BoundedFormatter(SandboxedFormatter):
    """``str.format`` in the sandbox, refusing a width or precision over the limit."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        """Format one field once its spec (nested fields filled in) is within bounds."""
        spend(format_spec_size(format_spec), "a format width")
        return super().format_field(value, format_spec)


class _BoundedEscapeFormatter(_BoundedFormatter, EscapeFormatter):
    """The same, for a ``Markup`` string's ``format``."""


@pass_context
def _center(context: Context, value: Any, width: int = 80) -> str:
    spend(count(width), "a centring width")
    return filters.do_center(value, width)


@pass_context
def _indent(
    context: Context, s: str, width: int | str = 4, first: bool = False, blank: bool = False
) -> str:
    indentation = len(width) if isinstance(width, str) else count(width)
    lines = str(s).count("\n") + 2
    spend(len(str(s)) + lines * max(indentation, 0), "an indentation")
    return filters.do_indent(s, width, first, blank)


@pass_context
def _format(context: Context, value: Any, *args: Any, **kwargs: Any) -> str:
    spend(printf_size(str(value), kwargs or args), "a format width")
    return filters.do_format(value, *args, **kwargs)


@pass_context
def _wordwrap(context: Context, s: str, *args: Any, **kwargs: Any) -> str:
    bound = inspect.signature(filters.do_wordwrap).bind(context.environment, s, *args, **kwargs)
    joint = bound.arguments.get("wrapstring") or context.environment.newline_sequence
    text = str(s)
    spend(len(text) + (len(text) + 1) * len(joint), "a word wrap")  # a character a line, at most
    return filters.do_wordwrap(context.environment, s, *args, **kwargs)


@pass_context
def _replace(context: Context, s: str, old: str, new: str, count: int | None = None) -> str:
    size = replaced_size(str(s), (str(old), str(new), -1 if count is None else count), {})
    spend(size, "a replacement")
    return filters.do_replace(context.eval_ctx, s, old, new, count)


@pass_context
def _join(
    context: Context, value: Iterable[Any], d: str = "", attribute: str | int | None = None
) -> str:
    items = list(value)
    if attribute is not None:
        items = list(map(filters.make_attrgetter(context.environment, attribute), items))
    spend(joined_size(str(d), (items,), {}), "a join")
    return filters.sync_do_join(context.eval_ctx, items, d)


@pass_context
def _batch(
    context: Context, value: Iterable[Any], linecount: int, fill_with: Any = None
) -> Iterator[list[Any]]:
    spend(count(linecount) if fill_with is not None else 0, "a batch's filling")
    return filters.do_batch(value, linecount, fill_with)


@pass_context
def _tojson(context: Context, value: Any, indent: int | str | None = None) -> Markup:
    if indent is not None:
        width = len(indent) if isinstance(indent, str) else max(count(indent), 0)
        spend(footprint(value, width), "a JSON indentation")
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
        spend(len(items) * footprint([start, items]), "a sum of sequences")
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
    bounded(sum(map(len, pieces)), "a text")
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


class BoundedEnvironment(ImmutableSandboxedEnvironment):
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
            bounded(footprint((left, right)), "a concatenation")
        elif operator == "%" and isinstance(left, str):
            spend(printf_size(left, right), "a format width")
        return super().call_binop(context, operator, left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Call ``obj``; a string method that pads, joins or replaces is measured first."""
        # Markup's methods are Python ones (they escape their arguments), str's built in.
        if isinstance(obj, BuiltinMethodType | MethodType):
            target, name = obj.__self__, obj.__name__
            if name in STRING_METHODS and isinstance(target, str | bytes):
                if name == "join" and args:
                    args = (list(args[0]), *args[1:])  # measured, then joined, once
                size = STRING_METHODS[name](target, args, kwargs)
                spend(size, f"a {type(target).__name__}.{name}")
            elif name == "to_bytes" and isinstance(target, int):
                spend(count(args[0] if args else kwargs.get("length", 1)), "an int.to_bytes")
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
            raise RenderBoundError("a product in the template is too large")
        return
    for sequence, times in ((left, right), (right, left)):
        if isinstance(sequence, str | list | tuple) and isinstance(times, int):
            spend(footprint(sequence) * times, "a repetition")


def _check_power(left: Any, right: Any) -> None:
    if isinstance(right, int) and (
        abs(right) > 1024
        or (isinstance(left, int) and abs(left).bit_length() * right > MAX_INT_BITS)
    ):
        raise RenderBoundError("a power in the template is too large")
