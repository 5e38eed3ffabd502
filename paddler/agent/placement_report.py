"""Where llama.cpp put a model, read back from what it logged while loading it and making its
context (the C API has no getters for most of it)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from paddler.agent.devices import DeviceInfo
from paddler.v1 import status_pb2

_LAYER = re.compile(r"layer +\d+ assigned to device (\S+?),")
_LOAD_MODE = re.compile(r"load_mode = (\w+)")
_UBATCH = re.compile(r"n_ubatch += (\d+)")
_FLASH = re.compile(r"flash_attn += (\w+)")
_FLASH_RESOLVED = re.compile(r"Flash Attention (enabled|not supported)")
_KV_TYPES = re.compile(r"K \((\w+)\): .* V \((\w+)\):")


@dataclass(frozen=True)
class AppliedPlacement:
    """What llama.cpp did with a placement: layers per device (the output layer counts as
    one), load mode, flash attention (enabled, disabled, or auto where it did not say), KV
    cache types and n_ubatch."""

    layers_by_device: dict[str, int]
    load_mode: str
    flash_attention: str
    cache_type_k: str
    cache_type_v: str
    ubatch_size: int

    def fill(self, placement: status_pb2.ModelPlacement, devices: Sequence[DeviceInfo]) -> None:
        """Copy into a status snapshot: every device llama.cpp sees with the layers on it (and
        any the load named that the registry did not)."""
        for device in devices:
            placement.devices.add(
                name=device.name,
                description=device.description,
                memory_total_bytes=device.memory_total_bytes,
                memory_free_bytes=device.memory_free_bytes,
                layers=self.layers_by_device.get(device.name, 0),
            )
        known = {device.name for device in devices}
        for name, layers in self.layers_by_device.items():
            if name not in known:
                placement.devices.add(name=name, layers=layers)
        placement.flash_attention = self.flash_attention
        placement.cache_type_k = self.cache_type_k
        placement.cache_type_v = self.cache_type_v
        placement.ubatch_size = self.ubatch_size
        placement.load_mode = self.load_mode


def read_placement(lines: list[str]) -> AppliedPlacement:
    """The placement the log ``lines`` of one model load and its first context describe."""
    text = "\n".join(lines)
    layers = Counter(match[1] for match in _LAYER.finditer(text))
    flash = _first(_FLASH, text, "auto")
    if resolved := _FLASH_RESOLVED.search(text):
        flash = "enabled" if resolved[1] == "enabled" else "disabled"
    elif "enabling flash_attn since" in text:
        flash = "enabled"
    kv = _KV_TYPES.search(text)
    return AppliedPlacement(
        layers_by_device=dict(layers),
        load_mode=_first(_LOAD_MODE, text, "unknown"),
        flash_attention=flash,
        cache_type_k=kv[1] if kv else "unknown",
        cache_type_v=kv[2] if kv else "unknown",
        ubatch_size=int(_first(_UBATCH, text, "0")),
    )


def _first(pattern: re.Pattern[str], text: str, default: str) -> str:
    match = pattern.search(text)
    return match[1] if match else default
