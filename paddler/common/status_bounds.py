"""What an agent may report to the balancer: the limits on its registration and its status
snapshots, checked where they arrive, before anything reads them.

The balancer sizes tables by the slot count, routes by the timings and keeps the strings, so
an absurd figure must close the agent's registration rather than freeze or bloat the balancer.
The limits are generous for any real agent.
"""

from __future__ import annotations

from collections.abc import Sequence

from paddler.common.addresses import split_host_port
from paddler.common.desired_state import MAX_CONTEXT_SIZE
from paddler.common.errors import InvalidArgumentError
from paddler.common.placement import MAX_GPU_LAYERS, MAX_UBATCH_SIZE
from paddler.common.prefix_chain import MAX_PREFIX_HASHES
from paddler.v1 import agent_registry_pb2, status_pb2

MAX_SLOTS = 1024
"""The most slots an agent may have (``paddler agent --slots``), so also the most stream counts
it may report step timings for."""

MAX_TIMING_SECONDS = 3600.0
"""The longest decode step, or prefill time per prompt token, an agent may report: an hour."""

MAX_ISSUES = 32
"""The most issues one snapshot may carry."""

MAX_ISSUE_CHARS = 4096
"""The longest issue, in characters."""

MAX_NAME_CHARS = 253
"""The longest agent name: a DNS name's length (an agent is named after its host by default)."""

MAX_ADDRESS_CHARS = 261
"""The longest registration address: a 253-character host, IPv6 brackets, ``:`` and a port."""

MAX_LABEL_CHARS = 512
"""The longest model name, chat template name or desired-state epoch."""

MAX_PORT = 65535
"""The highest TCP port."""

MAX_DEVICES_REPORTED = 64
"""The most devices one snapshot may list (llama.cpp splits a model over 16 at the most)."""

_PHASES = frozenset(status_pb2.StatePhase.values())
_CONTEXT_SOURCES = frozenset(status_pb2.ContextSource.values())


def _out_of_range(value: float, low: float, high: float, field: str) -> InvalidArgumentError:
    return InvalidArgumentError(field, f"must be within {low}..{high}, got {value}")


def _check_range(value: float, low: float, high: float, field: str) -> None:
    """``low <= value <= high`` (NaN never is)."""
    if not low <= value <= high:
        raise _out_of_range(value, low, high, field)


def _check_not_negative(value: int, field: str) -> None:
    if value < 0:
        raise InvalidArgumentError(field, f"must not be negative, got {value}")


def _check_length(text: str, high: int, field: str, low: int = 0) -> None:
    if not low <= len(text) <= high:
        raise InvalidArgumentError(field, f"must have {low}..{high} characters, got {len(text)}")


def _check_entries(count: int, high: int, field: str) -> None:
    if count > high:
        raise InvalidArgumentError(field, f"must have at most {high} entries, got {count}")


def check_registration(registration: agent_registry_pb2.AgentRegistration) -> None:
    """Raise InvalidArgumentError on the first field out of bounds: the name must have 1 to
    ``MAX_NAME_CHARS`` characters, the address be ``host:port`` (port 1 to ``MAX_PORT``) of at
    most ``MAX_ADDRESS_CHARS``."""
    _check_length(registration.name, MAX_NAME_CHARS, "registration.name", low=1)
    _check_length(registration.address, MAX_ADDRESS_CHARS, "registration.address", low=1)
    try:
        _, port = split_host_port(registration.address)
    except ValueError:
        raise InvalidArgumentError(
            "registration.address",
            "must be host:port of the agent's AgentService (an IPv6 host in brackets)",
        ) from None
    _check_range(port, 1, MAX_PORT, "registration.address")


