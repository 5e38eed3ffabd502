"""Flags that more than one server command takes."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

GracePeriodOption = Annotated[
    float,
    typer.Option(
        min=0,
        envvar="PADDLER_GRACE_PERIOD",
        help="Seconds in-flight streams get to finish after SIGTERM.",
    ),
]
LogLevel = Literal["debug", "info", "warning", "error"]
LogLevelOption = Annotated[
    LogLevel,
    typer.Option(
        envvar="PADDLER_LOG_LEVEL", case_sensitive=False, help="Least severe level logged."
    ),
]
ManagementAddressOption = Annotated[
    str, typer.Option(envvar="PADDLER_MANAGEMENT_ADDRESS", help="Balancer management address.")
]
DEFAULT_MANAGEMENT_ADDRESS = "127.0.0.1:50053"
