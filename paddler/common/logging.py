"""Logging setup: JSON lines when stderr is not a terminal, coloured console otherwise.

structlog's loggers and the standard library's (gRPC, huggingface_hub, ``warnings``) all end
in one handler on the root logger, whose ``ProcessorFormatter`` renders every record alike.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(level: str = "info", json: bool | None = None) -> None:
    """Configure structlog and stdlib logging for the whole process (logs go to stderr)."""
    as_json = not sys.stderr.isatty() if json is None else json
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # ConsoleRenderer formats exc_info itself; JSON needs it as a string first.
    final: list[structlog.typing.Processor] = (
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
        if as_json
        else [structlog.dev.ConsoleRenderer()]
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
        )
    )
    logging.basicConfig(handlers=[handler], level=numeric_level, force=True)
    logging.captureWarnings(True)
    _drop_huggingface_handler()


def _drop_huggingface_handler() -> None:
    """huggingface_hub gives its logger a plain-text handler on import; the root one suffices."""
    try:
        from huggingface_hub.utils import logging as hub_logging  # noqa: PLC0415 - agent extra
    except ImportError:
        return
    hub = hub_logging.get_logger()
    for old in hub.handlers[:]:
        hub.removeHandler(old)
