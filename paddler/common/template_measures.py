"""How much a chat template's call would build, measured before it runs: widths, paddings,
repetitions, joins and replacements, against a cap per value and an allowance per render."""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from paddler.common.generation_input import MAX_INPUT_BYTES

MAX_RENDERED_CHARS = 4 * MAX_INPUT_BYTES
# What one render may build with widths, paddings, repetitions, joins and replacements, all
# together (each alone stays within MAX_RENDERED_CHARS), and how large an integer may grow.
MAX_AMPLIFIED_CHARS = 4 * MAX_RENDERED_CHARS
MAX_INT_BITS = 1 << 16


class RenderBoundError(Exception):
    """The template ran out of time or output, or asked one call for too much."""


class _Allowance:
    """What one render may still build with widths, paddings, repetitions and the like."""

    def __init__(self) -> None:
        self.left = MAX_AMPLIFIED_CHARS


_ALLOWANCE: ContextVar[_Allowance | None] = ContextVar("template_allowance", default=None)


@contextmanager
def render_allowance() -> Iterator[None]:
    """One render's allowance (``MAX_AMPLIFIED_CHARS``) for the ``with`` block."""
    token = _ALLOWANCE.set(_Allowance())
    try:
        yield
    finally:
        _ALLOWANCE.reset(token)


def bounded(size: int, what: str) -> None:
    """Refuse, before it is built, a value of ``size`` characters (or items) over the limit."""
    if size > MAX_RENDERED_CHARS:
        raise RenderBoundError(
            f"{what} in the template asks for {size} characters, over the limit of "
            f"{MAX_RENDERED_CHARS}"
        )


def spend(size: int, what: str) -> None:
    """``_bounded``, and count ``size`` against the render's allowance."""
    bounded(size, what)
    allowance = _ALLOWANCE.get()
    if allowance is not None:
        allowance.left -= max(size, 0)
        if allowance.left < 0:
            raise RenderBoundError(
                f"{what}: the template's widths, paddings and repetitions together passed "
                f"{MAX_AMPLIFIED_CHARS} characters"
            )


def count(value: object) -> int:
    """A width or count as given (a bool is an int); 0 for anything else (which the call
    itself refuses)."""
    return value if isinstance(value, int) else 0


def footprint(value: object, indent: int = 0) -> int:
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


def printf_size(fmt: str, values: object) -> int:
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
                size += abs(count(positional[index] if index < len(positional) else 0))
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


def format_spec_size(spec: str) -> int:
    """Characters a ``str.format`` field's spec (its width, its precision) asks for, at
    least."""
    return sum(_digits(number) for number in re.findall(r"\d+", spec))


def _padded_size(text: str | bytes, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    return max(len(text), count(args[0])) if args else len(text)


def _tabs_size(text: str | bytes, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    tab_size = count(args[0] if args else kwargs.get("tabsize", 8))
    tabs = text.count("\t") if isinstance(text, str) else text.count(b"\t")
    return len(text) + tabs * max(tab_size, 0)


def replaced_size(text: str | bytes, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    if len(args) < 2:
        return len(text)
    old, new = args[0], args[1]
    found = text.count(old) + (0 if old else 1)  # "" is found between every two characters
    limit = count(args[2]) if len(args) > 2 else -1
    found = found if limit < 0 else min(found, limit)
    return len(text) + found * max(len(new) - len(old), 0)


def joined_size(text: str | bytes, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    items = args[0] if args else ()
    return footprint(items) + len(text) * max(len(items) - 1, 0)


def _translated_size(text: str | bytes, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    table = args[0] if args else None
    if not isinstance(text, str) or not isinstance(table, dict):
        return len(text)
    longest = max((len(v) for v in table.values() if isinstance(v, str)), default=1)
    return len(text) * max(longest, 1)


_Estimate = Callable[[str | bytes, tuple[Any, ...], dict[str, Any]], int]
# What a str (or bytes) method called from a template builds, before it builds it.
STRING_METHODS: dict[str, _Estimate] = {
    "center": _padded_size,
    "ljust": _padded_size,
    "rjust": _padded_size,
    "zfill": _padded_size,
    "expandtabs": _tabs_size,
    "replace": replaced_size,
    "join": joined_size,
    "translate": _translated_size,
}
