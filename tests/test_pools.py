"""Pools: one balancer, two pools of real agents (SmolLM2 in "default", Gemma 3 in "gemma");
requests by name and alias land on their pool only, each pool buffers on its own, and a
state change in one pool leaves the other serving untouched."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import openai
import pytest
from playwright.sync_api import expect

from paddler.v1 import desired_state_pb2, inference_pb2, management_pb2, status_pb2
from tests.client import COUNTING_PROMPT, prompt_request
from tests.cluster import Cluster, cluster, to_inference
from tests.metric_samples import parse_samples, value
from tests.openai_clients import client_of
from tests.panel_page import panel_page
from tests.processes import run_paddler

SMOLLM = "SmolLM2-135M-Instruct.Q4_1"
GEMMA = "gemma-3-270m-q4_k_m"
GEMMA_STATE = desired_state_pb2.DesiredState(
    model=desired_state_pb2.ModelSource(packaged="gemma3-270m"),
    defaults=desired_state_pb2.InferenceDefaults(context_size=2048),
)
WAIT_S = 120.0


@pytest.fixture(scope="module")
def pools() -> Iterator[Cluster]:
    """A balancer (buffers of one request per pool) with an agent of one slot in each pool;
    the pool "gemma" has a desired state and the alias "gemma-chat"."""
    with cluster(("smollm", 1), balancer_args=("--max-buffered-requests", "1")) as c:
        reply = c.management.SetDesiredState(
            management_pb2.SetDesiredStateRequest(
                state=GEMMA_STATE,
                pool="gemma",
                aliases=management_pb2.PoolAliases(names=["gemma-chat"]),
            )
        )
        assert reply.desired_state.pool == "gemma" and reply.desired_state.version == 1
        c.start_agent("gemma-agent", "--slots", "1", "--pool", "gemma", wait=False)
        c.wait_for(
            lambda agents: any(
                a.name == "gemma-agent" and a.ready and a.applied_state_version == 1 for a in agents
            ),
            WAIT_S,
        )
        yield c


def _generate(
    c: Cluster, model: str, max_tokens: int = 2
) -> inference_pb2.InferenceServiceGenerateResponse:
    request = to_inference(prompt_request("Hi", max_tokens=max_tokens))
    request.model = model
    return list(c.inference.Generate(request, timeout=WAIT_S))[-1]


def _pool(c: Cluster, name: str) -> management_pb2.Pool:
    listed = c.management.ListPools(management_pb2.ListPoolsRequest()).pools
    return next(pool for pool in listed if pool.name == name)


def test_requests_by_name_and_alias_land_only_on_their_pool(pools: Cluster) -> None:
    c = pools
    for model, agent, served in (
        ("gemma", "gemma-agent", GEMMA),
        ("gemma-chat", "gemma-agent", GEMMA),
        (GEMMA, "gemma-agent", GEMMA),
        ("", "smollm", SMOLLM),
        ("default", "smollm", SMOLLM),
        (SMOLLM, "smollm", SMOLLM),
    ):
        summary = _generate(c, model).summary
        assert (summary.agent_name, summary.model) == (agent, served), model
    embed = inference_pb2.InferenceServiceEmbedRequest(model="gemma-chat")
    embed.input.texts.extend(["a"] * 40)  # parts of one batch: every one in the pool
    result = c.inference.Embed(embed, timeout=WAIT_S).result
    assert result.model == GEMMA and set(result.agent_names) == {"gemma-agent"}
    with client_of(c) as client:
        reply = client.chat.completions.create(
            model="gemma-chat", messages=[{"role": "user", "content": "Hi"}], max_tokens=2
        )
        assert reply.model == GEMMA
        assert client.embeddings.create(model="gemma", input=["a"]).model == GEMMA
        cards = {model.id: model for model in client.models.list()}
        assert {name: card.owned_by for name, card in cards.items()} == {
            SMOLLM: "paddler",
            GEMMA: "gemma",
            "gemma": "gemma",
            "gemma-chat": "gemma",
        }
        assert client.models.retrieve("gemma-chat").owned_by == "gemma"
        with pytest.raises(openai.NotFoundError) as raised:
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "Hi"}]
            )
        assert raised.value.code == "model_not_found"
        for name in ("gemma", "gemma-chat", SMOLLM, GEMMA):
            assert name in raised.value.message
    with pytest.raises(grpc.RpcError) as refused:
        _generate(c, "gpt-4o")
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert "gemma-chat" in str(refused.value.details())
    with pytest.raises(grpc.RpcError) as too_long:
        _generate(c, "m" * 300)
    assert too_long.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "model" in str(too_long.value.details())


def test_a_busy_pool_never_delays_or_fills_another(pools: Cluster) -> None:
    c = pools
    # The gemma pool's one slot is held, and its one-request buffer filled.
    long = to_inference(prompt_request(COUNTING_PROMPT, max_tokens=2000))
    long.model = "gemma"
    holding = c.inference.Generate(long, timeout=WAIT_S)
    assert next(holding).WhichOneof("event") == "text"
    waiting = c.inference.Generate(long, timeout=WAIT_S)
    deadline = time.monotonic() + WAIT_S
    while _pool(c, "gemma").buffered != 1:
        assert time.monotonic() < deadline, "the second gemma request never buffered"
        time.sleep(0.05)
    try:
        with pytest.raises(grpc.RpcError) as full:
            _generate(c, "gemma-chat")
        assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "in the pool 'gemma'" in str(full.value.details())
        # The default pool serves on: its slot is free, and its buffer is its own.
        for _ in range(3):
            assert _generate(c, "").summary.agent_name == "smollm"
        assert _pool(c, "default").buffered == 0
        assert _pool(c, "gemma").buffered == 1
        buffered = c.management.GetBufferedRequests(
            management_pb2.GetBufferedRequestsRequest(pool="gemma")
        )
        assert (buffered.count, buffered.capacity) == (1, 1)
    finally:
        holding.cancel()
        waiting.cancel()
    deadline = time.monotonic() + WAIT_S
    while (pool := _pool(c, "gemma")).slots_free != 1 or pool.buffered:
        assert time.monotonic() < deadline, f"the gemma pool never freed: {pool}"
        time.sleep(0.05)


def test_a_state_change_in_one_pool_leaves_the_other_serving(pools: Cluster) -> None:
    c = pools
    gemma_before = next(a for a in c.list_agents() if a.pool == "gemma")
    version = c.management.SetDesiredState(
        management_pb2.SetDesiredStateRequest(
            state=desired_state_pb2.DesiredState(
                model=desired_state_pb2.ModelSource(packaged="smollm2-135m"),
                defaults=desired_state_pb2.InferenceDefaults(context_size=384),
            )
        )
    ).desired_state.version
    served = 0
    deadline = time.monotonic() + WAIT_S
    while True:
        agents = {agent.pool: agent for agent in c.list_agents()}
        gemma = agents["gemma"]
        # The gemma pool is never touched: same state, never taken out of service.
        assert gemma.ready and not gemma.rolling
        assert gemma.applied_state_version == gemma_before.applied_state_version
        summary = _generate(c, "gemma").summary
        assert summary.agent_name == "gemma-agent"
        served += 1
        default = agents["default"]
        if (
            default.applied_state_version == version
            and default.phase == status_pb2.STATE_PHASE_APPLIED
            and default.ready
        ):
            break
        assert time.monotonic() < deadline, "the default pool never applied its state"
    assert served >= 1
    assert default.context_size == 384
    shown = _pool(c, "default")
    assert shown.desired_state.version == version and shown.rollout.applied == 1
    assert _pool(c, "gemma").desired_state.version == 1


def test_pools_are_listed_and_measured(pools: Cluster) -> None:
    c = pools
    _generate(c, "gemma")
    gemma = _pool(c, "gemma")
    assert list(gemma.aliases) == ["gemma-chat"]
    assert (gemma.agents, gemma.serving, gemma.slots_total) == (1, 1, 1)
    assert list(gemma.models) == [GEMMA]
    assert gemma.rollout.applied == 1 and not gemma.rollout.failure
    address = c.balancer.management
    table = run_paddler("pools", "--address", address)
    assert table.returncode == 0, table.stderr
    assert "gemma-chat" in table.stdout and "1/1" in table.stdout
    shown = run_paddler("state", "show", "--address", address)
    assert shown.returncode == 0, shown.stderr
    every = json.loads(shown.stdout)
    assert set(every["pools"]) == {"default", "gemma"}
    assert every["pools"]["gemma"]["aliases"] == ["gemma-chat"]
    assert every["pools"]["gemma"]["state"]["model"] == {"packaged": "gemma3-270m"}
    one = json.loads(run_paddler("state", "show", "--pool", "gemma", "--address", address).stdout)
    assert one["pool"] == "gemma" and one["version"] == "1"
    samples = parse_samples(httpx.get(f"{c.balancer.web}/metrics", timeout=10).text)
    assert value(samples, "paddler_pool_agents", pool="gemma", state="serving") == 1
    assert value(samples, "paddler_pool_slots", pool="gemma", state="total") == 1
    assert value(samples, "paddler_pool_buffered_requests", pool="gemma") == 0
    served = {"pool": "gemma", "kind": "generate", "outcome": "served"}
    assert value(samples, "paddler_pool_requests_total", **served) >= 1
    assert value(samples, "paddler_pool_time_to_first_token_seconds_count", pool="gemma") >= 1


def test_pool_names_and_aliases_are_checked(pools: Cluster) -> None:
    c = pools

    def refused(request: management_pb2.SetDesiredStateRequest) -> str:
        with pytest.raises(grpc.RpcError) as raised:
            c.management.SetDesiredState(request)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        return str(raised.value.details())

    assert "pool" in refused(
        management_pb2.SetDesiredStateRequest(state=GEMMA_STATE, pool="Big_Pool")
    )
    taken = management_pb2.PoolAliases(names=["gemma-chat"])
    assert "already names the pool 'gemma'" in refused(
        management_pb2.SetDesiredStateRequest(state=GEMMA_STATE, pool="other", aliases=taken)
    )
    bad = management_pb2.PoolAliases(names=["fine", "not fine"])
    assert "aliases.names[1]" in refused(
        management_pb2.SetDesiredStateRequest(state=GEMMA_STATE, pool="other", aliases=bad)
    )
    with pytest.raises(grpc.RpcError) as busy:
        c.management.DeletePool(management_pb2.DeletePoolRequest(pool="gemma"))
    assert busy.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as unknown:
        c.management.DeletePool(management_pb2.DeletePoolRequest(pool="nothing"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as default:
        c.management.DeletePool(management_pb2.DeletePoolRequest(pool="default"))
    assert default.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # A pool no agent is in can go, and its names with it.
    spare = c.management.SetDesiredState(
        management_pb2.SetDesiredStateRequest(
            state=GEMMA_STATE, pool="spare", aliases=management_pb2.PoolAliases(names=["extra"])
        )
    ).desired_state
    assert _pool(c, "spare").desired_state == spare
    deleted = run_paddler("state", "delete", "--pool", "spare", "--address", c.balancer.management)
    assert deleted.returncode == 0, deleted.stderr
    assert "spare" not in {
        pool.name for pool in c.management.ListPools(management_pb2.ListPoolsRequest()).pools
    }
    with pytest.raises(grpc.RpcError) as gone:
        _generate(c, "extra")
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


def test_an_agent_pool_name_is_checked() -> None:
    result = run_paddler("agent", "--pool", "Not A Pool", "--balancer", "127.0.0.1:1")
    assert result.returncode == 2
    assert "--pool" in result.stderr and "a-z, 0-9" in result.stderr


def test_the_panel_shows_and_edits_pools(pools: Cluster, tmp_path: Path) -> None:
    c = pools
    with panel_page(c.balancer.web) as (page, errors):
        expect(page.locator("#pools tr[data-pool='gemma']")).to_contain_text("gemma-chat")
        expect(page.locator("#pools tr[data-pool='default']")).to_contain_text(SMOLLM)
        expect(page.locator("#agents tr[data-agent='gemma-agent']")).to_contain_text("gemma")
        # The form edits the pool named in it: its state and aliases come in.
        page.fill("#state-pool", "gemma")
        page.press("#state-pool", "Tab")  # leaving the field changes it
        expect(page.locator("#state-aliases")).to_have_value("gemma-chat")
        expect(page.locator("#source-value")).to_have_value("gemma3-270m")
        # New names for the same state: the version stays, nothing rolls out.
        page.fill("#state-aliases", "gemma-chat, g3")
        page.click("#state-form button[type=submit]")
        message = page.locator("#state-message")
        expect(message).to_have_text("Applied as v1 in the pool gemma.")
        assert list(_pool(c, "gemma").aliases) == ["gemma-chat", "g3"]
        page.fill("#state-pool", "Bad_Pool")
        page.press("#state-pool", "Tab")
        expect(message).to_contain_text("is not a pool name")
        # The playground asks the pool the model field names.
        page.fill("#model", "g3")
        page.fill("#prompt", "Hi")
        page.fill("#max-tokens", "2")
        page.click("#prompt-form button[type=submit]")
        expect(page.locator("#summary")).to_contain_text(f"gemma-agent · {GEMMA}")
        page.fill("#model", "no-such-model")
        page.fill("#prompt", "Hi")
        page.click("#prompt-form button[type=submit]")
        expect(page.locator("#summary")).to_contain_text("'no-such-model' is not served here")
        page.screenshot(path=tmp_path / "pools.png", full_page=True)
        assert errors == []
