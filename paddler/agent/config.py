"""Settings of one agent process (filled from the ``paddler agent`` flags)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from paddler.common.model_sources import ModelSourcePolicy
from paddler.common.placement import PlacementSettings
from paddler.common.pool_names import DEFAULT_POOL
from paddler.common.tls import ClientTls, ServerTls

DEFAULT_PROMPT_CACHE_MIB = 8192
"""llama-server's ``--cache-ram`` default."""


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
    # Listen beyond loopback without the agent token (logged as a warning).
    allow_insecure: bool = False
    # TLS on the agent's ports (with client_ca: the balancer must present a certificate).
    tls: ServerTls | None = None
    # How the balancer is dialled: TLS (its CA) or plain.
    balancer_tls: ClientTls | None = None
    # The agent token: presented to the balancer, required of whoever calls Generate/Embed.
    agent_token_file: Path | None = None
    # Where desired states may take models from (empty lists: anywhere).
    sources: ModelSourcePolicy = field(default_factory=ModelSourcePolicy)
    # Bytes a model (weights and KV cache) may take; 0: what the machine has free.
    memory_budget_bytes: int = 0
    # Host memory (MiB) for slots' caches kept after the slots are reused; 0 turns it off.
    prompt_cache_mib: int = DEFAULT_PROMPT_CACHE_MIB
    # Seconds a model swap waits for in-flight requests before it cuts them (the balancer
    # resumes them elsewhere).
    drain_timeout_s: float = 120.0
    # Seconds the engine may have work without finishing a decode step before the agent
    # counts it as hung.
    engine_stall_after_s: float = 60.0
    # GPU layers, split, flash attention, KV cache types, mmap/mlock, n_ubatch (flags; a
    # desired state's placement takes their place field by field).
    placement: PlacementSettings = field(default_factory=PlacementSettings)
    # The multimodal projector of --model (images), until a desired state says otherwise.
    mmproj: Path | None = None
    # The pool the agent joins: the balancer sends it that pool's desired state and requests.
    pool: str = DEFAULT_POOL
