"""The limits on what an agent reports: each bound at its edge, and what real agents send."""

from __future__ import annotations

import math
from typing import Any

import pytest

from paddler.balancer.agent_speed import AgentSpeed
from paddler.common.errors import InvalidArgumentError
from paddler.common.status_bounds import (
    MAX_ADDRESS_CHARS,
    MAX_ISSUE_CHARS,
    MAX_ISSUES,
    MAX_LABEL_CHARS,
    MAX_NAME_CHARS,
    MAX_SLOTS,
    MAX_TIMING_SECONDS,
    check_registration,
    check_status,
)
from paddler.simulation.simulated_agent import SimulatedAgent
from paddler.simulation.simulated_speed import SimulatedSpeed
from paddler.v1 import agent_registry_pb2, status_pb2


def _timings(*pairs: tuple[int, float]) -> list[status_pb2.StepTiming]:
    return [status_pb2.StepTiming(streams=s, step_seconds=t) for s, t in pairs]


def _status(**fields: Any) -> status_pb2.AgentStatus:
    """A valid snapshot of a 4-slot agent with one timing, ``fields`` changed."""
    valid: dict[str, Any] = {
        "name": "a",
        "slots_total": 4,
        "ready": True,
        "phase": status_pb2.STATE_PHASE_APPLIED,
        "step_timings": _timings((1, 0.02)),
    }
    return status_pb2.AgentStatus(**(valid | fields))


def _violation(check: object) -> str:
    """The field named by the InvalidArgumentError ``check()`` raises."""
    assert callable(check)
    with pytest.raises(InvalidArgumentError) as raised:
        check()
    (violation,) = raised.value.violations
    return violation.field


ALLOWED = {
    "one slot": _status(slots_total=1, slots_processing=1),
    "the most slots, all busy": _status(slots_total=MAX_SLOTS, slots_processing=MAX_SLOTS),
    "a timing per slot": _status(
        slots_total=MAX_SLOTS, step_timings=_timings(*((n, 0.01) for n in range(1, 1025)))
    ),
    "a zero step time": _status(step_timings=_timings((1, 0.0))),
    "the longest step": _status(step_timings=_timings((1, MAX_TIMING_SECONDS))),
    "no timings": _status(step_timings=[]),
    "the slowest prefill": _status(prefill_seconds_per_token=MAX_TIMING_SECONDS),
    "the most issues": _status(issues=["x" * MAX_ISSUE_CHARS] * MAX_ISSUES),
    "the longest strings": _status(
        name="n" * MAX_NAME_CHARS,
        model="m" * MAX_LABEL_CHARS,
        chat_template="c" * MAX_LABEL_CHARS,
        applied_state_epoch="e" * MAX_LABEL_CHARS,
    ),
    "no name in the snapshot": _status(name=""),
}

