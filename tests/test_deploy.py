"""deploy/ and the Dockerfiles: they lint, validate, and pass only flags the servers know."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import typer
import yaml
from google.protobuf import json_format

from paddler.cli.agent import agent
from paddler.cli.balancer import balancer
from paddler.cli.main import app
from paddler.common.addresses import split_host_port
from paddler.v1 import desired_state_pb2
from tests.client import generate, prompt_request
from tests.cluster import Cluster, cluster, to_inference
from tests.kustomize import Manifest, containers, render
from tests.metric_samples import parse_samples
from tests.processes import process_env, run_paddler

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUSTOMIZATIONS = [DEPLOY / "base", DEPLOY / "overlays" / "example"]
# The oldest Kubernetes the manifests are for, and the newest the validator knows.
KUBERNETES_VERSIONS = ["1.31.0", "1.37.0"]
# Custom resources kubernetes-validate has no schema for; checked by hand below.
CUSTOM_KINDS = {"ServiceMonitor"}
# Variables the programs read that are not flags.
READ_BY_CODE = {"POD_IP", "PADDLER_CACHE_DIR", "HF_HOME", "PATH"}
DOCKERFILES = {"Dockerfile.agent": "agent", "Dockerfile.balancer": "balancer"}


def _by_kind(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def _container(manifests: list[Manifest], deployment: str, name: str) -> Manifest:
    pod = _by_kind(manifests, "Deployment")[deployment]["spec"]["template"]["spec"]
    (found,) = [c for c in pod["containers"] if c["name"] == name]
    assert isinstance(found, dict)
    return found


def _env(container: Manifest) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def _default(command: object, parameter: str) -> Any:
    assert callable(command)
    return inspect.signature(command).parameters[parameter].default


def _port(address: str) -> int:
    return split_host_port(address)[1]


@pytest.fixture(scope="module", params=KUSTOMIZATIONS, ids=lambda path: path.name)
def directory(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


@pytest.fixture(scope="module")
def manifests(directory: Path) -> list[Manifest]:
    return render(directory)


@dataclass(frozen=True)
class Documented:
    """A command's flags and variables, as its ``--help`` lists them."""

    flags: set[str]
    variables: set[str]
    help: str


@pytest.fixture(scope="module")
def documented() -> dict[str, Documented]:
    """What ``paddler agent``, ``balancer`` and ``state set`` take, from the commands' own
    parameters (what ``--help`` renders), each checked against the rendered ``--help``."""
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    state = group.commands["state"]
    assert isinstance(state, typer.core.TyperGroup)
    commands = {
        "agent": group.commands["agent"],
        "balancer": group.commands["balancer"],
        "state set": state.commands["set"],
    }
    found = {}
    for name, command in commands.items():
        options = [p for p in command.params if isinstance(p, typer.core.TyperOption)]
        flags = {flag for option in options for flag in option.opts + option.secondary_opts}
        variables = {str(option.envvar) for option in options if option.envvar}
        text = subprocess.run(
            [sys.executable, "-m", "paddler", *name.split(), "--help"],
            capture_output=True,
            text=True,
            check=True,
            env=process_env({"COLUMNS": "250"})[0],
        ).stdout
        assert all(variable in text for variable in variables), name
        found[name] = Documented(flags, variables, text)
    return found


@pytest.fixture(scope="module")
def one_agent() -> Iterator[Cluster]:
    """A balancer with one agent of 2 slots, as a pod would register."""
    with cluster(("pod", 2)) as c:
        yield c


