"""Generated calls to a real balancer's ManagementService (with its admin key): every
SetDesiredState ends OK or INVALID_ARGUMENT naming one field; calls without the key end
UNAUTHENTICATED; raw bytes that are no message end INVALID_ARGUMENT; nothing hangs, and the
balancer stays healthy and keeps the last good state."""

from __future__ import annotations

import json
import math
import secrets
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paddler.common.desired_state import PACKAGED_MODELS
from paddler.v1 import desired_state_pb2, generation_pb2, management_pb2, management_pb2_grpc
from tests.client import field_violations
from tests.processes import BalancerProcess

EXAMPLES = 500
CALL_TIMEOUT_S = 30.0
INT32 = st.integers(-(2**31), 2**31 - 1)
TEXT = st.one_of(st.text(max_size=16), st.integers(0, 300_000).map(lambda n: "x" * n))
PATHS = st.one_of(
    TEXT, st.sampled_from(["/models/a.gguf", "/models/../etc/passwd", "relative.gguf", ""])
)
MODELS = st.one_of(
    st.builds(
        desired_state_pb2.ModelSource, packaged=st.one_of(st.sampled_from(PACKAGED_MODELS), TEXT)
    ),
    st.builds(desired_state_pb2.ModelSource, local_path=PATHS),
    st.builds(
        desired_state_pb2.ModelSource,
        hugging_face=st.builds(
            desired_state_pb2.HuggingFaceModel, repo=TEXT, file=TEXT, revision=TEXT
        ),
    ),
    st.builds(
        desired_state_pb2.ModelSource,
        url=st.builds(
            desired_state_pb2.UrlModel,
            url=st.one_of(
                TEXT,
                TEXT.map(lambda rest: f"https://{rest}"),
                st.sampled_from(["http://h/m.gguf", "https://u:p@h/m.gguf", "https://h:0/"]),
            ),
            sha256=st.one_of(TEXT, st.text("0123456789abcdefABCDEFG", min_size=64, max_size=64)),
        ),
    ),
    st.just(desired_state_pb2.ModelSource()),
)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
SAMPLING = st.builds(
    generation_pb2.SamplingParameters,
    temperature=st.one_of(st.none(), FLOATS),
    top_k=st.one_of(st.none(), INT32),
    top_p=st.one_of(st.none(), FLOATS),
    min_p=st.one_of(st.none(), FLOATS),
    repeat_penalty=st.one_of(st.none(), FLOATS),
)
DEFAULTS = st.builds(
    desired_state_pb2.InferenceDefaults,
    context_size=st.one_of(st.none(), INT32),
    batch_size=st.one_of(st.none(), INT32),
    sampling=SAMPLING,
)
TEMPLATES = st.one_of(
    st.none(),
    TEXT,
    st.sampled_from(["{% if %}", "{{ '%2000000000s' % '' }}", "{{ messages[0]['content'] }}"]),
)
ENUMS = st.integers(0, 5)
PLACEMENTS = st.builds(
    desired_state_pb2.Placement,
    n_gpu_layers=st.one_of(st.none(), INT32),
    split_mode=ENUMS,
    tensor_split=st.lists(
        FLOATS.filter(lambda x: abs(x) < 3e38 or not math.isfinite(x)), max_size=20
    ),
    main_gpu=st.one_of(st.none(), INT32),
    flash_attention=ENUMS,
    cache_type_k=ENUMS,
    cache_type_v=ENUMS,
    use_mmap=st.one_of(st.none(), st.booleans()),
    use_mlock=st.one_of(st.none(), st.booleans()),
    ubatch_size=st.one_of(st.none(), INT32),
)
WILD_STATES = st.builds(
    desired_state_pb2.DesiredState,
    model=MODELS,
    defaults=DEFAULTS,
    chat_template_override=TEMPLATES,
    placement=PLACEMENTS,
)
# States within every bound, so the accepting path is exercised as often as the refusals.
VALID_STATES = st.builds(
    desired_state_pb2.DesiredState,
    model=st.one_of(
        st.builds(desired_state_pb2.ModelSource, packaged=st.sampled_from(PACKAGED_MODELS)),
        st.builds(desired_state_pb2.ModelSource, local_path=st.just("/models/sub/a.gguf")),
        st.builds(
            desired_state_pb2.ModelSource,
            url=st.builds(
                desired_state_pb2.UrlModel,
                url=st.just("https://models.example/a.gguf"),
                sha256=st.one_of(
                    st.just(""), st.text("0123456789abcdef", min_size=64, max_size=64)
                ),
            ),
        ),
    ),
    defaults=st.builds(
        desired_state_pb2.InferenceDefaults,
        context_size=st.one_of(st.none(), st.integers(256, 1 << 20)),
        sampling=st.builds(
            generation_pb2.SamplingParameters,
            temperature=st.floats(0, 2),
            top_k=st.integers(0, 100),
        ),
    ),
)
STATES = st.one_of(VALID_STATES, WILD_STATES)


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BalancerProcess, str]]:
    key = secrets.token_hex(24)
    key_file = tmp_path_factory.mktemp("admin") / "admin-key"
    key_file.write_text(key)
    balancer = BalancerProcess(
        ["--admin-key-file", str(key_file), "--allowed-model-root", "/models"]
    )
    try:
        yield balancer, key
    finally:
        assert balancer.stop() == 0


