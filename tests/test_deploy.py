"""deploy/ and the Dockerfiles: they lint, validate, pass only flags the servers know, keep every
port behind its credentials, give each pool its own agents, autoscaler, budget and state, and
the TLS example's pods (both pools') start, serve and pass their probes."""

from __future__ import annotations

import copy
import inspect
import itertools
import json
import re
import secrets
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import trustme
import typer
import yaml
from google.protobuf import json_format

from paddler.agent.model_source import PACKAGED_RESOLVERS
from paddler.cli.agent import agent
from paddler.cli.balancer import balancer
from paddler.cli.main import app
from paddler.common.addresses import is_loopback_host, split_host_port
from paddler.common.desired_state import check_desired_state
from paddler.common.pool_names import DEFAULT_POOL, check_aliases, check_pool_name
from paddler.v1 import desired_state_pb2
from tests.client import generate, prompt_request
from tests.cluster import Cluster, cluster, to_inference
from tests.kubectl import Manifest, containers, kustomize
from tests.local_hub import local_hub
from tests.metric_samples import Samples, parse_samples
from tests.metric_samples import value as sample_value
from tests.processes import STARTUP_TIMEOUT_S, ServerProcess, free_port, process_env, run_paddler

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "base"
EXAMPLE = DEPLOY / "overlays" / "example"
GEMMA = DEPLOY / "components" / "pools" / "gemma"
# The base, the example (pools default and gemma) and the base with three pools: gemma and a
# third one made from it as its kustomization.yaml tells an operator.
THIRD_POOL = "qwen"
POOLS = {
    "base": {"default"},
    "example": {"default", "gemma"},
    "three-pools": {"default", "gemma", THIRD_POOL},
}
KUSTOMIZATIONS = list(POOLS)
# The oldest Kubernetes the manifests are for, and the newest the validator knows.
KUBERNETES_VERSIONS = ["1.31.0", "1.37.0"]
# Custom resources kubernetes-validate has no schema for; checked by hand below.
CUSTOM_KINDS = {"ServiceMonitor", "Certificate", "Issuer"}
# Variables the programs read that are not flags.
READ_BY_CODE = {"POD_IP", "PADDLER_CACHE_DIR", "HF_HOME", "PATH"}
DOCKERFILES = {"Dockerfile.agent": "agent", "Dockerfile.balancer": "balancer"}
# The Secret the operator creates (base/kustomization.yaml), key by key, and who reads each.
CREDENTIALS = "paddler-credentials"
CREDENTIAL_VARIABLES = {
    "PADDLER_AGENT_TOKEN_FILE": "agent-token",
    "PADDLER_ADMIN_KEY_FILE": "admin-key",
    "PADDLER_API_KEYS_FILE": "api-keys",
}
# The files of a kubernetes.io/tls Secret that cert-manager makes, and who reads each.
TLS_VARIABLES = {
    "PADDLER_TLS_CERT": "tls.crt",
    "PADDLER_TLS_KEY": "tls.key",
    "PADDLER_TLS_CA": "ca.crt",
    "PADDLER_TLS_CLIENT_CA": "ca.crt",
}
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")
# The command of the balancer pod's desired-state sidecars (one per pool).
STATE_SET = ["paddler", "state", "set"]
# The panel and the processes' local checks dial this; the certificates carry it.
LOOPBACK = "127.0.0.1"


