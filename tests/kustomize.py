"""Renders deploy/ as ``kubectl apply -k`` would, for the parts of kustomize deploy/ uses.

A kustomization key this renderer does not know fails the render, so deploy/ cannot grow a
feature the tests would silently skip. Checked against ``kubectl kustomize`` (v5.5) by hand.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonpatch
import yaml

Manifest = dict[str, Any]
KNOWN_KEYS = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "components",
    "images",
    "configMapGenerator",
    "generatorOptions",
    "patches",
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def render(directory: Path) -> list[Manifest]:
    """The manifests of the kustomization (or component) in ``directory``."""
    return _apply(directory, [])


def _apply(directory: Path, inherited: list[Manifest]) -> list[Manifest]:
    kustomization: Manifest = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KNOWN_KEYS
    if unknown:
        raise ValueError(f"{directory}: the test renderer does not know {sorted(unknown)}")
    objects = copy.deepcopy(inherited)
    for resource in kustomization.get("resources", []):
        path = directory / resource
        if path.is_dir():
            objects += render(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    hashless = kustomization.get("generatorOptions", {}).get("disableNameSuffixHash", False)
    for generator in kustomization.get("configMapGenerator", []):
        _generate(directory, generator, objects, hashless=hashless)
    for component in kustomization.get("components", []):
        objects = _apply(directory / component, objects)
    for patch in kustomization.get("patches", []):
        _patch(directory, patch, objects)
    for image in kustomization.get("images", []):
        _set_image(image, objects)
    if "namespace" in kustomization:
        for manifest in objects:
            if manifest["kind"] not in CLUSTER_SCOPED:
                manifest["metadata"]["namespace"] = kustomization["namespace"]
    return objects


def _generate(
    directory: Path, generator: Manifest, objects: list[Manifest], *, hashless: bool
) -> None:
    data = {Path(file).name: (directory / file).read_text() for file in generator["files"]}
    behavior = generator.get("behavior", "create")
    name = generator["name"]
    if behavior == "replace":
        (existing,) = [
            o for o in objects if (o["kind"], o["metadata"]["name"]) == ("ConfigMap", name)
        ]
        existing["data"] = data
        return
    if behavior != "create" or not hashless:
        raise ValueError(f"{directory}: only hash-less create and replace generators are known")
    objects.append(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
    )


def _patch(directory: Path, patch: Manifest, objects: list[Manifest]) -> None:
    operations = yaml.safe_load((directory / patch["path"]).read_text())
    if not isinstance(operations, list):
        raise TypeError(f"{patch['path']}: only JSON 6902 patches (a list of operations)")
    target = patch["target"]
    if set(target) - {"kind", "name"}:
        raise ValueError(f"{patch['path']}: targets by kind and name only")
    matched = [
        o
        for o in objects
        if o["kind"] == target["kind"]
        and target.get("name", o["metadata"]["name"]) == o["metadata"]["name"]
    ]
    if not matched:
        raise ValueError(f"{patch['path']}: nothing matches {target}")
    for manifest in matched:
        jsonpatch.apply_patch(manifest, operations, in_place=True)


def _set_image(image: Manifest, objects: list[Manifest]) -> None:
    for container in containers(objects):
        name = container["image"].split(":")[0]
        if name == image["name"]:
            container["image"] = f"{image.get('newName', name)}:{image['newTag']}"


def containers(objects: list[Manifest]) -> list[Manifest]:
    """Every container of every pod template in ``objects``."""
    found: list[Manifest] = []
    for manifest in objects:
        pod = manifest.get("spec", {}).get("template", {}).get("spec", {})
        found += pod.get("containers", []) + pod.get("initContainers", [])
    return found
