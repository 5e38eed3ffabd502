"""The desired state: model swaps under load, Hugging Face cache, bad states, persistence."""

from __future__ import annotations

import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gguf
import grpc
import pytest

from paddler.agent.default_model import default_model_path
from paddler.v1 import desired_state_pb2, generation_pb2, management_pb2, status_pb2
from tests.client import (
    COUNTING_PROMPT,
    error_of,
    field_violations,
    generate,
    invalid_field,
    prompt_request,
)
from tests.cluster import cluster, to_inference
from tests.local_hub import local_hub
from tests.processes import BalancerProcess, free_port, run_paddler

SMOLLM = "SmolLM2-135M-Instruct.Q4_1"
GET_STATE = management_pb2.GetDesiredStateRequest()
GEMMA = "gemma-3-270m-q4_k_m"
STORY = "Once upon a time, in a small village by the sea, there lived an old fisherman who"
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>"
    "{{ 'model' if m['role'] == 'assistant' else 'user' }}\n{{ m['content'] }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def state(model: desired_state_pb2.ModelSource, **fields: object) -> desired_state_pb2.DesiredState:
    """A desired state with ``model`` and extra top-level fields."""
    return desired_state_pb2.DesiredState(model=model, **fields)  # type: ignore[arg-type]


def packaged(name: str) -> desired_state_pb2.ModelSource:
    """A packaged model source."""
    return desired_state_pb2.ModelSource(packaged=name)


def test_swapping_models_under_steady_load_fails_no_request() -> None:
    with cluster(("left", 2), ("right", 2)) as c:
        stop = threading.Event()
        # (sent, state version that served it, model): each request is judged by the state
        # that served it, never by when it was sent (a request sent just before a swap may be
        # routed after it).
        served: list[tuple[float, int, str]] = []
        failed: list[grpc.RpcError] = []

        def load() -> None:
            request = to_inference(prompt_request(STORY, max_tokens=12))
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    summary = generate(c.inference, request).summary
                    served.append((sent, summary.state_version, summary.model))
                except grpc.RpcError as error:
                    failed.append(error)

        def served_by(version: int, count: int) -> None:
            """Wait until ``count`` requests were served by state ``version``."""
            deadline = time.monotonic() + 120
            while sum(1 for _, v, _ in list(served) if v == version) < count:
                assert time.monotonic() < deadline, f"served: {served}, failed: {failed}"
                time.sleep(0.05)

        ready: list[int] = []  # agents serving, sampled every 100 ms

        def sample() -> None:
            while not stop.is_set():
                ready.append(sum(1 for a in c.list_agents() if a.ready))
                time.sleep(0.1)

        workers = [threading.Thread(target=load) for _ in range(3)]
        workers.append(threading.Thread(target=sample))
        for worker in workers:
            worker.start()
        served_by(0, 3)
        c.set_state(state(packaged("gemma3-270m")))
        c.wait_applied(1)
        on_gemma = time.monotonic()
        served_by(1, 3)
        c.set_state(state(packaged("smollm2-135m")))
        c.wait_applied(2)
        on_smollm = time.monotonic()
        served_by(2, 3)
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
    assert failed == []
    # --rollout-max-unavailable 1 (the default): one agent of two out of service at most.
    assert len(ready) > 10 and min(ready) >= 1, ready
    assert {(version, model) for _, version, model in served} == {
        (0, SMOLLM),
        (1, GEMMA),
        (2, SMOLLM),
    }
    # Once every agent has applied a state, nothing older serves a request sent after.
    assert all(version >= 1 for sent, version, _ in served if sent > on_gemma)
    assert all(version == 2 for sent, version, _ in served if sent > on_smollm)