@pytest.mark.timeout(180)  # bounded in time, whatever the machine
def test_generated_desired_states_get_only_documented_statuses(
    admin: tuple[BalancerProcess, str],
) -> None:
    balancer, key = admin
    metadata = (("authorization", f"Bearer {key}"),)
    outcomes: Counter[str] = Counter()
    with grpc.insecure_channel(balancer.management) as channel:
        stub = management_pb2_grpc.ManagementServiceStub(channel)

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(state=STATES, with_key=st.booleans())
        def call(state: desired_state_pb2.DesiredState, with_key: bool) -> None:
            before = stub.GetDesiredState(
                management_pb2.GetDesiredStateRequest(), metadata=metadata
            ).desired_state
            request = management_pb2.SetDesiredStateRequest(state=state)
            try:
                reply = stub.SetDesiredState(
                    request, timeout=CALL_TIMEOUT_S, metadata=metadata if with_key else ()
                )
            except grpc.RpcError as error:
                assert isinstance(error, grpc.Call)
                code = error.code()
                if not with_key:
                    assert code == grpc.StatusCode.UNAUTHENTICATED, error.details()
                else:
                    assert code == grpc.StatusCode.INVALID_ARGUMENT, error.details()
                    assert len(field_violations(error)) == 1
                outcomes[code.name] += 1
                after = stub.GetDesiredState(
                    management_pb2.GetDesiredStateRequest(), metadata=metadata
                ).desired_state
                assert after == before  # a refused state changes nothing
                return
            assert with_key
            assert reply.desired_state.version == before.version + 1
            outcomes["OK"] += 1

        call()
        raw = channel.unary_unary(
            "/paddler.v1.ManagementService/SetDesiredState",
            request_serializer=lambda data: data,
            response_deserializer=lambda data: data,
        )
        for garbage in (b"\xff" * 64, b"\x0a\xff\xff\xff\xff\x0f", secrets.token_bytes(4096)):
            with pytest.raises(grpc.RpcError) as caught:
                raw(garbage, timeout=CALL_TIMEOUT_S, metadata=metadata)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field_violations(caught.value) == ["request"]
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    # The strategies reach every outcome, so each check above was exercised.
    assert min(outcomes["OK"], outcomes["INVALID_ARGUMENT"], outcomes["UNAUTHENTICATED"]) >= 20
    records = [json.loads(line) for line in balancer.lines if line.startswith("{")]
    assert not [r for r in records if r["level"] in ("error", "critical")]
