"""``paddler state set``: replace a pool's desired state."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from paddler.cli.management_client import CALL_TIMEOUT_S, management_stub
from paddler.cli.options import (
    DEFAULT_MANAGEMENT_ADDRESS,
    AdminKeyFileOption,
    LogLevelOption,
    ManagementAddressOption,
    TlsCaOption,
    TlsCertOption,
    TlsKeyOption,
    TlsServerNameOption,
    dialer,
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
    state_placement,
)
from paddler.cli.rollout_watch import wait_for_rollout
from paddler.cli.state_file import read_state_file, watch_state_file
from paddler.cli.state_flags import model_source, state_from_flags
from paddler.cli.state_show import PoolOption, print_state
from paddler.common.desired_state import PACKAGED_MODELS
from paddler.common.pool_names import DEFAULT_POOL
from paddler.v1 import management_pb2


def set_state(
    model: Annotated[
        str | None,
        typer.Option(
            envvar="PADDLER_STATE_MODEL",
            help=f"{' or '.join(PACKAGED_MODELS)}, hf:OWNER/REPO/FILE.gguf[@REVISION], "
            "an https:// URL of a GGUF, or a GGUF path on the agents.",
        ),
    ] = None,
    model_sha256: Annotated[
        str | None,
        typer.Option(
            envvar="PADDLER_STATE_MODEL_SHA256",
            help="With a URL --model: the hex sha256 the downloaded file must have.",
        ),
    ] = None,
    mmproj: Annotated[
        str | None,
        typer.Option(
            envvar="PADDLER_STATE_MMPROJ",
            help="The model's multimodal projector (images), in the same forms as --model; "
            "default: none.",
        ),
    ] = None,
    mmproj_sha256: Annotated[
        str | None,
        typer.Option(
            envvar="PADDLER_STATE_MMPROJ_SHA256",
            help="With a URL --mmproj: the hex sha256 the downloaded file must have.",
        ),
    ] = None,
    address: ManagementAddressOption = DEFAULT_MANAGEMENT_ADDRESS,
    context_size: Annotated[
        int | None,
        typer.Option(
            envvar="PADDLER_STATE_CONTEXT_SIZE",
            help="Context per slot; default: each agent's flag.",
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            envvar="PADDLER_STATE_BATCH_SIZE", help="n_batch; default: each agent's flag."
        ),
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(envvar="PADDLER_STATE_TEMPERATURE", help="Default temperature."),
    ] = None,
    top_k: Annotated[
        int | None, typer.Option(envvar="PADDLER_STATE_TOP_K", help="Default top-k.")
    ] = None,
    top_p: Annotated[
        float | None, typer.Option(envvar="PADDLER_STATE_TOP_P", help="Default top-p.")
    ] = None,
    min_p: Annotated[
        float | None, typer.Option(envvar="PADDLER_STATE_MIN_P", help="Default min-p.")
    ] = None,
    repeat_penalty: Annotated[
        float | None,
        typer.Option(envvar="PADDLER_STATE_REPEAT_PENALTY", help="Default repeat penalty."),
    ] = None,
    presence_penalty: Annotated[
        float | None,
        typer.Option(envvar="PADDLER_STATE_PRESENCE_PENALTY", help="Default presence penalty."),
    ] = None,
    frequency_penalty: Annotated[
        float | None,
        typer.Option(envvar="PADDLER_STATE_FREQUENCY_PENALTY", help="Default frequency penalty."),
    ] = None,
    chat_template: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            envvar="PADDLER_STATE_CHAT_TEMPLATE",
            help="Jinja file overriding the GGUF's template.",
        ),
    ] = None,
    n_gpu_layers: NGpuLayersOption = None,
    split_mode: SplitModeOption = None,
    tensor_split: TensorSplitOption = None,
    main_gpu: MainGpuOption = None,
    flash_attention: FlashAttentionOption = None,
    cache_type_k: CacheTypeKOption = None,
    cache_type_v: CacheTypeVOption = None,
    mmap: MmapOption = None,
    mlock: MlockOption = None,
    ubatch_size: UbatchSizeOption = None,
    file: Annotated[
        Path | None,
        typer.Option(
            envvar="PADDLER_DESIRED_STATE_FILE",
            dir_okay=False,
            help="JSON file holding the whole desired state (as 'state show' prints under "
            '"state"), instead of the other flags.',
        ),
    ] = None,
    watch: Annotated[
        bool,
        typer.Option(
            envvar="PADDLER_STATE_WATCH",
            help="With --file: keep running and set the file's state again whenever the file "
            "changes or the balancer's state differs from it (a restarted balancer, a change "
            "made elsewhere).",
        ),
    ] = False,
    watch_interval: Annotated[
        float,
        typer.Option(
            min=0.1,
            envvar="PADDLER_STATE_WATCH_INTERVAL",
            help="Seconds between two checks with --watch.",
        ),
    ] = 5.0,
    wait: Annotated[
        bool,
        typer.Option(
            envvar="PADDLER_STATE_WAIT",
            help="Follow the rollout (a progress bar per agent on a terminal, a line per change "
            "otherwise) until every agent applied the state; exit 1 if it stopped on a failure, "
            "a newer state replaced it, or --wait-timeout passed.",
        ),
    ] = False,
    wait_timeout: Annotated[
        float,
        typer.Option(
            min=1.0,
            envvar="PADDLER_STATE_WAIT_TIMEOUT",
            help="Seconds --wait follows the rollout before it gives up.",
        ),
    ] = 3600.0,
    pool: PoolOption = DEFAULT_POOL,
    alias: Annotated[
        list[str] | None,
        typer.Option(
            envvar="PADDLER_STATE_ALIAS",
            help="Another model name requests may give for the pool (repeat for more); "
            "replaces the pool's aliases. Default: keep them.",
        ),
    ] = None,
    clear_aliases: Annotated[
        bool,
        typer.Option(envvar="PADDLER_STATE_CLEAR_ALIASES", help="Remove the pool's aliases."),
    ] = False,
    log_level: LogLevelOption = "info",
    admin_key_file: AdminKeyFileOption = None,
    tls_ca: TlsCaOption = None,
    tls_server_name: TlsServerNameOption = "",
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
) -> None:
    """Replace a pool's desired state (a new --pool makes a new pool); it rolls out to the
    pool's agents (unset values keep the defaults)."""
    if alias and clear_aliases:
        raise typer.BadParameter("give --alias or --clear-aliases, not both")
    aliases = None if not alias and not clear_aliases else management_pb2.PoolAliases(names=alias)
    connection = dialer(tls_ca, tls_server_name, admin_key_file, (tls_cert, tls_key))
    sampling = {
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "min_p": min_p,
        "repeat_penalty": repeat_penalty,
        "presence_penalty": presence_penalty,
        "frequency_penalty": frequency_penalty,
    }
    placing = {
        "n_gpu_layers": n_gpu_layers,
        "split_mode": split_mode,
        "tensor_split_text": tensor_split,
        "main_gpu": main_gpu,
        "flash_attention": flash_attention,
        "cache_type_k": cache_type_k,
        "cache_type_v": cache_type_v,
        "mmap": mmap,
        "mlock": mlock,
        "ubatch_size": ubatch_size,
    }
    if file is not None:
        flags = {
            "model": model,
            "model_sha256": model_sha256,
            "mmproj": mmproj,
            "mmproj_sha256": mmproj_sha256,
            "context_size": context_size,
            "batch_size": batch_size,
            "chat_template": chat_template,
            **sampling,
            **{name.removesuffix("_text"): value for name, value in placing.items()},
        }
        given = [name for name, value in flags.items() if value is not None]
        if given:
            raise typer.BadParameter(
                f"--file holds the whole state; leave out --{given[0].replace('_', '-')}",
                param_hint="--file",
            )
        if watch:
            watch_state_file(file, address, connection, watch_interval, log_level, pool, aliases)
            return
        state = read_state_file(file)
    elif watch:
        raise typer.BadParameter("--watch needs --file", param_hint="--watch")
    elif model is None:
        raise typer.BadParameter("give --model, or --file with the whole state")
    else:
        source = model_source(model, model_sha256)
        state = state_from_flags(source, context_size, batch_size, chat_template, sampling)
        state.placement.CopyFrom(state_placement(**placing))  # type: ignore[arg-type]
        if mmproj is not None:
            state.mmproj.CopyFrom(model_source(mmproj, mmproj_sha256, "--mmproj"))
        elif mmproj_sha256 is not None:
            raise typer.BadParameter("give --mmproj with it", param_hint="--mmproj-sha256")
    with management_stub(address, connection) as stub:
        request = management_pb2.SetDesiredStateRequest(state=state, pool=pool, aliases=aliases)
        reply = stub.SetDesiredState(request, timeout=CALL_TIMEOUT_S)
        print_state(reply.desired_state)
        if wait:
            stored = reply.desired_state
            wait_for_rollout(stub, stored, wait_timeout)