def test_a_chat_template_override_and_sampling_defaults_apply() -> None:
    with cluster(("solo", 1)) as c:
        sampling = generation_pb2.SamplingParameters(temperature=0.0)
        defaults = desired_state_pb2.InferenceDefaults(context_size=256, sampling=sampling)
        user_only = "{% for m in messages if m['role'] == 'user' %}{{ m['content'] }}{% endfor %}"
        c.set_state(state(packaged("smollm2-135m"), chat_template_override=user_only))
        c.wait_applied(1)
        only_system = to_inference(prompt_request("unused"))
        only_system.input.conversation.messages.add(role="system", content="Be brief.")
        assert invalid_field(c.inference, only_system) == "input"  # renders to no tokens
        c.set_state(
            state(packaged("gemma3-270m"), defaults=defaults, chat_template_override=GEMMA_TEMPLATE)
        )
        c.wait_applied(2)
        conversation = generation_pb2.Conversation(
            messages=[generation_pb2.ChatMessage(role="user", content="Name a colour.")]
        )
        generation = generation_pb2.GenerationInput(conversation=conversation, max_tokens=8)
        request = to_inference(prompt_request("unused"))
        request.input.CopyFrom(generation)  # no sampling given: the state's greedy default
        first, second = generate(c.inference, request), generate(c.inference, request)
        assert first.summary.model == GEMMA
        assert first.text == second.text
        too_long = error_of(c.inference, to_inference(prompt_request("word " * 300)))
        assert "holds 256" in (too_long.details() or "")