def check_status(status: status_pb2.AgentStatus) -> None:
    """Raise InvalidArgumentError on the first field out of bounds.

    Slots: 1 to ``MAX_SLOTS``, of which 0 to all processing. A known phase. Context: 0 to
    ``MAX_CONTEXT_SIZE`` tokens per slot, a trained context not negative, a known source.
    Step timings: at most ``MAX_SLOTS``, each for a stream count of 1 to ``MAX_SLOTS`` not
    given before, with a step time of 0 to ``MAX_TIMING_SECONDS`` (a simulated agent's may be
    0, which routing takes as unmeasured). Prefill time per token: 0 to
    ``MAX_TIMING_SECONDS``. Backlog, download and prompt cache sizes: not negative. Issues: at most
    ``MAX_ISSUES`` of at most ``MAX_ISSUE_CHARS`` each. Strings: at most ``MAX_NAME_CHARS``
    (the name) or ``MAX_LABEL_CHARS``. Placement: at most ``MAX_DEVICES_REPORTED`` devices,
    layers and n_ubatch within their bounds.
    """
    _check_range(status.slots_total, 1, MAX_SLOTS, "status.slots_total")
    _check_range(status.slots_processing, 0, status.slots_total, "status.slots_processing")
    if status.phase not in _PHASES:
        raise InvalidArgumentError("status.phase", f"unknown phase {status.phase}")
    _check_range(status.context_size, 0, MAX_CONTEXT_SIZE, "status.context_size")
    _check_not_negative(status.trained_context_size, "status.trained_context_size")
    if status.context_source not in _CONTEXT_SOURCES:
        raise InvalidArgumentError(
            "status.context_source", f"unknown context source {status.context_source}"
        )
    _check_step_timings(status.step_timings)
    _check_range(
        status.prefill_seconds_per_token, 0, MAX_TIMING_SECONDS, "status.prefill_seconds_per_token"
    )
    _check_range(
        status.engine_stalled_seconds, 0, MAX_TIMING_SECONDS, "status.engine_stalled_seconds"
    )
    _check_not_negative(status.prefill_backlog_tokens, "status.prefill_backlog_tokens")
    _check_not_negative(status.prompt_cache_bytes, "status.prompt_cache_bytes")
    _check_not_negative(status.prompt_cache_prompts, "status.prompt_cache_prompts")
    _check_entries(len(status.prefix_hashes), MAX_PREFIX_HASHES, "status.prefix_hashes")
    _check_not_negative(status.download.bytes_done, "status.download.bytes_done")
    _check_not_negative(status.download.bytes_total, "status.download.bytes_total")
    _check_entries(len(status.issues), MAX_ISSUES, "status.issues")
    for index, issue in enumerate(status.issues):
        _check_length(issue, MAX_ISSUE_CHARS, f"status.issues[{index}]")
    _check_length(status.name, MAX_NAME_CHARS, "status.name")
    _check_length(status.model, MAX_LABEL_CHARS, "status.model")
    _check_length(status.chat_template, MAX_LABEL_CHARS, "status.chat_template")
    _check_length(status.applied_state_epoch, MAX_LABEL_CHARS, "status.applied_state_epoch")
    _check_placement(status.placement)


def _check_placement(placement: status_pb2.ModelPlacement) -> None:
    _check_entries(len(placement.devices), MAX_DEVICES_REPORTED, "status.placement.devices")
    for index, device in enumerate(placement.devices):
        field = f"status.placement.devices[{index}]"
        _check_length(device.name, MAX_LABEL_CHARS, f"{field}.name")
        _check_length(device.description, MAX_LABEL_CHARS, f"{field}.description")
        _check_range(device.layers, 0, MAX_GPU_LAYERS + 1, f"{field}.layers")
    for name in ("flash_attention", "cache_type_k", "cache_type_v", "load_mode"):
        _check_length(getattr(placement, name), MAX_LABEL_CHARS, f"status.placement.{name}")
    _check_range(placement.ubatch_size, 0, MAX_UBATCH_SIZE, "status.placement.ubatch_size")


def _check_step_timings(timings: Sequence[status_pb2.StepTiming]) -> None:
    _check_entries(len(timings), MAX_SLOTS, "status.step_timings")
    seen: set[int] = set()
    for index, timing in enumerate(timings):
        streams, seconds = timing.streams, timing.step_seconds
        if not 1 <= streams <= MAX_SLOTS or streams in seen:
            raise InvalidArgumentError(
                f"status.step_timings[{index}].streams",
                f"must be a stream count within 1..{MAX_SLOTS} not given before, got {streams}",
            )
        if not 0 <= seconds <= MAX_TIMING_SECONDS:
            field = f"status.step_timings[{index}].step_seconds"
            raise _out_of_range(seconds, 0, MAX_TIMING_SECONDS, field)
        seen.add(streams)
