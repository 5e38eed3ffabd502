"""Placement options (GPU layers, split, flash attention, KV cache types, mmap, mlock,
n_ubatch): checked by the balancer and the CLI, and each one reaching llama.cpp, read back from
what llama.cpp logs while it loads the model and makes the context. This machine has no GPU:
every layer stays on the CPU whatever n_gpu_layers says (scripts/gpu_check.sh is the GPU side)."""

from __future__ import annotations

import math

import grpc
import httpx
import pytest

from paddler.v1 import desired_state_pb2, status_pb2
from tests.client import field_violations, generate, prompt_request
from tests.cluster import cluster, to_inference
from tests.metric_samples import parse_samples, value
from tests.processes import run_paddler

STORY = "Once upon a time, in a small village by the sea, there lived an old fisherman who"
P = desired_state_pb2
# SmolLM2 135M: 30 blocks and the output layer, all on the CPU here.
ALL_ON_CPU = {"CPU": 31}


def _state(placement: desired_state_pb2.Placement, batch_size: int | None = None) -> P.DesiredState:
    state = P.DesiredState(model=P.ModelSource(packaged="smollm2-135m"), placement=placement)
    if batch_size is not None:
        state.defaults.batch_size = batch_size
    return state


@pytest.mark.parametrize(
    ("placement", "batch_size", "field", "words"),
    [
        (P.Placement(n_gpu_layers=-2), None, "n_gpu_layers", "-1 (all)"),
        (P.Placement(tensor_split=[1.0, math.nan]), None, "tensor_split", "finite"),
        (P.Placement(tensor_split=[0.0, 0.0]), None, "tensor_split", "not all 0"),
        (P.Placement(tensor_split=[1.0] * 17), None, "tensor_split", "at most 16"),
        (P.Placement(main_gpu=16), None, "main_gpu", "0 to 15"),
        (P.Placement(ubatch_size=0), None, "ubatch_size", "1 to"),
        (P.Placement(ubatch_size=128), 64, "ubatch_size", "batch size"),
        (P.Placement(split_mode=99), None, "split_mode", "unknown value 99"),  # type: ignore[arg-type]
        (
            P.Placement(cache_type_v=P.KV_CACHE_TYPE_Q8_0, flash_attention=P.FLASH_ATTENTION_OFF),
            None,
            "cache_type_v",
            "needs flash attention",
        ),
    ],
)
def test_the_balancer_refuses_a_placement_that_cannot_work(
    placement: desired_state_pb2.Placement, batch_size: int | None, field: str, words: str
) -> None:
    with cluster() as c:
        with pytest.raises(grpc.RpcError) as caught:
            c.set_state(_state(placement, batch_size))
        assert field_violations(caught.value) == [f"state.placement.{field}"]
        assert words in (caught.value.details() or ""), caught.value.details()
        assert c.desired_state().version == 0


def test_the_cli_sends_a_placement_and_refuses_what_cannot_work() -> None:
    with cluster() as c:
        address = ("--address", c.balancer.management)
        refused = run_paddler(
            "state", "set", "--model", "smollm2-135m",
            "--cache-type-v", "q8_0", "--flash-attention", "off", *address,
        )  # fmt: skip
        assert refused.returncode == 1
        assert "needs flash attention" in refused.stderr
        auto = run_paddler("state", "set", "--model", "smollm2-135m", "--n-gpu-layers", "auto")
        assert auto.returncode == 2 and "each agent's own" in auto.stderr
        accepted = run_paddler(
            "state", "set", "--model", "smollm2-135m", "--n-gpu-layers", "all",
            "--split-mode", "row", "--tensor-split", "3,1", "--main-gpu", "1",
            "--flash-attention", "on", "--cache-type-k", "q8_0", "--cache-type-v", "q4_0",
            "--no-mmap", "--mlock", "--ubatch-size", "64", *address,
        )  # fmt: skip
        assert accepted.returncode == 0, accepted.stderr
        assert c.desired_state().state.placement == P.Placement(
            n_gpu_layers=-1,
            split_mode=P.SPLIT_MODE_ROW,
            tensor_split=[3.0, 1.0],
            main_gpu=1,
            flash_attention=P.FLASH_ATTENTION_ON,
            cache_type_k=P.KV_CACHE_TYPE_Q8_0,
            cache_type_v=P.KV_CACHE_TYPE_Q4_0,
            use_mmap=False,
            use_mlock=True,
            ubatch_size=64,
        )


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--cache-type-v", "q8_0", "--flash-attention", "off"], "needs flash attention"),
        (["--ubatch-size", "1024", "--batch-size", "512"], "at most --batch-size"),
        (["--n-gpu-layers", "most"], "use auto, all or 0 to"),
        (["--tensor-split", "1,x"], "give shares >= 0"),
    ],
)
def test_an_agent_refuses_placement_flags_that_cannot_work(flags: list[str], words: str) -> None:
    result = run_paddler("agent", *flags)
    assert result.returncode == 2, result.stderr
    assert words in " ".join(result.stderr.split()), result.stderr