def _hugging_face_cache(root: Path) -> dict[str, str]:
    """A Hugging Face cache holding paddler-test/smollm2 (main) and the env to read it offline."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / "hub" / "models--paddler-test--smollm2"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "smollm2.gguf").symlink_to(default_model_path())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return {"HF_HOME": str(root), "HF_HUB_OFFLINE": "1"}


def _hugging_face(repo: str, file: str) -> desired_state_pb2.ModelSource:
    reference = desired_state_pb2.HuggingFaceModel(repo=repo, file=file, revision="main")
    return desired_state_pb2.ModelSource(hugging_face=reference)


def _failed_with(issue: str) -> object:
    return lambda agents: (
        bool(agents)
        and all(
            a.phase == status_pb2.STATE_PHASE_FAILED and issue in " ".join(a.issues) for a in agents
        )
    )


def test_a_hugging_face_reference_resolves_from_an_offline_cache(tmp_path: Path) -> None:
    with cluster(balancer_args=("--buffered-request-timeout", "1")) as c:
        c.start_agent("hf", "--slots", "1", env=_hugging_face_cache(tmp_path))
        c.set_state(state(_hugging_face("paddler-test/smollm2", "smollm2.gguf")))
        c.wait_applied(1)
        reply = generate(c.inference, to_inference(prompt_request(STORY, max_tokens=3)))
        assert reply.summary.model == "smollm2"
        c.set_state(state(_hugging_face("paddler-test/absent", "absent.gguf")))
        agents = c.wait_for(_failed_with("not in the cache"))  # type: ignore[arg-type]
        assert "HF_HUB_OFFLINE is set" in agents[0].issues[0]
        # The state failed: the agent serves the one it had (a failed state never unloads it).
        reply = generate(c.inference, to_inference(prompt_request(STORY, max_tokens=3)))
        assert (reply.summary.model, reply.summary.state_version) == ("smollm2", 1)


def test_a_download_shows_its_progress_and_a_newer_state_cancels_it(tmp_path: Path) -> None:
    model = default_model_path()
    size = model.stat().st_size
    half_way = threading.Event()
    starts: list[int] = []
    with (
        local_hub("paddler-test/remote", "remote.gguf", model, half_way, starts) as endpoint,
        cluster() as c,
    ):
        env = {"HF_HOME": str(tmp_path), "HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_XET": "1"}
        downloader = c.start_agent("downloader", "--slots", "1", env=env)
        remote = state(_hugging_face("paddler-test/remote", "remote.gguf"))
        c.set_state(remote)
        agents = c.wait_for(
            lambda agents: (
                agents[0].phase == status_pb2.STATE_PHASE_APPLYING
                and 0 < agents[0].download.bytes_done < size
            ),
            timeout_s=60,
        )
        assert agents[0].download.bytes_total == size
        # A newer state while the download runs: the download stops (at its next chunk) and
        # the newer state applies; the partial file stays, and the next try resumes it.
        version = c.set_state(state(packaged("smollm2-135m")))
        half_way.set()
        downloader.wait_logs("download cancelled by a newer desired state")
        c.wait_applied(version)
        assert not downloader.logs("desired state failed")
        assert list(tmp_path.rglob("*.paddler-partial")), "the partial download was removed"
        version = c.set_state(remote)
        c.wait_applied(version)
        assert starts[0] == 0 and starts[-1] > 0, starts  # the second download resumed
        assert not list(tmp_path.rglob("*.paddler-partial"))
        reply = generate(c.inference, to_inference(prompt_request(STORY, max_tokens=3)))
        assert reply.summary.model == "remote"


def test_a_state_that_fails_stops_its_rollout_and_the_old_model_serves_on() -> None:
    # The slot policy takes turns between idle agents, so four requests reach both.
    args = ("--buffered-request-timeout", "30", "--routing", "slots")
    with cluster(("first", 1), ("second", 1), balancer_args=args) as c:
        good = c.set_state(state(packaged("smollm2-135m")))
        c.wait_applied(good)
        missing = desired_state_pb2.ModelSource(local_path="/nonexistent/model.gguf")
        result = run_paddler(
            "state", "set", "--model", "/nonexistent/model.gguf", "--wait",
            "--address", c.balancer.management,
        )  # fmt: skip
        assert result.returncode == 1, result.stderr
        assert "the rollout stopped" in result.stderr and "does not exist" in result.stderr
        bad = c.desired_state()
        assert bad.state.model == missing
        shown = json.loads(run_paddler("state", "show", "--address", c.balancer.management).stdout)
        assert "does not exist" in shown["rollout"]["failure"]
        # One agent tried it and went back to the old state; the other was never sent it.
        agents = c.list_agents()
        assert sorted(a.phase for a in agents) == [
            status_pb2.STATE_PHASE_APPLIED,
            status_pb2.STATE_PHASE_FAILED,
        ]
        assert all(a.ready and a.applied_state_version == good for a in agents)
        # Both serve on, with the old state; the client never sees the agents' issues.
        names = set()
        for number in range(4):  # prompts of their own: no agent holds one of them already
            request = prompt_request(f"{number}. {STORY}", max_tokens=3)
            reply = generate(c.inference, to_inference(request))
            assert reply.summary.state_version == good
            names.add(reply.summary.agent_name)
        assert names == {"first", "second"}
        c.balancer.wait_logs("rollout stopped")
        # A new state starts a new rollout.
        fixed = c.set_state(state(packaged("smollm2-135m"), defaults={"context_size": 512}))
        c.wait_applied(fixed)
        assert c.management.GetDesiredState(GET_STATE).rollout.failure == ""


def test_a_state_that_does_not_fit_fails_before_the_running_model_goes(tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    (root / "outside.gguf").symlink_to(default_model_path())  # a link out of the folder
    _one_layer_too_many(root / "unloadable.gguf")
    budget = str(200 << 20)  # SmolLM2's weights (94 MiB) and a KV cache of at most 106 MiB
    with cluster() as c:
        c.start_agent(
            "solo", "--slots", "1", "--context-size", "512",
            "--allowed-model-root", str(root), "--memory-budget", budget,
        )  # fmt: skip
        cases = [
            (state(packaged("smollm2-135m"), defaults={"context_size": 16384}), "trained context"),
            (state(packaged("smollm2-135m"), defaults={"context_size": 8192}), "needs about"),
            (state(_local(root / "outside.gguf")), "outside the allowed model folders"),
            (state(packaged("smollm2-135m"), defaults={"batch_size": 4096}), "than the context"),
        ]
        for wanted, issue in cases:
            c.set_state(wanted)
            agents = c.wait_for(_failed_with(issue))  # type: ignore[arg-type]
            assert "lower" in agents[0].issues[0] or "outside" in agents[0].issues[0]
        # None of them let the running model go: it was never unloaded nor rebuilt.
        assert not c.agents["solo"].logs("previous model restored")
        assert len(c.agents["solo"].logs("agent ready")) == 1
        # A model that passes every check but does not load: the old one comes back.
        c.set_state(state(_local(root / "unloadable.gguf")))
        c.wait_for(_failed_with("could not load"))  # type: ignore[arg-type]
        c.agents["solo"].wait_logs("previous model restored")
        version = c.set_state(state(packaged("smollm2-135m"), defaults={"context_size": 256}))
        c.wait_applied(version)
        reply = generate(c.inference, to_inference(prompt_request(STORY, max_tokens=3)))
        assert reply.summary.agent_name == "solo"


def test_the_balancer_keeps_models_to_the_allowed_sources() -> None:
    args = ("--allowed-model-root", "/models", "--allowed-hf-owner", "paddler-test")
    with cluster(balancer_args=args) as c:
        refused = [
            (_local(Path("/models/../etc/model.gguf")), "state.model.local_path"),
            (_local(Path("/elsewhere/model.gguf")), "state.model.local_path"),
            (_hugging_face("stranger/model", "model.gguf"), "state.model.hugging_face.repo"),
        ]
        for model, field in refused:
            with pytest.raises(grpc.RpcError) as caught:
                c.set_state(state(model))
            assert field_violations(caught.value) == [field]
            assert "allowed" in (caught.value.details() or "")
        # A projector comes from the same sources as the model, under the same allow-lists.
        projector = state(packaged("gemma3-270m"))
        projector.mmproj.CopyFrom(_local(Path("/elsewhere/mmproj.gguf")))
        with pytest.raises(grpc.RpcError) as caught:
            c.set_state(projector)
        assert field_violations(caught.value) == ["state.mmproj.local_path"]
        assert c.set_state(state(_local(Path("/models/sub/model.gguf")))) == 1
        assert c.set_state(state(_hugging_face("paddler-test/smollm2", "a.gguf"))) == 2
        assert c.set_state(state(packaged("gemma3-270m"))) == 3


def _one_layer_too_many(path: Path) -> None:
    """A copy of SmolLM2 whose metadata claims a 31st layer: it reads like a model, but
    llama.cpp's load fails on the missing tensors."""
    shutil.copy(default_model_path(), path)
    reader = gguf.GGUFReader(path, "r+")
    reader.fields["llama.block_count"].parts[-1][0] = 31
    del reader  # the memory map writes the change back