def test_hadolint_finds_nothing_above_info() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "info", "--format", "json", *DOCKERFILES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == []
    # The one rule ignored: DL3006 on the FROM that picks a stage of the file by ACCELERATOR.
    text = (ROOT / "Dockerfile.agent").read_text()
    ignores = re.findall(r"# hadolint ignore=(\S+)\n(.*)\n", text)
    assert ignores == [
        ("DL3006", "FROM build-${ACCELERATOR} AS build"),
        ("DL3006", "FROM run-${ACCELERATOR}"),
    ]
    assert "hadolint" not in (ROOT / "Dockerfile.balancer").read_text()


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_validates_strictly(manifests: list[Manifest], version: str) -> None:
    for manifest in manifests:
        if manifest["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(manifest, version, strict=True)
    kinds = {m["kind"] for m in manifests}
    assert {"Namespace", "Deployment", "Service", "PodDisruptionBudget"} <= kinds
    assert {"HorizontalPodAutoscaler", "ConfigMap"} <= kinds


def test_a_misspelt_field_fails_validation(manifests: list[Manifest]) -> None:
    agent = _by_kind(manifests, "Deployment")["paddler-agent"]
    agent["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolicyy"):
        kubernetes_validate.validate(agent, KUBERNETES_VERSIONS[0], strict=True)
    del agent["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"]


def test_every_variable_and_flag_passed_exists(
    manifests: list[Manifest], documented: dict[str, Documented]
) -> None:
    commands = {"balancer": "balancer", "agent": "agent", "desired-state": "state set"}
    for container in containers(manifests):
        known = documented[commands[container["name"]]]
        for name in _env(container):
            assert name in READ_BY_CODE | known.variables, f"{container['name']}: {name}"
        for flag in [arg for arg in container.get("args", []) if arg.startswith("--")]:
            assert flag in known.flags, f"{container['name']}: {flag}"
        if "command" in container:
            assert container["command"] == ["paddler", "state", "set"]
    for dockerfile, command in DOCKERFILES.items():
        text = (ROOT / dockerfile).read_text()
        for name in re.findall(r"\b([A-Z][A-Z0-9_]+)=", _env_block(text)):
            assert name in READ_BY_CODE | documented[command].variables, f"{dockerfile}: {name}"
        assert f'ENTRYPOINT ["paddler", "{command}"]' in text


def test_a_misspelt_variable_is_not_documented(documented: dict[str, Documented]) -> None:
    assert "PADDLER_SLOTS" in documented["agent"].variables
    assert "PADDLER_SLOT" not in documented["agent"].variables  # a prefix is not a match
    assert "--watch" in documented["state set"].flags


def _env_block(dockerfile: str) -> str:
    """The final stage's ENV instructions."""
    final = dockerfile.rsplit("\nFROM ", 1)[1]
    return "\n".join(re.findall(r"^ENV (?:.*\\\n)*.*$", final, flags=re.MULTILINE))


def test_the_variables_read_by_code_are_read(tmp_path: Path) -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "paddler").rglob("*.py"))
    for name in READ_BY_CODE - {"HF_HOME", "PATH"}:  # huggingface-hub and the shell read those
        assert f'"{name}"' in source


def test_probes_and_ports_match_the_servers_defaults(manifests: list[Manifest]) -> None:
    agent_port = _default(agent, "port")
    inference_port = _port(_default(balancer, "inference_addr"))
    web_port = _port(_default(balancer, "web_addr"))
    agent_container = _container(manifests, "paddler-agent", "agent")
    balancer_container = _container(manifests, "paddler-balancer", "balancer")
    env = _env(agent_container)
    assert int(env["PADDLER_PORT"]) == agent_port
    ports = {p["name"]: p["containerPort"] for p in agent_container["ports"]}
    assert ports == {"grpc": agent_port, "http-metrics": _port(env["PADDLER_METRICS_ADDR"])}
    for container, port in ((agent_container, agent_port), (balancer_container, inference_port)):
        probes = {kind: container[kind]["grpc"] for kind in ("startupProbe", "livenessProbe")}
        assert all(probe == {"port": port, "service": "liveness"} for probe in probes.values())
        assert container["readinessProbe"]["grpc"] == {"port": port}  # the overall entry
    balancer_env = _env(balancer_container)
    balancer_ports = {p["name"]: p["containerPort"] for p in balancer_container["ports"]}
    for name, flag in (
        ("grpc-inference", "inference_addr"),
        ("grpc-management", "management_addr"),
        ("http-openai", "openai_addr"),
        ("http-web", "web_addr"),
    ):
        assert balancer_ports[name] == _port(_default(balancer, flag))
        assert _port(balancer_env[f"PADDLER_{flag.upper()}"]) == balancer_ports[name]
    assert web_port == balancer_ports["http-web"]
    # The agents reach the balancer's management port through its Service's DNS name.
    service = _by_kind(manifests, "Service")["paddler-balancer"]
    service_ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert env["PADDLER_BALANCER"] == f"paddler-balancer:{service_ports['grpc-management']}"
    assert service_ports == balancer_ports
    docker_agent = (ROOT / "Dockerfile.agent").read_text()
    assert f"PADDLER_PORT={agent_port}" in docker_agent
    assert (
        f'"paddler", "health", "127.0.0.1:{inference_port}"'
        in (ROOT / "Dockerfile.balancer").read_text()
    )