REFUSED = {
    "no slots": (_status(slots_total=0), "status.slots_total"),
    "too many slots": (_status(slots_total=MAX_SLOTS + 1), "status.slots_total"),
    "int32 max slots": (_status(slots_total=2**31 - 1), "status.slots_total"),
    "busy below 0": (_status(slots_processing=-1), "status.slots_processing"),
    "busy above total": (_status(slots_processing=5), "status.slots_processing"),
    "unknown phase": (_status(phase=7), "status.phase"),
    "too many timings": (
        _status(step_timings=_timings(*((n, 0.01) for n in range(1, MAX_SLOTS + 2)))),
        "status.step_timings",
    ),
    "zero streams": (_status(step_timings=_timings((0, 0.1))), "status.step_timings[0].streams"),
    "too many streams": (
        _status(step_timings=_timings((1, 0.1), (MAX_SLOTS + 1, 0.1))),
        "status.step_timings[1].streams",
    ),
    "a stream count twice": (
        _status(step_timings=_timings((2, 0.1), (2, 0.2))),
        "status.step_timings[1].streams",
    ),
    "nan step": (
        _status(step_timings=_timings((1, math.nan))),
        "status.step_timings[0].step_seconds",
    ),
    "inf step": (
        _status(step_timings=_timings((1, math.inf))),
        "status.step_timings[0].step_seconds",
    ),
    "negative step": (
        _status(step_timings=_timings((1, -0.1))),
        "status.step_timings[0].step_seconds",
    ),
    "step over an hour": (
        _status(step_timings=_timings((1, MAX_TIMING_SECONDS * 2))),
        "status.step_timings[0].step_seconds",
    ),
    "nan prefill": (
        _status(prefill_seconds_per_token=math.nan),
        "status.prefill_seconds_per_token",
    ),
    "negative prefill": (
        _status(prefill_seconds_per_token=-1e-9),
        "status.prefill_seconds_per_token",
    ),
    "negative backlog": (_status(prefill_backlog_tokens=-1), "status.prefill_backlog_tokens"),
    "negative context": (_status(context_size=-1), "status.context_size"),
    "a context over the bound": (_status(context_size=(1 << 20) + 1), "status.context_size"),
    "negative trained context": (
        _status(trained_context_size=-1),
        "status.trained_context_size",
    ),
    "an unknown context source": (
        _status(context_source=99),
        "status.context_source",
    ),
    "negative bytes done": (
        _status(download=status_pb2.DownloadProgress(bytes_done=-1)),
        "status.download.bytes_done",
    ),
    "negative bytes total": (
        _status(download=status_pb2.DownloadProgress(bytes_total=-1)),
        "status.download.bytes_total",
    ),
    "too many issues": (_status(issues=["x"] * (MAX_ISSUES + 1)), "status.issues"),
    "a long issue": (_status(issues=["ok", "x" * (MAX_ISSUE_CHARS + 1)]), "status.issues[1]"),
    "a long name": (_status(name="n" * (MAX_NAME_CHARS + 1)), "status.name"),
    "a long model": (_status(model="m" * (MAX_LABEL_CHARS + 1)), "status.model"),
    "a long template": (_status(chat_template="c" * (MAX_LABEL_CHARS + 1)), "status.chat_template"),
    "a long epoch": (
        _status(applied_state_epoch="e" * (MAX_LABEL_CHARS + 1)),
        "status.applied_state_epoch",
    ),
}


@pytest.mark.parametrize("status", ALLOWED.values(), ids=ALLOWED.keys())
def test_a_snapshot_within_bounds_passes(status: status_pb2.AgentStatus) -> None:
    check_status(status)


@pytest.mark.parametrize(("status", "field"), REFUSED.values(), ids=REFUSED.keys())
def test_a_snapshot_out_of_bounds_names_its_field(
    status: status_pb2.AgentStatus, field: str
) -> None:
    assert _violation(lambda: check_status(status)) == field


def test_a_simulated_agents_snapshots_pass() -> None:
    for slots in (1, 4, MAX_SLOTS):
        check_status(SimulatedAgent("sim-0", slots, SimulatedSpeed()).status())
    check_status(SimulatedAgent("sim-0", 4, SimulatedSpeed(token_s=0.0, growth=0.0)).status())


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1:50052", "[::1]:1", "agent-3.example.org:65535", f"{'h' * 253}:50052"],
)
def test_a_registration_within_bounds_passes(address: str) -> None:
    check_registration(agent_registry_pb2.AgentRegistration(name="a", address=address))


@pytest.mark.parametrize(
    ("name", "address", "field"),
    [
        ("", "127.0.0.1:1", "registration.name"),
        ("n" * (MAX_NAME_CHARS + 1), "127.0.0.1:1", "registration.name"),
        ("a", "", "registration.address"),
        ("a", "127.0.0.1", "registration.address"),
        ("a", "::1:5", "registration.address"),
        ("a", "127.0.0.1:0", "registration.address"),
        ("a", "127.0.0.1:65536", "registration.address"),
        ("a", f"{'h' * MAX_ADDRESS_CHARS}:1", "registration.address"),
    ],
)
def test_a_registration_out_of_bounds_names_its_field(name: str, address: str, field: str) -> None:
    registration = agent_registry_pb2.AgentRegistration(name=name, address=address)
    assert _violation(lambda: check_registration(registration)) == field


def test_a_speed_table_never_outgrows_the_slot_limit() -> None:
    speed = AgentSpeed.of(
        _status(
            slots_total=2**31 - 1,
            step_timings=_timings((1, 0.02), (2, math.inf), (3, math.nan)),
            prefill_seconds_per_token=math.nan,
        )
    )
    assert speed is not None
    assert len(speed.table) == MAX_SLOTS + 2
    assert speed.streams == (1,)
    assert speed.prefill_s_per_token == 0.0
    assert speed.step(MAX_SLOTS * 4) == pytest.approx(0.02 * MAX_SLOTS * 4)