def _local(path: Path) -> desired_state_pb2.ModelSource:
    return desired_state_pb2.ModelSource(local_path=str(path))


def _with_mmproj(mmproj: desired_state_pb2.ModelSource) -> desired_state_pb2.DesiredState:
    with_projector = state(packaged("smollm2-135m"))
    with_projector.mmproj.CopyFrom(mmproj)
    return with_projector


def test_an_agent_without_a_model_takes_the_desired_state() -> None:
    with cluster() as c:
        c.set_state(state(packaged("gemma3-270m")))
        agent = c.start_agent("fresh", "--slots", "1")
        c.wait_applied(1)
        assert [r["model"] for r in agent.wait_logs("agent ready")] == [GEMMA]


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (desired_state_pb2.DesiredState(), "state.model"),
        (state(packaged("llama-7b")), "state.model.packaged"),
        (state(desired_state_pb2.ModelSource(local_path="")), "state.model.local_path"),
        (state(_hugging_face("", "a.gguf")), "state.model.hugging_face.repo"),
        (state(_hugging_face("owner/name", "README.md")), "state.model.hugging_face.file"),
        (
            state(packaged("smollm2-135m"), defaults={"context_size": -5}),
            "state.defaults.context_size",
        ),
        (state(packaged("smollm2-135m"), defaults={"batch_size": 0}), "state.defaults.batch_size"),
        (
            state(packaged("smollm2-135m"), defaults={"sampling": {"temperature": -1}}),
            "state.defaults.sampling.temperature",
        ),
        (
            state(packaged("smollm2-135m"), chat_template_override="{% if %}"),
            "state.chat_template_override",
        ),
        (
            state(packaged("smollm2-135m"), chat_template_override="x" * (256 * 1024 + 1)),
            "state.chat_template_override",
        ),
        (
            state(packaged("smollm2-135m"), defaults={"context_size": 1 << 21}),
            "state.defaults.context_size",
        ),
        (
            state(packaged("smollm2-135m"), defaults={"context_size": 512, "batch_size": 1024}),
            "state.defaults.batch_size",
        ),
        (
            state(packaged("smollm2-135m"), defaults={"batch_size": 2147483647}),
            "state.defaults.batch_size",
        ),
        (
            state(desired_state_pb2.ModelSource(local_path="models/a.gguf")),
            "state.model.local_path",
        ),
        (
            _with_mmproj(desired_state_pb2.ModelSource(local_path="a.gguf")),
            "state.mmproj.local_path",
        ),
        (_with_mmproj(packaged("clip-vit")), "state.mmproj.packaged"),
        (
            _with_mmproj(
                desired_state_pb2.ModelSource(url=desired_state_pb2.UrlModel(url="ftp://x"))
            ),
            "state.mmproj.url.url",
        ),
        (
            _with_mmproj(
                desired_state_pb2.ModelSource(
                    url=desired_state_pb2.UrlModel(url="https://x.example/m.gguf", sha256="zz")
                )
            ),
            "state.mmproj.url.sha256",
        ),
        (state(_hugging_face("owner/" + "n" * 300, "a.gguf")), "state.model.hugging_face.repo"),
        (  # nested deeper than Python compiles: a refusal, not UNKNOWN
            state(
                packaged("smollm2-135m"), chat_template_override="{{" + "(" * 300 + ")" * 300 + "}}"
            ),
            "state.chat_template_override",
        ),
        (
            state(
                packaged("smollm2-135m"),
                chat_template_override="{% for a in b %}" * 30 + "{% endfor %}" * 30,
            ),
            "state.chat_template_override",
        ),
    ],
)
def test_an_invalid_state_is_rejected_and_changes_nothing(
    bad: desired_state_pb2.DesiredState, field: str
) -> None:
    with cluster() as c:
        c.set_state(state(packaged("smollm2-135m")))
        before = c.desired_state()
        with pytest.raises(grpc.RpcError) as caught:
            c.set_state(bad)
        assert isinstance(caught.value, grpc.Call)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(caught.value) == [field]
        assert c.desired_state() == before


