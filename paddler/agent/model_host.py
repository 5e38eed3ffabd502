"""Applies desired states on an agent: resolve the model, drain, rebuild the engine, report."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from pathlib import Path

import structlog

from paddler.agent.config import AgentConfig
from paddler.agent.default_model import default_model_path
from paddler.agent.download_progress import DownloadCancelledError
from paddler.agent.engine import Engine
from paddler.agent.engine_settings import (
    EngineSettings,
    build_engine,
    job_factory,
    same_engine,
    state_sampling,
    state_template,
)
from paddler.agent.llama_model import check_model_file
from paddler.agent.memory_budget import available_memory_bytes
from paddler.agent.metrics import AgentMetrics
from paddler.agent.model_shape import read_model_shape
from paddler.agent.model_source import resolve_model
from paddler.agent.servicer import AgentServicer
from paddler.agent.state_fit import check_allowed_file, fit_engine
from paddler.common.chat_template import ChatTemplate
from paddler.common.errors import PaddlerError, UnavailableError
from paddler.common.rpc_status import DRAIN_TIMED_OUT
from paddler.common.status_bounds import MAX_ISSUE_CHARS
from paddler.v1 import desired_state_pb2, status_pb2

log = structlog.get_logger(__name__)


class ModelHost:
    """Owns the agent's engine across model swaps; the newest desired state always wins.

    The running model serves until the new one is resolved (downloaded) and checked; only the
    drain and the load take the agent out of service. A state that differs only in sampling
    defaults or the chat template is applied without a reload. A state that fails leaves the
    previous one serving.
    """

    def __init__(
        self, config: AgentConfig, servicer: AgentServicer, metrics: AgentMetrics | None = None
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._servicer = servicer
        self._report = servicer.report
        self._pending: desired_state_pb2.VersionedDesiredState | None = None
        self._wakeup = asyncio.Event()
        self._engine: Engine | None = None
        self._applied: desired_state_pb2.VersionedDesiredState | None = None
        self._settings_in_use: EngineSettings | None = None
        # Set while a state is resolved (downloaded): a newer state cancels that download.
        self._resolving: threading.Event | None = None

    def submit(self, update: desired_state_pb2.VersionedDesiredState) -> None:
        """Apply ``update`` next (version 0: no desired state, serve the local model)."""
        self._pending = update
        if self._resolving is not None:
            self._resolving.set()
        self._wakeup.set()

    async def run(self) -> None:
        """Apply submitted states one at a time until cancelled; then stop the engine."""
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                update, self._pending = self._pending, None
                if update is not None:
                    await self._apply(update)
        finally:
            engine, self._engine = self._engine, None
            if engine is not None:
                self._servicer.detach()
                engine.stop()

    async def _apply(self, update: desired_state_pb2.VersionedDesiredState) -> None:
        if self._engine is not None and update.version == 0:
            self._adopt(update)  # no desired state: keep what runs
            return
        applied = self._applied
        if self._engine is not None and applied is not None and update.state == applied.state:
            self._adopt(update)  # the same state again, maybe renumbered by a new balancer
            return
        report = self._report
        report.phase, report.issues = status_pb2.STATE_PHASE_APPLYING, []
        report.attempted_version, report.attempted_epoch = update.version, update.epoch
        report.bytes_done = report.bytes_total = 0
        self._servicer.notify()
        if self._engine is not None and applied is not None and same_engine(update, applied):
            await self._reconfigure(update)
            return
        cancelled = self._resolving = threading.Event()
        try:
            settings = await asyncio.to_thread(self._settings, update, cancelled)
        except DownloadCancelledError:
            log.info("download cancelled by a newer desired state", version=update.version)
            return
        except Exception as error:  # noqa: BLE001 - any failure must become a reported issue
            self._failed(update.version, error)
            return
        finally:
            self._resolving = None
        try:
            await self._swap(settings)
        except Exception as error:  # noqa: BLE001
            self._failed(update.version, error)
            await self._restore()
            return
        self._record_applied(update)
        log.info(
            "desired state applied",
            version=update.version,
            epoch=update.epoch,
            model=settings.model.name,
        )

    async def _reconfigure(self, update: desired_state_pb2.VersionedDesiredState) -> None:
        """New sampling defaults or chat template on the running engine: no reload, no drain
        (requests already admitted keep what they were built with)."""
        engine, running = self._engine, self._settings_in_use
        assert engine is not None and running is not None
        settings = replace(
            running,
            sampling=state_sampling(update.state),
            chat_template=state_template(update.state),
        )
        try:
            jobs = await asyncio.to_thread(job_factory, engine, settings)
        except Exception as error:  # noqa: BLE001 - reported; the running settings stay
            self._failed(update.version, error)
            return
        self._settings_in_use = settings
        self._servicer.attach(engine, jobs, settings.context)
        self._record_applied(update)
        log.info("desired state applied without a reload", version=update.version)

    def _adopt(self, update: desired_state_pb2.VersionedDesiredState) -> None:
        """Report ``update`` as applied without reloading: what runs already is that state."""
        renumbered = update != self._applied
        self._record_applied(update)
        if renumbered:
            log.info("desired state adopted", version=update.version, epoch=update.epoch)

    def _record_applied(self, update: desired_state_pb2.VersionedDesiredState) -> None:
        self._applied = update
        report = self._report
        report.phase, report.issues = status_pb2.STATE_PHASE_APPLIED, []
        report.applied_version, report.applied_epoch = update.version, update.epoch
        report.attempted_version, report.attempted_epoch = update.version, update.epoch
        self._servicer.notify()

    async def _swap(self, settings: EngineSettings) -> None:
        """Let in-flight requests finish on the old engine (cut after --drain-timeout), then
        serve from a new one."""
        old = self._servicer.detach()
        claims = self._servicer.claims
        if old is not None:
            try:
                await asyncio.wait_for(claims.wait_idle(), self._config.drain_timeout_s)
            except TimeoutError:
                log.warning(
                    "drain timed out: cutting the requests in flight",
                    requests=claims.in_use,
                    drain_timeout_s=self._config.drain_timeout_s,
                )
                old.abort(
                    UnavailableError(
                        "the agent is swapping its model and its drain timed out",
                        reason=DRAIN_TIMED_OUT,
                    )
                )
        await claims.wait_idle()
        self._engine = None
        if old is not None:
            await asyncio.to_thread(old.stop)
        engine, jobs = await asyncio.to_thread(build_engine, settings, self._metrics)
        engine.start(asyncio.get_running_loop())
        self._engine, self._settings_in_use = engine, settings
        self._servicer.attach(engine, jobs, settings.context)

    async def _restore(self) -> None:
        """After a failed build, serve the previous settings again (best effort)."""
        previous = self._settings_in_use
        if self._engine is not None or previous is None:
            return
        try:
            await self._swap(previous)
        except Exception as error:
            log.exception("previous model could not be restored", issue=str(error))
        else:
            log.warning("previous model restored", model=previous.model.name)

    def _settings(
        self, update: desired_state_pb2.VersionedDesiredState, cancelled: threading.Event
    ) -> EngineSettings:
        """Resolve and check everything before the old engine is touched (blocking; a
        download stops with DownloadCancelledError once ``cancelled`` is set)."""
        config, state = self._config, update.state
        mmproj = None
        if update.version == 0:
            path = config.model or default_model_path()
            mmproj = config.mmproj
        else:
            path = self._resolve(state.model, "state.model", cancelled)
            if state.HasField("mmproj"):
                mmproj = self._resolve(state.mmproj, "state.mmproj", cancelled)
        check_model_file(path)
        if mmproj is not None:
            check_model_file(mmproj)
        defaults = state.defaults
        template = state_template(state)
        if template is not None:
            ChatTemplate(template, "", "")  # compiles, or the state fails before the swap
        budget, freed = self._budget()
        engine, context, memory = fit_engine(
            read_model_shape(path), config, defaults, state.placement, budget=budget, freed=freed
        )
        return EngineSettings(
            model=path,
            engine=engine,
            context=context,
            memory_bytes=memory,
            sampling=state_sampling(state),
            chat_template=template,
            chat_template_timeout_s=config.chat_template_timeout_s,
            mmproj=mmproj,
        )

    def _resolve(
        self, source: desired_state_pb2.ModelSource, field: str, cancelled: threading.Event
    ) -> Path:
        """A model (or projector) file of the state, within the agent's source policy."""
        sources = self._config.sources
        sources.check(source, field)
        path = resolve_model(source, self._report, cancelled, sources)
        if source.WhichOneof("source") == "local_path":
            check_allowed_file(path, sources)
        return path

    def _budget(self) -> tuple[int | None, int]:
        """The bytes a model may take (None: unknown) and what the running engine gives back
        on top (nothing with a fixed --memory-budget: one engine at a time)."""
        budget = self._config.memory_budget_bytes or available_memory_bytes()
        running = self._settings_in_use
        freed = 0
        if not self._config.memory_budget_bytes and running is not None and self._engine:
            freed = running.memory_bytes
        return budget, freed

    def _failed(self, version: int, error: Exception) -> None:
        issue = (
            error.message if isinstance(error, PaddlerError) else f"{type(error).__name__}: {error}"
        )
        self._report.phase = status_pb2.STATE_PHASE_FAILED
        self._report.issues = [issue[:MAX_ISSUE_CHARS]]
        self._servicer.notify()
        log.error("desired state failed", version=version, issue=issue)
