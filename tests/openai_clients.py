"""The official `openai` client against a test cluster's OpenAI API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import openai
import pytest

from tests.cluster import Cluster, cluster
from tests.processes import BalancerProcess

MODEL = "SmolLM2-135M-Instruct.Q4_1"
LOG_WAIT_S = 60.0


def client_of(c: Cluster) -> openai.OpenAI:
    """A client of ``c``'s balancer that never retries (a test sees every status)."""
    return openai.OpenAI(base_url=c.balancer.openai, api_key="unused", max_retries=0)


@contextmanager
def openai_cluster(slots: int) -> Iterator[openai.OpenAI]:
    """A client of one balancer with one agent of ``slots`` slots."""
    with cluster(("solo", slots)) as c, client_of(c) as client:
        yield client


def bad_request_param(client: openai.OpenAI, path: str, body: dict[str, object]) -> str | None:
    """POST ``body``, which must be refused with 400; the ``param`` the error names."""
    with pytest.raises(openai.BadRequestError) as raised:
        client.post(path, body=body, cast_to=object)
    assert raised.value.status_code == 400
    assert raised.value.param is None or f"400 - {raised.value.param}: " in raised.value.message
    return raised.value.param


def logged(balancer: BalancerProcess, event: str, **fields: object) -> dict[str, object]:
    """The balancer's first ``event`` record with these ``fields``, once its log shows it."""
    deadline = time.monotonic() + LOG_WAIT_S
    while time.monotonic() < deadline:
        for record in balancer.logs(event):
            if all(record.get(name) == value for name, value in fields.items()):
                return record
        time.sleep(0.02)
    raise AssertionError(f"no {event!r} line with {fields}")