def test_a_restarted_balancer_restores_the_state_file(tmp_path: Path) -> None:
    state_file = tmp_path / "state" / "desired.json"
    management = f"127.0.0.1:{free_port()}"
    args = ("--state-file", str(state_file))
    with cluster(("steady", 1), balancer_args=args, management=management) as c:
        wanted = state(packaged("gemma3-270m"), defaults={"sampling": {"temperature": 0.3}})
        c.set_state(wanted)
        c.wait_applied(1)
        epoch = c.desired_state().epoch
        assert c.balancer.stop() == 0
        c.balancer = BalancerProcess(list(args), management=management)
        try:
            restored = c.desired_state()
            assert (restored.version, restored.state, restored.epoch) == (1, wanted, epoch)
            c.wait_applied(1)
            c.start_agent("newcomer", "--slots", "1")
            c.wait_applied(1)
            assert c.agents["newcomer"].wait_logs("desired state applied")[0]["version"] == 1
            applied = c.agents["steady"].logs("desired state applied")
            assert [r["version"] for r in applied] == [0, 1]  # v1 was not loaded again
        finally:
            c.balancer.stop()


def test_a_balancer_restarted_without_a_state_file_tells_its_v1_from_an_older_runs() -> None:
    management = f"127.0.0.1:{free_port()}"
    with cluster(("steady", 1), management=management) as c:
        c.set_state(state(packaged("smollm2-135m")))
        c.wait_applied(1)
        assert c.balancer.stop() == 0
        c.balancer = BalancerProcess(["--buffered-request-timeout", "600"], management=management)
        try:
            c.management = type(c.management)(grpc.insecure_channel(management))
            c.wait_for(lambda agents: [a.name for a in agents if a.ready] == ["steady"])
            # The new run numbers its first state v1 too; the agent's v1 is another model, which
            # it goes on serving until it has assembled Gemma into its empty cache: the new v1
            # counts as applied only in the new run's epoch.
            assert c.set_state(state(packaged("gemma3-270m"))) == 1
            agents = c.wait_applied(1)
            assert agents[0].applied_state_epoch == c.desired_state().epoch
            with grpc.insecure_channel(c.balancer.inference) as channel:
                inference = type(c.inference)(channel)
                request = to_inference(prompt_request(STORY, max_tokens=3))
                assert generate(inference, request).summary.model == GEMMA
        finally:
            c.balancer.stop()