def _by_kind(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def _pod(manifests: list[Manifest], deployment: str) -> Manifest:
    spec: Manifest = _by_kind(manifests, "Deployment")[deployment]["spec"]["template"]["spec"]
    return spec


def _container(manifests: list[Manifest], deployment: str, name: str) -> Manifest:
    (found,) = [c for c in _pod(manifests, deployment)["containers"] if c["name"] == name]
    assert isinstance(found, dict)
    return found


def _env(container: Manifest) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def _default(command: object, parameter: str) -> Any:
    assert callable(command)
    return inspect.signature(command).parameters[parameter].default


def _port(address: str) -> int:
    return split_host_port(address)[1]


def _tls(container: Manifest) -> bool:
    return "PADDLER_TLS_CERT" in _env(container)


def _probe(probe: Manifest) -> tuple[int, str]:
    """The port and the health entry a probe asks: a native gRPC probe, or `paddler health`
    run in the container."""
    if "grpc" in probe:
        return probe["grpc"]["port"], probe["grpc"].get("service", "")
    command = probe["exec"]["command"]
    assert command[:2] == ["paddler", "health"], command
    host, port = split_host_port(command[-1])
    assert host == LOOPBACK
    service = command[command.index("--service") + 1] if "--service" in command else ""
    return port, service


def _selects(selector: Manifest, pod_labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, selector
    return bool(selector.get("matchLabels", {}).items() <= pod_labels.items())


def _deployments_selected(manifests: list[Manifest], selector: Manifest) -> set[str]:
    return {
        name
        for name, deployment in _by_kind(manifests, "Deployment").items()
        if _selects(selector, deployment["spec"]["template"]["metadata"]["labels"])
    }


def _role(deployment: Manifest) -> str:
    """What a Deployment's pods are: "agent" (of any pool) or "balancer"."""
    role: str = deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
    return role


def _agents(manifests: list[Manifest]) -> dict[str, Manifest]:
    """The agent Deployments (one per pool) by name."""
    deployments = _by_kind(manifests, "Deployment")
    return {name: d for name, d in deployments.items() if _role(d) == "agent"}


def _pool_of(deployment: Manifest) -> str:
    """The pool an agent Deployment's agents join (PADDLER_POOL)."""
    (agent,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "agent"
    ]
    return _env(agent)["PADDLER_POOL"]


def _flag(args: list[str], flag: str) -> list[str]:
    """Every value ``flag`` is given in ``args``."""
    return [value for name, value in itertools.pairwise(args) if name == flag]


def _sidecars(manifests: list[Manifest]) -> dict[str, Manifest]:
    """The balancer pod's desired-state sidecars, by the pool each keeps."""
    found = {}
    for container in _pod(manifests, "paddler-balancer")["containers"]:
        if container.get("command") == STATE_SET:
            (pool,) = _flag(container["args"], "--pool")
            assert pool not in found, pool
            found[pool] = container
    return found


def _command(container: Manifest) -> str:
    """The paddler command a container runs: balancer, agent or state set."""
    return "state set" if container.get("command") == STATE_SET else str(container["name"])


def _state_file(manifests: list[Manifest], sidecar: Manifest) -> tuple[str, str]:
    """The ConfigMap key a sidecar's --file names, and its text."""
    (path,) = _flag(sidecar["args"], "--file")
    folder, key = path.rsplit("/", 1)
    (mount,) = [m for m in sidecar["volumeMounts"] if m["mountPath"] == folder]
    volumes = {v["name"]: v for v in _pod(manifests, "paddler-balancer")["volumes"]}
    config_map = _by_kind(manifests, "ConfigMap")[volumes[mount["name"]]["configMap"]["name"]]
    return key, config_map["data"][key]


def _three_pools(root: Path) -> Path:
    """The base with the pool gemma and a third pool, made in a copy of deploy/ by the commands
    the gemma component's kustomization.yaml gives an operator."""
    shutil.copytree(DEPLOY, root / "deploy")
    recipe = re.findall(
        r"^#   (.*\b" + THIRD_POOL + r"\b.*)$",
        (GEMMA / "kustomization.yaml").read_text(),
        flags=re.MULTILINE,
    )
    assert len(recipe) == 2, recipe  # copy the folder; rename its file and what it names
    subprocess.run(["bash", "-euc", " && ".join(recipe)], cwd=root, check=True, timeout=60)
    overlay = root / "deploy" / "overlays" / "three-pools"
    overlay.mkdir()
    components = [f"../../components/pools/{pool}" for pool in ("gemma", THIRD_POOL)]
    kustomization = {"resources": ["../../base"], "components": components}
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return overlay


def _secret_files(volume: Manifest) -> tuple[str, set[str]]:
    """A Secret volume's Secret and the files it projects (all of a TLS Secret's without
    ``items``)."""
    secret = volume["secret"]
    items = secret.get("items")
    files = {item["path"] for item in items} if items else set(TLS_VARIABLES.values())
    if items:
        assert all(item["key"] == item["path"] for item in items)
    return secret["secretName"], files


@pytest.fixture(scope="module", params=KUSTOMIZATIONS)
def directory(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    name: str = request.param
    if name == "three-pools":
        return _three_pools(tmp_path_factory.mktemp("three-pools"))
    return {"base": BASE, "example": EXAMPLE}[name]


@pytest.fixture(scope="module")
def manifests(directory: Path) -> list[Manifest]:
    return kustomize(directory)


@dataclass(frozen=True)
class Documented:
    """A command's flags and variables, as its ``--help`` lists them."""

    flags: set[str]
    variables: set[str]
    help: str


@pytest.fixture(scope="module")
def documented() -> dict[str, Documented]:
    """What ``paddler agent``, ``balancer``, ``state set`` and ``health`` take, from the
    commands' own parameters (what ``--help`` renders), each checked against the rendered
    ``--help``."""
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    state = group.commands["state"]
    assert isinstance(state, typer.core.TyperGroup)
    commands = {
        "agent": group.commands["agent"],
        "balancer": group.commands["balancer"],
        "state set": state.commands["set"],
        "health": group.commands["health"],
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
    """A balancer (with its metrics-only port) and one agent of 2 slots, as a pod would
    register."""
    with cluster(("pod", 2), balancer_args=("--metrics-addr", "127.0.0.1:0")) as c:
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
    assert {"HorizontalPodAutoscaler", "ConfigMap", "NetworkPolicy"} <= kinds
    assert "Secret" not in kinds  # no credential in git: the operator creates the Secret


def test_a_misspelt_field_fails_validation(manifests: list[Manifest]) -> None:
    agent = _by_kind(manifests, "Deployment")["paddler-agent"]
    agent["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolicyy"):
        kubernetes_validate.validate(agent, KUBERNETES_VERSIONS[0], strict=True)
    del agent["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"]


def test_every_variable_and_flag_passed_exists(
    manifests: list[Manifest], documented: dict[str, Documented]
) -> None:
    for container in containers(manifests):
        known = documented[_command(container)]
        for name in _env(container):
            assert name in READ_BY_CODE | known.variables, f"{container['name']}: {name}"
        for flag in [arg for arg in container.get("args", []) if arg.startswith("--")]:
            assert flag in known.flags, f"{container['name']}: {flag}"
        if "command" in container:
            assert container["command"] == STATE_SET
        for probe in [container[kind] for kind in PROBES if "exec" in container.get(kind, {})]:
            flags = [arg for arg in probe["exec"]["command"] if arg.startswith("--")]
            assert set(flags) <= documented["health"].flags, flags
            # The probe inherits the container's variables: health reads the TLS ones.
            if _tls(container):
                assert "PADDLER_TLS_CA" in documented["health"].variables
    for dockerfile, command in DOCKERFILES.items():
        text = (ROOT / dockerfile).read_text()
        for name in _dockerfile_env(text):
            assert name in READ_BY_CODE | documented[command].variables, f"{dockerfile}: {name}"
        assert f'ENTRYPOINT ["paddler", "{command}"]' in text


def test_a_misspelt_variable_is_not_documented(documented: dict[str, Documented]) -> None:
    assert "PADDLER_SLOTS" in documented["agent"].variables
    assert "PADDLER_SLOT" not in documented["agent"].variables  # a prefix is not a match
    assert "--watch" in documented["state set"].flags


def _dockerfile_env(dockerfile: str) -> dict[str, str]:
    """The final stage's ENV variables."""
    final = dockerfile.rsplit("\nFROM ", 1)[1]
    block = "\n".join(re.findall(r"^ENV (?:.*\\\n)*.*$", final, flags=re.MULTILINE))
    return dict(re.findall(r"\b([A-Z][A-Z0-9_]+)=(\S+)", block))


def test_the_variables_read_by_code_are_read(tmp_path: Path) -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "paddler").rglob("*.py"))
    for name in READ_BY_CODE - {"HF_HOME", "PATH"}:  # huggingface-hub and the shell read those
        assert f'"{name}"' in source


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_an_image_without_credentials_refuses_to_listen(dockerfile: str) -> None:
    """The images listen on 0.0.0.0: with no credentials mounted they refuse to start and say
    what to give."""
    env = {
        name: value
        for name, value in _dockerfile_env((ROOT / dockerfile).read_text()).items()
        if name.startswith("PADDLER_") and name != "PADDLER_CACHE_DIR"
    }
    assert any(value.startswith("0.0.0.0:") or value == "0.0.0.0" for value in env.values())
    result = subprocess.run(
        [sys.executable, "-m", "paddler", DOCKERFILES[dockerfile]],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=process_env(env)[0],
    )
    assert result.returncode != 0
    assert "PADDLER_ALLOW_INSECURE=1" in result.stderr, result.stderr[-2000:]
    assert "listening" not in result.stderr


def test_probes_and_ports_match_the_servers_defaults(manifests: list[Manifest]) -> None:
    agent_port = _default(agent, "port")
    inference_port = _port(_default(balancer, "inference_addr"))
    agent_container = _container(manifests, "paddler-agent", "agent")
    balancer_container = _container(manifests, "paddler-balancer", "balancer")
    env = _env(agent_container)
    assert int(env["PADDLER_PORT"]) == agent_port
    ports = {p["name"]: p["containerPort"] for p in agent_container["ports"]}
    assert ports == {"grpc": agent_port, "http-metrics": _port(env["PADDLER_METRICS_ADDR"])}
    for container, port in ((agent_container, agent_port), (balancer_container, inference_port)):
        probes = {kind: _probe(container[kind]) for kind in PROBES}
        assert probes == {
            "startupProbe": (port, "liveness"),
            "livenessProbe": (port, "liveness"),
            "readinessProbe": (port, ""),  # the overall entry
        }
        # Kubelet's gRPC probes cannot speak TLS: with TLS they run `paddler health`.
        assert all(("exec" in container[kind]) == _tls(container) for kind in PROBES)
        # An exec probe starts Python first: more than kubelet's default second.
        exec_probes = [container[kind] for kind in PROBES if "exec" in container[kind]]
        assert all(probe["timeoutSeconds"] >= 5 for probe in exec_probes)
    balancer_env = _env(balancer_container)
    balancer_ports = {p["name"]: p["containerPort"] for p in balancer_container["ports"]}
    for name, flag in (
        ("grpc-inference", "inference_addr"),
        ("grpc-management", "management_addr"),
        ("http-openai", "openai_addr"),
    ):
        assert balancer_ports[name] == _port(_default(balancer, flag))
        assert _port(balancer_env[f"PADDLER_{flag.upper()}"]) == balancer_ports[name]
    assert balancer_ports["http-metrics"] == _port(balancer_env["PADDLER_METRICS_ADDR"])
    # The panel listens on the pod's loopback, on its default port: no container port, no
    # Service, no NetworkPolicy rule; kubectl port-forward reaches it.
    web_host, web_port = split_host_port(balancer_env["PADDLER_WEB_ADDR"])
    assert is_loopback_host(web_host)
    assert web_port == _port(_default(balancer, "web_addr"))
    assert web_port not in balancer_ports.values()
    # The agents reach the balancer's management port through its Service's DNS name.
    service = _by_kind(manifests, "Service")["paddler-balancer"]
    service_ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert env["PADDLER_BALANCER"] == f"paddler-balancer:{service_ports['grpc-management']}"
    assert service_ports == balancer_ports
    docker_agent = (ROOT / "Dockerfile.agent").read_text()
    assert f"PADDLER_PORT={agent_port}" in docker_agent
    assert (
        f'"--tls-server-name", "{LOOPBACK}", "127.0.0.1:{inference_port}"'
        in (ROOT / "Dockerfile.balancer").read_text()
    )


def test_every_port_beyond_loopback_has_its_credentials(manifests: list[Manifest]) -> None:
    """What the servers demand before they listen widely, set in the pods (the TLS example
    starts them below)."""
    needs = {
        "PADDLER_INFERENCE_ADDR": {"PADDLER_API_KEYS_FILE"},
        "PADDLER_OPENAI_ADDR": {"PADDLER_API_KEYS_FILE"},
        "PADDLER_MANAGEMENT_ADDR": {"PADDLER_AGENT_TOKEN_FILE", "PADDLER_ADMIN_KEY_FILE"},
        "PADDLER_WEB_ADDR": {"PADDLER_ADMIN_KEY_FILE"},
        "PADDLER_METRICS_ADDR": set(),
        "PADDLER_HOST": {"PADDLER_AGENT_TOKEN_FILE"},
    }
    for container in containers(manifests):
        env = _env(container)
        assert "PADDLER_ALLOW_INSECURE" not in env
        for variable, credentials in needs.items():
            if variable in env:
                value = env[variable]
                host = value if variable == "PADDLER_HOST" else split_host_port(value)[0]
                assert is_loopback_host(host) or credentials <= set(env), variable
    assert _env(_container(manifests, "paddler-agent", "agent"))["PADDLER_HOST"] == "0.0.0.0"


def test_the_secrets_are_mounted_as_the_files_the_variables_name(
    manifests: list[Manifest],
) -> None:
    certificates = {c["spec"]["secretName"] for c in _by_kind(manifests, "Certificate").values()}
    read: dict[str, set[str]] = {}
    for deployment in _by_kind(manifests, "Deployment"):
        pod = _pod(manifests, deployment)
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
            mounted: set[tuple[str, str]] = set()
            for mount in mounts.values():
                volume = volumes[mount["name"]]
                assert "subPath" not in mount  # kubelet updates whole volumes only: rotation
                if "secret" in volume:
                    assert mount.get("readOnly") is True
                    secret, files = _secret_files(volume)
                    assert secret == CREDENTIALS or secret in certificates, secret
                    mounted |= {(secret, file) for file in files}
            wanted: set[tuple[str, str]] = set()
            for name, value in _env(container).items():
                if name in CREDENTIAL_VARIABLES | TLS_VARIABLES:
                    folder, file = value.rsplit("/", 1)
                    assert file == (CREDENTIAL_VARIABLES | TLS_VARIABLES)[name], name
                    secret, files = _secret_files(volumes[mounts[folder]["name"]])
                    assert file in files, (container["name"], name)
                    wanted.add((secret, file))
            # Each container sees the credentials it reads and no other (the same for every pool's
            # agents, the same for every pool's sidecar).
            assert mounted == wanted, container["name"]
            files = {file for secret, file in wanted if secret == CREDENTIALS}
            role = "desired-state" if _command(container) == "state set" else container["name"]
            assert read.setdefault(role, files) == files, container["name"]
    assert read == {
        "balancer": {"agent-token", "admin-key", "api-keys"},
        "desired-state": {"admin-key"},
        "agent": {"agent-token"},
    }
    for deployment in _by_kind(manifests, "Deployment"):
        assert _pod(manifests, deployment)["automountServiceAccountToken"] is False
    # The Secret the base's comment tells the operator to create has those keys.
    text = (BASE / "kustomization.yaml").read_text()
    assert set(re.findall(r"--from-file=([\w-]+)", text)) == set(CREDENTIAL_VARIABLES.values())
    assert f"create secret generic {CREDENTIALS}" in text


def test_the_network_policies_let_in_only_who_belongs(manifests: list[Manifest]) -> None:
    """Who reaches each named port of each pod: only the balancer the agents' gRPC port, only
    agents the management port, anyone inference and OpenAI, pods of the cluster the metrics;
    every declared port has its rule and the panel (no container port) none."""
    roles = {name: _role(d) for name, d in _by_kind(manifests, "Deployment").items()}

    def role_of(selector: Manifest) -> str:
        """The role a selector picks: every Deployment of it (every pool's agents), no other."""
        selected = _deployments_selected(manifests, selector)
        (role,) = {roles[name] for name in selected}
        assert selected == {name for name, r in roles.items() if r == role}, selector
        return role

    reach: dict[str, dict[str, set[str]]] = {}
    for policy in _by_kind(manifests, "NetworkPolicy").values():
        spec = policy["spec"]
        role = role_of(spec["podSelector"])
        assert spec["policyTypes"] == ["Ingress"]
        for deployment in [name for name, r in roles.items() if r == role]:
            declared = {
                p["name"]
                for c in _pod(manifests, deployment)["containers"]
                for p in c.get("ports", [])
            }
            rules: dict[str, set[str]] = {}
            for rule in spec["ingress"]:
                sources = set()
                for peer in rule.get("from", [{"anyone": {}}]):
                    if "podSelector" in peer:
                        assert "namespaceSelector" not in peer  # this namespace's pods
                        sources.add(role_of(peer["podSelector"]))
                    elif peer.get("namespaceSelector") == {}:
                        sources.add("any pod")
                    else:
                        assert peer == {"anyone": {}}, peer
                        sources.add("anyone")
                for port in rule["ports"]:
                    assert port["port"] in declared, port  # a named port of the pod
                    rules.setdefault(port["port"], set()).update(sources)
            assert set(rules) == declared, deployment
            assert reach.setdefault(role, rules) == rules, deployment
    assert reach == {
        "agent": {"grpc": {"balancer"}, "http-metrics": {"any pod"}},
        "balancer": {
            "grpc-inference": {"anyone"},
            "http-openai": {"anyone"},
            "grpc-management": {"agent"},
            "http-metrics": {"any pod"},
        },
    }


def test_pods_outlive_their_drain(manifests: list[Manifest]) -> None:
    pods = [(name, "agent") for name in _agents(manifests)] + [("paddler-balancer", "balancer")]
    for deployment, name in pods:
        pod = _pod(manifests, deployment)
        container = _container(manifests, deployment, name)
        grace = float(_env(container)["PADDLER_GRACE_PERIOD"])
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {})
        pause = float(pre_stop["command"][1]) if pre_stop else 0.0
        assert pod["terminationGracePeriodSeconds"] > pause + grace
        assert pod["securityContext"]["runAsNonRoot"] is True
    assert _by_kind(manifests, "Deployment")["paddler-balancer"]["spec"]["replicas"] == 1


def test_the_agents_threads_follow_their_cpu_limit(manifests: list[Manifest]) -> None:
    for deployment in _agents(manifests):
        container = _container(manifests, deployment, "agent")
        (threads,) = [e for e in container["env"] if e["name"] == "PADDLER_THREADS"]
        assert threads["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"
        assert {e["name"]: e.get("valueFrom") for e in container["env"]}["POD_IP"] == {
            "fieldRef": {"fieldPath": "status.podIP"}
        }


def test_the_service_monitors_scrape_the_metrics_ports(
    directory: Path, manifests: list[Manifest]
) -> None:
    monitors = [m for m in manifests if m["kind"] == "ServiceMonitor"]
    services = _by_kind(manifests, "Service")
    for monitor in monitors:
        selector = monitor["spec"]["selector"]["matchLabels"]
        (service,) = [
            s for s in services.values() if selector.items() <= s["metadata"]["labels"].items()
        ]
        # The agents' Service names every pool's agents.
        selected = _deployments_selected(manifests, {"matchLabels": service["spec"]["selector"]})
        assert selected, monitor["metadata"]["name"]
        targets = {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}
        for deployment, endpoint in itertools.product(selected, monitor["spec"]["endpoints"]):
            # The metrics-only port (no credential), never the panel's.
            (container,) = [
                c
                for c in _pod(manifests, deployment)["containers"]
                for p in c.get("ports", [])
                if p["name"] == targets[endpoint["port"]]
                and p["containerPort"] == _port(_env(c)["PADDLER_METRICS_ADDR"])
            ]
            assert endpoint["path"] == "/metrics"
            assert endpoint.get("scheme", "http") == ("https" if _tls(container) else "http")
    # The base has none (no Prometheus Operator assumed); the component adds them.
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    component = "../../components/prometheus-operator"
    assert bool(monitors) == (component in kustomization.get("components", []))


def test_the_tls_component_names_what_each_side_checks(documented: dict[str, Documented]) -> None:
    """The example turns TLS on: the certificates carry the names each peer dials (the
    balancer's Service, the agents' name for pod IPs, 127.0.0.1 for the pods' own checks)."""
    manifests = kustomize(EXAMPLE)
    certificates = _by_kind(manifests, "Certificate")
    by_secret = {c["spec"]["secretName"]: c["spec"] for c in certificates.values()}
    balancer_pod = _pod(manifests, "paddler-balancer")

    def names(pod: Manifest) -> list[str]:
        (tls,) = [v["secret"]["secretName"] for v in pod["volumes"] if v["name"] == "tls"]
        spec = by_secret[tls]
        assert {"server auth", "client auth"} <= set(spec["usages"])
        assert spec["issuerRef"] == {"kind": "Issuer", "name": "paddler-ca"}
        return [*spec["dnsNames"], *spec.get("ipAddresses", [])]

    balancer_env = _env(_container(manifests, "paddler-balancer", "balancer"))
    agent_env = _env(_container(manifests, "paddler-agent", "agent"))
    assert LOOPBACK in names(balancer_pod)
    assert balancer_env["PADDLER_TLS_CLIENT_CA"] == balancer_env["PADDLER_TLS_CA"]
    # Every pool's agents: the balancer checks the same name on each.
    assert set(_agents(manifests)) == {"paddler-agent", "paddler-agent-gemma"}
    for deployment in _agents(manifests):
        pod, env = _pod(manifests, deployment), _env(_container(manifests, deployment, "agent"))
        assert balancer_env["PADDLER_TLS_SERVER_NAME"] in names(pod)
        assert split_host_port(env["PADDLER_BALANCER"])[0] in names(balancer_pod)
        assert "PADDLER_TLS_SERVER_NAME" not in env  # the DNS name it dials is checked
        assert LOOPBACK in names(pod)
        # Mutual TLS on the balancer's management port: agents and sidecars present theirs.
        assert {"PADDLER_TLS_CERT", "PADDLER_TLS_KEY"} <= set(env)
    assert set(_sidecars(manifests)) == {"default", "gemma"}
    for sidecar in _sidecars(manifests).values():
        assert {"PADDLER_TLS_CA", "PADDLER_TLS_CERT", "PADDLER_TLS_KEY"} <= set(_env(sidecar))
    # The agent's probes dial its gRPC port: it asks for a client certificate only if
    # `paddler health` can present one.
    if "PADDLER_TLS_CLIENT_CA" in agent_env:
        assert "PADDLER_TLS_CERT" in documented["health"].variables
    # Prometheus checks each certificate's name; the gRPC ports are no longer h2c.
    for monitor in _by_kind(manifests, "ServiceMonitor").values():
        (endpoint,) = monitor["spec"]["endpoints"]
        tls = endpoint["tlsConfig"]
        assert tls["ca"]["secret"]["key"] == "ca.crt"
        assert tls["serverName"] in by_secret[tls["ca"]["secret"]["name"]]["dnsNames"]
    for service in _by_kind(manifests, "Service").values():
        assert all("appProtocol" not in port for port in service["spec"]["ports"])
    for service in _by_kind(kustomize(BASE), "Service").values():
        for port in service["spec"]["ports"]:
            h2c = "kubernetes.io/h2c" if port["name"].startswith("grpc") else None
            assert port.get("appProtocol") == h2c
    # The issuer the example brings: a CA that cert-manager makes.
    issuer = _by_kind(manifests, "Issuer")["paddler-ca"]
    (ca,) = [c for c in certificates.values() if c["spec"].get("isCA")]
    assert issuer["spec"]["ca"]["secretName"] == ca["spec"]["secretName"]
    assert ca["spec"]["issuerRef"]["name"] in _by_kind(manifests, "Issuer")


def _adapter_rules() -> list[Manifest]:
    """Prometheus Adapter's custom-metric rules (deploy/prometheus-adapter/values.yaml)."""
    values = yaml.safe_load((DEPLOY / "prometheus-adapter" / "values.yaml").read_text())
    rules: list[Manifest] = values["rules"]["custom"]
    return rules


def _series_read(rule: Manifest) -> dict[str, set[tuple[str, str]]]:
    """The series an adapter rule's queries read, each with the labels they fix."""
    query = rule["seriesQuery"] + rule["metricsQuery"]
    return {
        name: set(re.findall(rf'{name}{{[^}}]*?(\w+)="(\w+)"', query))
        for name in set(re.findall(r"paddler_[a-z_]+", query))
    }


def _check_the_series_exported(samples: Samples, pool: str) -> None:
    """Every series the adapter's rules read has samples for ``pool`` (labelled so), with each
    label value the rules fix."""
    for rule in _adapter_rules():
        for name, fixed in _series_read(rule).items():
            exported = [labels for sample, labels in samples if sample == name]
            assert exported, name  # a series with samples, not only a declared family
            ours = [labels for labels in exported if ("pool", pool) in labels]
            assert ours, (name, pool)
            for label, value in fixed:
                assert any((label, value) in labels for labels in ours), (name, label, value)


def test_the_autoscalers_read_metrics_the_balancer_exports(
    manifests: list[Manifest], one_agent: Cluster
) -> None:
    """Each pool's HPA reads the adapter's metrics for its own pool (the label the balancer's
    per-pool series carry); the rules read series the live balancer's metrics port exports."""
    rules = _adapter_rules()
    served = {rule["name"]["as"] for rule in rules}
    assert served == {"paddler_pool_buffered_requests", "paddler_pool_slot_use"}
    for rule in rules:
        # The series queried carry the label `pool` the HPAs select on.
        (series,) = re.findall(r"^(paddler_[a-z_]+)\{[^}]*\bpool!=\"\"", rule["seriesQuery"])
        assert re.fullmatch(rule["name"]["matches"].strip("^$"), series)
    deployments = _by_kind(manifests, "Deployment")
    for name, hpa in _by_kind(manifests, "HorizontalPodAutoscaler").items():
        pool = _pool_of(deployments[hpa["spec"]["scaleTargetRef"]["name"]])
        assert {m["type"] for m in hpa["spec"]["metrics"]} == {"Object"}
        metrics = [m["object"] for m in hpa["spec"]["metrics"]]
        assert {m["metric"]["name"] for m in metrics} == served, name
        for metric in metrics:
            described = metric["describedObject"]
            assert described["kind"] == "Service"
            assert described["name"] in _by_kind(manifests, "Service")
            # The adapter adds the selector to its queries' label matchers: this pool alone.
            assert metric["metric"]["selector"] == {"matchLabels": {"pool": pool}}, name
    # The series of the metrics-only port, the one the ServiceMonitor scrapes (another pool's,
    # from its own pods, in test_a_pools_autoscaler_reads_its_own_series).
    page = f"http://{one_agent.balancer.listening['metrics']}/metrics"
    _check_the_series_exported(parse_samples(httpx.get(page, timeout=30).text), DEFAULT_POOL)


def _without_pool(pod: Manifest) -> Manifest:
    """A copy of an agent pod with its PADDLER_POOL blanked out."""
    pod = copy.deepcopy(pod)
    for variable in [e for c in pod["containers"] for e in c.get("env", [])]:
        if variable["name"] == "PADDLER_POOL":
            variable["value"] = ""
    return pod


def test_each_pool_has_its_own_agents_autoscaler_and_budget(
    directory: Path, manifests: list[Manifest]
) -> None:
    """One agent Deployment per pool (PADDLER_POOL), each the only one selecting its pods, with
    one HPA reading that pool's metrics and one budget over its pods alone; its pod is the
    default pool's (TLS, credentials, sizes) but for the pool, and the balancer pod has a
    sidecar per pool that is the default pool's but for its arguments."""
    for kind in ("Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        names = [m["metadata"]["name"] for m in manifests if m["kind"] == kind]
        assert len(names) == len(set(names)), kind
    names = [c["name"] for c in _pod(manifests, "paddler-balancer")["containers"]]
    assert len(names) == len(set(names))
    deployments = _by_kind(manifests, "Deployment")
    agents = _agents(manifests)
    pools = {_pool_of(deployment): name for name, deployment in agents.items()}
    assert len(pools) == len(agents)  # one Deployment per pool
    assert set(pools) == POOLS[directory.name] == set(_sidecars(manifests))
    assert pools[DEFAULT_POOL] == "paddler-agent"
    hpas = list(_by_kind(manifests, "HorizontalPodAutoscaler").values())
    budgets = list(_by_kind(manifests, "PodDisruptionBudget").values())
    assert len(hpas) == len(budgets) == len(pools)
    default_pod = _without_pool(_pod(manifests, "paddler-agent"))
    for pool, name in pools.items():
        assert check_pool_name(pool, "PADDLER_POOL") == pool
        deployment = agents[name]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["paddler/pool"] == deployment["metadata"]["labels"]["paddler/pool"] == pool
        # Its pods: its selector picks them and no other Deployment's, and no other picks them.
        assert _deployments_selected(manifests, deployment["spec"]["selector"]) == {name}
        assert [d for d in deployments if _selects(deployments[d]["spec"]["selector"], labels)] == [
            name
        ]
        target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        (hpa,) = [h for h in hpas if h["spec"]["scaleTargetRef"] == target]
        selected = [
            m["object"]["metric"]["selector"]["matchLabels"] for m in hpa["spec"]["metrics"]
        ]
        assert selected == [{"pool": pool}] * len(selected), hpa["metadata"]["name"]
        (budget,) = [b for b in budgets if _selects(b["spec"]["selector"], labels)]
        assert _deployments_selected(manifests, budget["spec"]["selector"]) == {name}
        assert budget["spec"]["maxUnavailable"] == 1
        # The same pod as the default pool's, but in its pool: the components' TLS, the
        # overlay's sizes and images reach every pool.
        assert _without_pool(_pod(manifests, name)) == default_pod, name
    sidecars = _sidecars(manifests)
    default = sidecars[DEFAULT_POOL]
    assert default["name"] == "desired-state"
    for pool, sidecar in sidecars.items():
        assert {k: v for k, v in sidecar.items() if k not in ("name", "args")} == {
            k: v for k, v in default.items() if k not in ("name", "args")
        }, pool
        if pool != DEFAULT_POOL:
            assert sidecar["name"] == f"desired-state-{pool}"
        # Only the pool, its file and its aliases differ (--watch keeps each state set).
        assert "--watch" in sidecar["args"]
        assert _other_args(sidecar["args"]) == _other_args(default["args"]), pool


def _other_args(args: list[str]) -> list[str]:
    """A sidecar's arguments but its pool, file and aliases."""
    kept = []
    for index, arg in enumerate(args):
        own = arg in ("--pool", "--file", "--alias")
        if not own and not (index and args[index - 1] in ("--pool", "--file", "--alias")):
            kept.append(arg)
    return kept


def test_each_pools_state_file_is_a_desired_state_its_sidecar_keeps(
    manifests: list[Manifest],
) -> None:
    """Each sidecar's --file is a file of the mounted ConfigMap, a valid desired state; every
    file there is some pool's; aliases are valid and name one pool each."""
    config_map = _by_kind(manifests, "ConfigMap")["paddler-desired-state"]
    sidecars = _sidecars(manifests)
    kept = {}
    aliases: list[str] = []
    for pool, sidecar in sidecars.items():
        key, text = _state_file(manifests, sidecar)
        kept[key] = pool
        state = json_format.Parse(text, desired_state_pb2.DesiredState())
        check_desired_state(state)
        # The agent image installs the default model only: another pool names where its
        # agents get theirs (a Hugging Face repository, a URL, a mounted file).
        if state.model.HasField("packaged"):
            assert state.model.packaged == "smollm2-135m", pool
        aliases += check_aliases(_flag(sidecar["args"], "--alias"), "--alias")
    assert len(kept) == len(sidecars) and set(kept) == set(config_map["data"])
    assert len(aliases) == len(set(aliases)) and not set(aliases) & set(sidecars)


def test_the_desired_state_files_are_served_by_an_agent(
    manifests: list[Manifest], one_agent: Cluster, tmp_path: Path
) -> None:
    """The default pool's file is a state the live balancer takes and its agent serves (the
    other pools' files: test_a_pools_pods_serve_its_model_by_its_name)."""
    name, text = _state_file(manifests, _sidecars(manifests)[DEFAULT_POOL])
    path = tmp_path / name
    path.write_text(text)
    c = one_agent
    result = run_paddler("state", "set", "--file", str(path), "--address", c.balancer.management)
    assert result.returncode == 0, result.stderr
    (agent,) = c.wait_applied(int(json.loads(result.stdout)["version"]))
    reply = generate(c.inference, to_inference(prompt_request("Hi", max_tokens=4)))
    assert reply.summary.agent_name == agent.name == "pod"


class _Pods:
    """The example's pods as local processes: each volume a folder of the files kubelet would
    mount (the credentials Secret made as the base's comment says, the TLS Secrets issued by a
    CA made here with the Certificates' names), each port a free one, each container's
    variables and commands as rendered with those paths and ports put in."""

    def __init__(self, manifests: list[Manifest], root: Path) -> None:
        self.manifests = manifests
        self.root = root
        self.api_key = secrets.token_hex(32)
        self.secrets: dict[str, dict[str, bytes]] = {
            CREDENTIALS: {
                "agent-token": f"{secrets.token_hex(32)}\n".encode(),
                "admin-key": f"{secrets.token_hex(32)}\n".encode(),
                "api-keys": f"my-app:{self.api_key}\n".encode(),
            }
        }
        ca = trustme.CA()
        for certificate in _by_kind(manifests, "Certificate").values():
            spec = certificate["spec"]
            if not spec.get("isCA"):
                leaf = ca.issue_cert(*spec["dnsNames"], *spec.get("ipAddresses", []))
                self.secrets[spec["secretName"]] = {
                    "tls.crt": leaf.cert_chain_pems[0].bytes(),
                    "tls.key": leaf.private_key_pem.bytes(),
                    "ca.crt": ca.cert_pem.bytes(),
                }
        self._ports: dict[tuple[str, int], int] = {}
        self._folders: dict[str, dict[str, Path]] = {}

    def _volumes(self, deployment: str) -> dict[str, Path]:
        """The pod's volumes, written once."""
        if deployment in self._folders:
            return self._folders[deployment]
        folders = {}
        for volume in _pod(self.manifests, deployment)["volumes"]:
            folder = self.root / deployment / volume["name"]
            folder.mkdir(parents=True)
            data: dict[str, bytes] = {}
            if "secret" in volume:
                data = self.secrets[volume["secret"]["secretName"]]
            elif "configMap" in volume:
                config_map = _by_kind(self.manifests, "ConfigMap")[volume["configMap"]["name"]]
                data = {key: text.encode() for key, text in config_map["data"].items()}
            source = volume.get("secret") or volume.get("configMap") or {}
            paths = {i["key"]: i["path"] for i in source.get("items", [])} or {k: k for k in data}
            for key, path in paths.items():
                (folder / path).write_bytes(data[key])
            folders[volume["name"]] = folder
        self._folders[deployment] = folders
        return folders

    def port(self, deployment: str, port: int) -> int:
        """The free port here that stands for a pod's port."""
        return self._ports.setdefault((deployment, port), free_port())

    def service_port(self, service_name: str, port: int, deployment: str = "") -> int:
        """The free port here where a Service's port leads (its pod's container port): of
        ``deployment``'s pod, where the Service selects several."""
        service = _by_kind(self.manifests, "Service")[service_name]
        selector = {"matchLabels": service["spec"]["selector"]}
        selected = _deployments_selected(self.manifests, selector)
        if not deployment:
            (deployment,) = selected
        assert deployment in selected, (service_name, deployment)
        (target,) = [p["targetPort"] for p in service["spec"]["ports"] if p["port"] == port]
        (number,) = [
            p["containerPort"]
            for c in _pod(self.manifests, deployment)["containers"]
            for p in c.get("ports", [])
            if p["name"] == target
        ]
        return self.port(deployment, number)

    def _local(self, text: str, mounts: dict[str, Path], deployment: str) -> str:
        """A path under a mount put in its folder; an address's port put on a free one (a
        Service's name and port on 127.0.0.1 and its pod's)."""
        for mount_path, folder in mounts.items():
            if text.startswith(f"{mount_path}/"):
                return str(folder / text.removeprefix(f"{mount_path}/"))
        match = re.fullmatch(r"([\w.-]+):(\d+)", text)
        if not match:
            return text
        host, port = match.group(1), int(match.group(2))
        if host[0].isdigit():
            return f"{host}:{self.port(deployment, port)}"
        return f"{LOOPBACK}:{self.service_port(host, port)}"

    def container(self, deployment: str, name: str) -> _Container:
        """A container of the pod, ready to run."""
        volumes = self._volumes(deployment)
        container = _container(self.manifests, deployment, name)
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}
        downward = {"status.podIP": LOOPBACK, "metadata.name": f"{deployment}-pod"}
        env = {}
        for variable in container.get("env", []):
            source = variable.get("valueFrom", {})
            if "fieldRef" in source:
                env[variable["name"]] = downward[source["fieldRef"]["fieldPath"]]
            elif "resourceFieldRef" in source:
                env[variable["name"]] = "1"
            elif variable["name"] == "PADDLER_PORT":  # the agent's port, beside PADDLER_HOST
                env[variable["name"]] = str(self.port(deployment, int(variable["value"])))
            else:
                env[variable["name"]] = self._local(variable["value"], mounts, deployment)
        command = container.get("command", []) + container.get("args", [])
        probes = {
            kind: [self._local(a, mounts, deployment) for a in container[kind]["exec"]["command"]]
            for kind in PROBES
            if kind in container
        }
        return _Container(env, [self._local(a, mounts, deployment) for a in command], probes)


@dataclass
class _Container:
    """One container's variables, command and probe commands, with local paths and ports."""

    env: dict[str, str]
    command: list[str]
    probes: dict[str, list[str]]

    def paddler(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        """Run ``paddler ...`` in this container's environment."""
        assert command[0] == "paddler"
        return subprocess.run(
            [sys.executable, "-m", "paddler", *command[1:]],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=process_env(self.env)[0],
        )

    def probe_until_it_passes(self, kind: str, process: ServerProcess) -> None:
        """Run the probe as kubelet does, until it passes (a slow start only takes longer)."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while (result := self.paddler(self.probes[kind])).returncode != 0:
            assert process.process.poll() is None, "".join(process.lines)
            assert time.monotonic() < deadline, result.stdout + result.stderr
            time.sleep(0.5)


def test_the_tls_example_pods_start_serve_and_pass_their_probes(tmp_path: Path) -> None:
    """The balancer and an agent as the example's pods (TLS, mutual TLS, every credential):
    both start beyond loopback, their probes pass, the sidecar sets the desired state, the
    operator's CLI and a client get in with their credentials, and the metrics scrape as the
    ServiceMonitors say."""
    manifests = kustomize(EXAMPLE)
    pods = _Pods(manifests, tmp_path)
    balancer_container = pods.container("paddler-balancer", "balancer")
    sidecar = pods.container("paddler-balancer", "desired-state")
    agent_container = pods.container("paddler-agent", "agent")
    # In the cluster the agent dials the balancer's Service by its name: the name it checks.
    rendered_agent_env = _env(_container(manifests, "paddler-agent", "agent"))
    service_name = split_host_port(rendered_agent_env["PADDLER_BALANCER"])[0]
    agent_container.env["PADDLER_TLS_SERVER_NAME"] = service_name
    balancer_env = balancer_container.env
    with ExitStack() as stack:
        balancer_process = ServerProcess("balancer", [], "balancer listening", balancer_env)
        stack.callback(balancer_process.stop)
        for kind in PROBES:
            balancer_container.probe_until_it_passes(kind, balancer_process)
        once = [arg for arg in sidecar.command if arg != "--watch"]
        assert (state := sidecar.paddler(once)).returncode == 0, state.stderr
        agent_process = ServerProcess("agent", [], "agent listening", agent_container.env)
        stack.callback(agent_process.stop)
        for kind in PROBES:  # readiness: the desired state's model is loaded
            agent_container.probe_until_it_passes(kind, agent_process)
        # The operator, as through kubectl port-forward: the admin key and a certificate.
        management = f"{LOOPBACK}:{_port(balancer_env['PADDLER_MANAGEMENT_ADDR'])}"
        listed = sidecar.paddler(["paddler", "agents", "--address", management])
        assert listed.returncode == 0, listed.stderr
        assert agent_container.env["PADDLER_NAME"] in listed.stdout
        # A client with its API key, trusting the CA: the balancer dials the agent with TLS.
        key_file = tmp_path / "api-key"
        key_file.write_text(pods.api_key)
        ca = balancer_env["PADDLER_TLS_CA"]
        client = _Container({"PADDLER_API_KEY_FILE": str(key_file), "PADDLER_TLS_CA": ca}, [], {})
        inference = f"{LOOPBACK}:{_port(balancer_env['PADDLER_INFERENCE_ADDR'])}"
        dial = ["--address", inference, "--tls-server-name", service_name]
        reply = client.paddler(["paddler", "generate", *dial, "--max-tokens", "4", "--raw", "Hi"])
        assert reply.returncode == 0, reply.stderr
        assert reply.stdout.strip()
        _scrape_as_the_service_monitors_say(manifests, pods, {"paddler-balancer", "paddler-agent"})


def _scrape_as_the_service_monitors_say(
    manifests: list[Manifest], pods: _Pods, running: set[str]
) -> dict[str, str]:
    """Each ServiceMonitor's endpoint on each of the ``running`` Deployments' pods, scraped as
    Prometheus would: no credential, its scheme, the CA and the name its tlsConfig says. The
    pages, by Deployment."""
    pages = {}
    for monitor in _by_kind(manifests, "ServiceMonitor").values():
        (endpoint,) = monitor["spec"]["endpoints"]
        selector = monitor["spec"]["selector"]["matchLabels"]
        ((name, service),) = [
            (name, s)
            for name, s in _by_kind(manifests, "Service").items()
            if selector.items() <= s["metadata"]["labels"].items()
        ]
        (port,) = [p["port"] for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
        ca = endpoint["tlsConfig"]["ca"]["secret"]
        context = ssl.create_default_context(cadata=pods.secrets[ca["name"]][ca["key"]].decode())
        selected = _deployments_selected(manifests, {"matchLabels": service["spec"]["selector"]})
        assert selected & running, name
        for deployment in selected & running:
            here = f"{LOOPBACK}:{pods.service_port(name, port, deployment)}"
            with httpx.Client(verify=context, timeout=30) as scraper:
                response = scraper.get(
                    f"{endpoint['scheme']}://{here}{endpoint['path']}",
                    extensions={"sni_hostname": endpoint["tlsConfig"]["serverName"]},
                )
            assert response.status_code == 200, (name, deployment)
            assert "# TYPE paddler_" in response.text
            pages[deployment] = response.text
    return pages


@dataclass
class _PoolPods:
    """The example's balancer pod and an agent of one more pool, running as their pods would."""

    manifests: list[Manifest]
    pods: _Pods
    pool: str
    deployment: str
    state: desired_state_pb2.DesiredState
    sidecar: _Container
    balancer_env: dict[str, str]

    def shown(self) -> dict[str, Any]:
        """``paddler state show --pool POOL``, run in the pool's sidecar (its admin key and
        certificate) against the balancer it keeps."""
        (address,) = _flag(self.sidecar.command, "--address")
        result = self.sidecar.paddler(
            ["paddler", "state", "show", "--pool", self.pool, "--address", address]
        )
        assert result.returncode == 0, result.stderr
        shown: dict[str, Any] = json.loads(result.stdout)
        return shown

    def wait_applied(self) -> None:
        """Wait until the pool's agents all serve its state (a slow download only takes
        longer)."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            rollout = self.shown()["rollout"]
            assert not rollout["failure"], rollout
            if int(rollout["version"]) >= 1 and rollout["agents"] == rollout["applied"] >= 1:
                return
            assert time.monotonic() < deadline, rollout
            time.sleep(0.5)

    def chat(self, model: str) -> dict[str, Any]:
        """An OpenAI chat completion naming ``model``, as a client with its API key sends it
        (trusting the CA)."""
        context = ssl.create_default_context(cafile=self.balancer_env["PADDLER_TLS_CA"])
        address = f"{LOOPBACK}:{_port(self.balancer_env['PADDLER_OPENAI_ADDR'])}"
        request = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        with httpx.Client(verify=context, timeout=120) as client:
            response = client.post(
                f"https://{address}/v1/chat/completions",
                json=request,
                headers={"Authorization": f"Bearer {self.pods.api_key}"},
            )
        assert response.status_code == 200, response.text
        reply: dict[str, Any] = response.json()
        return reply


@pytest.fixture(scope="module")
def gemma_pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_PoolPods]:
    """The example's balancer pod (the balancer and the pool gemma's sidecar, --watch, as
    rendered) and an agent of the pool gemma, TLS on. The agents download Gemma from Hugging
    Face: here a stand-in for the Hub serves the packaged gemma3-270m's file as the repository
    and file the pool's state names."""
    manifests = kustomize(EXAMPLE)
    pods = _Pods(manifests, tmp_path_factory.mktemp("pool-pods"))
    pool = "gemma"
    (deployment,) = [name for name, d in _agents(manifests).items() if _pool_of(d) == pool]
    rendered = _sidecars(manifests)[pool]
    text = _state_file(manifests, rendered)[1]
    state = json_format.Parse(text, desired_state_pb2.DesiredState())
    hub = state.model.hugging_face
    balancer_container = pods.container("paddler-balancer", "balancer")
    sidecar = pods.container("paddler-balancer", rendered["name"])
    agent_container = pods.container(deployment, "agent")
    # In the cluster the agent dials the balancer's Service by its name: the name it checks.
    balancer_address = _env(_container(manifests, deployment, "agent"))["PADDLER_BALANCER"]
    agent_container.env["PADDLER_TLS_SERVER_NAME"] = split_host_port(balancer_address)[0]
    with ExitStack() as stack:
        model = PACKAGED_RESOLVERS["gemma3-270m"]()
        endpoint = stack.enter_context(local_hub(hub.repo, hub.file, model))
        agent_container.env.update({"HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_XET": "1"})
        balancer_process = ServerProcess(
            "balancer", [], "balancer listening", balancer_container.env
        )
        stack.callback(balancer_process.stop)
        balancer_container.probe_until_it_passes("readinessProbe", balancer_process)
        assert sidecar.command[:3] == STATE_SET
        watch = ServerProcess("state", sidecar.command[2:], "desired state set", sidecar.env)
        stack.callback(watch.stop)
        watch.wait_logs("desired state set")
        agent_process = ServerProcess("agent", [], "agent listening", agent_container.env)
        stack.callback(agent_process.stop)
        found = _PoolPods(manifests, pods, pool, deployment, state, sidecar, balancer_container.env)
        found.wait_applied()
        for kind in PROBES:
            agent_container.probe_until_it_passes(kind, agent_process)
        yield found


def test_a_pools_pods_serve_its_model_by_its_name(gemma_pods: _PoolPods) -> None:
    """The pool's sidecar, run as rendered, sets the pool's state from its file; the pool's
    agent (PADDLER_POOL) applies it; a request naming the pool gets the pool's model."""
    p = gemma_pods
    shown = p.shown()
    assert json_format.ParseDict(shown["state"], desired_state_pb2.DesiredState()) == p.state
    assert shown["pool"] == p.pool
    reply = p.chat(p.pool)
    assert reply["model"] == Path(p.state.model.hugging_face.file).stem
    assert reply["choices"][0]["message"]["content"]


def test_a_pools_autoscaler_reads_its_own_series(gemma_pods: _PoolPods) -> None:
    """The series the pool's HPA reads through the adapter's rules, as Prometheus scrapes the
    balancer: labelled with the pool, its slots those of its serving agent alone."""
    p = gemma_pods
    pages = _scrape_as_the_service_monitors_say(
        p.manifests, p.pods, {"paddler-balancer", p.deployment}
    )
    samples = parse_samples(pages["paddler-balancer"])
    _check_the_series_exported(samples, p.pool)
    slots = float(_env(_container(p.manifests, p.deployment, "agent"))["PADDLER_SLOTS"])
    assert sample_value(samples, "paddler_pool_slots", pool=p.pool, state="total") == slots
    assert sample_value(samples, "paddler_pool_agents", pool=p.pool, state="serving") == 1
    # The default pool has no agent here: its HPA reads none of the pool's.
    assert sample_value(samples, "paddler_pool_slots", pool=DEFAULT_POOL, state="total") == 0


def test_a_pools_sidecar_keeps_its_aliases(gemma_pods: _PoolPods) -> None:
    """The aliases the pool's sidecar names are the pool's: requests may give them."""
    p = gemma_pods
    aliases = _flag(_sidecars(p.manifests)[p.pool]["args"], "--alias")
    assert aliases
    assert p.shown()["aliases"] == aliases
    for alias in aliases:
        assert p.chat(alias)["model"] == Path(p.state.model.hugging_face.file).stem
