"""The agent's step timings: moving averages by stream count, prefill per prompt token."""

from __future__ import annotations

from paddler.agent.step_timings import STALE_AFTER_S, StepTimings
from paddler.v1 import status_pb2


def _filled(timings: StepTimings) -> status_pb2.AgentStatus:
    status = status_pb2.AgentStatus()
    timings.fill(status)
    return status


def test_decode_steps_are_averaged_per_stream_count() -> None:
    timings = StepTimings()
    assert not _filled(timings).step_timings
    timings.record(1, 0, 0.02, 0)
    for _ in range(200):
        timings.record(3, 0, 0.06, 0)
    status = _filled(timings)
    by_count = {t.streams: t.step_seconds for t in status.step_timings}
    assert by_count[1] == 0.02
    assert abs(by_count[3] - 0.06) < 1e-9


def test_prefill_time_is_what_a_mixed_step_took_beyond_its_decode_part() -> None:
    timings = StepTimings()
    timings.record(2, 0, 0.04, 0)
    timings.record(2, 100, 0.24, 300)  # 0.04 s of decoding, 0.2 s for 100 prompt tokens
    status = _filled(timings)
    assert abs(status.prefill_seconds_per_token - 0.002) < 1e-9
    assert status.prefill_backlog_tokens == 300
    timings.record(0, 10, 0.01, 0)  # a prefill-only step
    assert _filled(timings).prefill_seconds_per_token > 0.001


def test_a_figure_no_step_refreshed_for_long_is_left_out_and_then_measured_anew() -> None:
    now = [0.0]
    timings = StepTimings(clock=lambda: now[0])
    for _ in range(50):
        timings.record(1, 0, 0.02, 0)
    timings.record(2, 0, 0.03, 0)
    now[0] = STALE_AFTER_S - 1
    timings.record(2, 0, 0.03, 0)
    now[0] = STALE_AFTER_S + 10
    assert [t.streams for t in _filled(timings).step_timings] == [2]
    timings.record(1, 0, 0.05, 0)  # the host got slower meanwhile
    by_count = {t.streams: t.step_seconds for t in _filled(timings).step_timings}
    assert by_count == {1: 0.05, 2: 0.03}