def test_a_model_without_a_chat_template_chats_in_chatml() -> None:
    with cluster(("solo", 1)) as c:
        address = ("--address", c.balancer.management)
        result = run_paddler("state", "set", "--model", "gemma3-270m", *address)
        assert result.returncode == 0, result.stderr
        agents = c.wait_applied(1)
        assert (agents[0].model, agents[0].chat_template) == (GEMMA, "chatml")
        assert c.agents["solo"].wait_logs("no chat template in the model: using ChatML")
        chat = run_paddler(
            "chat", "--address", c.balancer.inference, "--max-tokens", "8", stdin="Hi!\n\n"
        )
        assert chat.returncode == 0, chat.stderr
        assert chat.stdout.count("model> ") == 1
        assert "<|im_end|>" not in chat.stdout
        c.set_state(state(packaged("gemma3-270m"), chat_template_override=GEMMA_TEMPLATE))
        assert c.wait_applied(2)[0].chat_template == "override"  # an override still wins


def test_a_chat_template_that_never_ends_fails_its_request_and_stalls_nobody() -> None:
    looping = (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
        "{{ messages[0]['content'] }}"
    )
    # The render may run longer than --agent-stale-after (5 s): were it on the agent's event
    # loop, the status heartbeat would stop and the balancer would drop the agent.
    timeout = "10"
    with cluster() as c:
        c.start_agent("solo", "--slots", "2", "--chat-template-timeout", timeout)
        c.set_state(state(packaged("smollm2-135m"), chat_template_override=looping))
        c.wait_applied(1)
        stream = c.inference.Generate(
            to_inference(prompt_request(COUNTING_PROMPT, max_tokens=None)), timeout=300
        )
        assert next(stream).HasField("text")
        chat = to_inference(prompt_request("unused"))
        chat.input.conversation.messages.add(role="user", content="Hello")
        with ThreadPoolExecutor(1) as pool:
            rendering = pool.submit(error_of, c.inference, chat)
            for _ in range(30):  # the other stream goes on while the template spins
                assert next(stream).HasField("text")
            stream.cancel()
            error = rendering.result(timeout=300)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"did not finish within {timeout} s" in (error.details() or "")
        assert [a.name for a in c.list_agents()] == ["solo"]
        assert c.balancer.logs("agent removed") == []
