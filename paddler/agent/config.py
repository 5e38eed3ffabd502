"""Settings of one agent process (filled from the ``paddler agent`` flags)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AgentConfig:
    """Everything ``paddler agent`` needs to run."""

    # The GGUF given on the command line; None means the balancer's choice, else the default.
    model: Path | None
    name: str
    host: str
    port: int
    slots: int
    threads: int
    context_size: int
    batch_size: int
    # Keep finished requests' KV caches in their slots for later prompts with the same prefix.
    prompt_cache: bool
    # Seconds a conversation's chat-template rendering may take before the request fails.
    chat_template_timeout_s: float
    grace_period_s: float
    # host:port of the balancer's management server; "" runs the agent on its own.
    balancer: str
    # host:port the balancer should dial; "" derives it from POD_IP or --host and the bound port.
    advertise: str
    # Where the agent's Prometheus metrics are served; "" turns it off.
    metrics_address: str = ""