def test_the_flags_reach_llama_cpp_and_a_state_takes_their_place() -> None:
    with cluster() as c:
        agent = c.start_agent(
            "placed", "--slots", "1", "--context-size", "256",
            "--n-gpu-layers", "all", "--split-mode", "row", "--tensor-split", "1,1",
            "--cache-type-k", "q8_0", "--cache-type-v", "q4_0", "--flash-attention", "auto",
            "--ubatch-size", "32", "--no-mmap",
        )  # fmt: skip
        placed = agent.wait_logs("model placed")[0]
        assert placed["layers_by_device"] == ALL_ON_CPU
        assert (placed["cache_type_k"], placed["cache_type_v"]) == ("q8_0", "q4_0")
        # A quantized V cache needs it: llama.cpp turned auto into enabled.
        assert placed["flash_attention"] == "enabled"
        assert (placed["ubatch_size"], placed["load_mode"]) == (32, "none")
        # The status says the same: to the balancer, `paddler agents` and Prometheus.
        [listed] = c.wait_for(lambda agents: bool(agents[0].placement.devices))
        shown = listed.placement
        assert [(device.name, device.layers) for device in shown.devices] == [("CPU", 31)]
        assert shown.devices[0].memory_total_bytes >= shown.devices[0].memory_free_bytes > 0
        assert (shown.cache_type_k, shown.cache_type_v) == ("q8_0", "q4_0")
        assert (shown.flash_attention, shown.ubatch_size, shown.load_mode) == (
            "enabled",
            32,
            "none",
        )
        table = run_paddler("agents", "--address", c.balancer.management)
        assert "q8_0/q4_0" in table.stdout, table.stdout
        samples = parse_samples(httpx.get(agent.metrics, timeout=10).text)
        memory = value(samples, "paddler_engine_device_memory_bytes", device="CPU", state="total")
        assert memory == shown.devices[0].memory_total_bytes
        # The quantized caches decode (answers may differ from f16's, so only that it runs).
        reply = generate(c.inference, to_inference(prompt_request(STORY, max_tokens=8)))
        assert reply.summary.usage.completion_tokens == 8

        # The state's placement takes the flags' place, field by field.
        placement = P.Placement(
            cache_type_k=P.KV_CACHE_TYPE_F16,
            cache_type_v=P.KV_CACHE_TYPE_F16,
            flash_attention=P.FLASH_ATTENTION_OFF,
            use_mmap=True,
            ubatch_size=64,
        )
        version = c.set_state(_state(placement))
        c.wait_applied(version)
        placed = agent.wait_logs("model placed", count=2)[-1]
        assert (placed["cache_type_k"], placed["cache_type_v"]) == ("f16", "f16")
        assert placed["flash_attention"] == "disabled"
        assert (placed["ubatch_size"], placed["load_mode"]) == (64, "mmap")
        reply = generate(c.inference, to_inference(prompt_request(STORY, max_tokens=4)))
        assert reply.summary.state_version == version


def test_a_state_that_cannot_work_with_an_agents_own_flags_fails_there() -> None:
    with cluster() as c:
        agent = c.start_agent("no-flash", "--slots", "1", "--flash-attention", "off")
        c.set_state(_state(P.Placement(cache_type_v=P.KV_CACHE_TYPE_Q8_0)))
        agents = c.wait_for(
            lambda agents: agents[0].phase == status_pb2.STATE_PHASE_FAILED, timeout_s=120
        )
        assert "needs flash attention" in agents[0].issues[0]
        assert not agent.logs("previous model restored")  # checked before the model went
        reply = generate(c.inference, to_inference(prompt_request(STORY, max_tokens=3)))
        assert reply.summary.state_version == 0