def test_pods_outlive_their_drain(manifests: list[Manifest]) -> None:
    for deployment, name in (("paddler-agent", "agent"), ("paddler-balancer", "balancer")):
        pod = _by_kind(manifests, "Deployment")[deployment]["spec"]["template"]["spec"]
        container = _container(manifests, deployment, name)
        grace = float(_env(container)["PADDLER_GRACE_PERIOD"])
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {})
        pause = float(pre_stop["command"][1]) if pre_stop else 0.0
        assert pod["terminationGracePeriodSeconds"] > pause + grace
        assert pod["securityContext"]["runAsNonRoot"] is True
    assert _by_kind(manifests, "Deployment")["paddler-balancer"]["spec"]["replicas"] == 1


def test_the_agents_threads_follow_their_cpu_limit(manifests: list[Manifest]) -> None:
    container = _container(manifests, "paddler-agent", "agent")
    (threads,) = [e for e in container["env"] if e["name"] == "PADDLER_THREADS"]
    assert threads["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"
    assert {e["name"]: e.get("valueFrom") for e in container["env"]}["POD_IP"] == {
        "fieldRef": {"fieldPath": "status.podIP"}
    }


def test_the_service_monitors_select_services_and_their_ports(
    directory: Path, manifests: list[Manifest]
) -> None:
    monitors = [m for m in manifests if m["kind"] == "ServiceMonitor"]
    services = _by_kind(manifests, "Service")
    for monitor in monitors:
        selector = monitor["spec"]["selector"]["matchLabels"]
        (service,) = [
            s for s in services.values() if selector.items() <= s["metadata"]["labels"].items()
        ]
        names = {p["name"] for p in service["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= names
    # The base has none (no Prometheus Operator assumed); the component adds them.
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    component = "../../components/prometheus-operator"
    assert bool(monitors) == (component in kustomization.get("components", []))


def test_the_autoscaler_reads_metrics_the_balancer_exports(
    manifests: list[Manifest], one_agent: Cluster
) -> None:
    hpa = _by_kind(manifests, "HorizontalPodAutoscaler")["paddler-agent"]
    assert hpa["spec"]["scaleTargetRef"]["name"] in _by_kind(manifests, "Deployment")
    wanted = {m["object"]["metric"]["name"] for m in hpa["spec"]["metrics"]}
    described = {m["object"]["describedObject"]["name"] for m in hpa["spec"]["metrics"]}
    assert described <= set(_by_kind(manifests, "Service"))
    rules = yaml.safe_load((DEPLOY / "prometheus-adapter" / "values.yaml").read_text())
    custom = rules["rules"]["custom"]
    assert (
        {rule["name"]["as"] for rule in custom}
        == wanted
        == {
            "paddler_buffered_requests",
            "paddler_slot_use",
        }
    )
    samples = parse_samples(httpx.get(f"{one_agent.balancer.web}/metrics", timeout=30).text)
    for rule in custom:
        query = rule["seriesQuery"] + rule["metricsQuery"]
        for name in set(re.findall(r"paddler_[a-z_]+", query)):
            exported = [labels for sample, labels in samples if sample == name]
            assert exported, name  # a series with samples, not only a declared family
            for label, value in re.findall(rf'{name}{{[^}}]*?(\w+)="(\w+)"', query):
                assert any((label, value) in labels for labels in exported), (name, label, value)


def test_the_desired_state_files_are_served_by_an_agent(
    manifests: list[Manifest], one_agent: Cluster, tmp_path: Path
) -> None:
    config_map = _by_kind(manifests, "ConfigMap")["paddler-desired-state"]
    ((name, text),) = config_map["data"].items()
    state = json_format.Parse(text, desired_state_pb2.DesiredState())
    if state.model.HasField("packaged"):  # the agent image installs the default model only
        assert state.model.packaged == "smollm2-135m"
    sidecar = _container(manifests, "paddler-balancer", "desired-state")
    args = sidecar["args"]
    assert args[args.index("--file") + 1] == f"{sidecar['volumeMounts'][0]['mountPath']}/{name}"
    path = tmp_path / name
    path.write_text(text)
    c = one_agent
    result = run_paddler("state", "set", "--file", str(path), "--address", c.balancer.management)
    assert result.returncode == 0, result.stderr
    (agent,) = c.wait_applied(int(json.loads(result.stdout)["version"]))
    reply = generate(c.inference, to_inference(prompt_request("Hi", max_tokens=4)))
    assert reply.summary.agent_name == agent.name == "pod"
