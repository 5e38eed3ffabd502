"""Pools and their names: a pool is a group of agents serving one desired state; requests name
it (or one of its aliases) as their model."""

from __future__ import annotations

import re
from collections.abc import Sequence

from paddler.common.errors import InvalidArgumentError

DEFAULT_POOL = "default"
"""The pool of agents started without ``--pool``, and of requests that name no model."""

MAX_ALIASES = 16
"""The most aliases a pool may have."""

MAX_POOLS = 64
"""The most pools a balancer keeps a desired state for."""

_POOL_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_ALIAS = re.compile(r"[A-Za-z0-9._:/-]{1,128}")


def pool_of(name: str) -> str:
    """``name``, or the default pool for "" (a message from before pools)."""
    return name or DEFAULT_POOL


def check_pool_name(name: str, field: str) -> str:
    """``name`` ("" is the default pool), or InvalidArgumentError naming ``field`` when it is not
    a DNS label (a pool names a Kubernetes Deployment and a metrics label)."""
    name = pool_of(name)
    if not _POOL_NAME.fullmatch(name):
        raise InvalidArgumentError(
            field,
            f"{name[:80]!r} is not a pool name: use 1 to 63 of a-z, 0-9 and '-', starting and "
            "ending with a letter or digit",
        )
    return name


def check_aliases(aliases: Sequence[str], field: str) -> list[str]:
    """The aliases, or InvalidArgumentError naming the first bad one."""
    if len(aliases) > MAX_ALIASES:
        raise InvalidArgumentError(field, f"at most {MAX_ALIASES} aliases, got {len(aliases)}")
    for index, alias in enumerate(aliases):
        if not _ALIAS.fullmatch(alias):
            raise InvalidArgumentError(
                f"{field}[{index}]",
                f"{alias[:80]!r} is not an alias: use 1 to 128 of A-Z, a-z, 0-9 and '.-_:/'",
            )
    if len(set(aliases)) != len(aliases):
        raise InvalidArgumentError(field, "an alias is given twice")
    return list(aliases)
