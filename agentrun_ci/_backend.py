"""Backend: which service a facade talks to, its two planes, and the emulator it may start.

`open()` chooses the cloud or the local emulator (`backend="auto"` picks local
when no credentials or endpoints are configured), starts the emulator in a
thread if needed, opens both planes and the cleanup tracker, and reaps a
crashed process's orphans. `close()` undoes all of it, in the order that keeps
the tracker able to sweep: planes closed, then the tracker's sweep, which also
stops our emulator last.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
from typing import Any

from ._async.control_plane import AsyncControlPlane
from ._async.data_plane import AsyncDataPlane
from ._config import Config
from ._errors import AgentRunError, ConfigError
from ._options import InterpreterOptions
from ._ownership import OwnerTag, Tracker, reap

__all__ = ["LOCAL_NOTICE", "Backend"]

log = logging.getLogger("agentrun_ci.interpreter")

LOCAL_NOTICE = (
    "agentrun-ci: no AgentRun credentials found; running code on THIS machine with the local "
    "emulator (backend='local'). Set AGENTRUN_ACCESS_KEY_ID/AGENTRUN_ACCESS_KEY_SECRET/"
    "AGENTRUN_ACCOUNT_ID to use the cloud."
)
_noticed = False  # LOCAL_NOTICE is logged once per process


class Backend:
    """The planes, tracker and (for the local backend) emulator of one facade."""

    def __init__(self, config: Config, options: InterpreterOptions, tag: OwnerTag) -> None:
        self._given_config = config
        self._options = options
        self._tag = tag
        self.config: Config | None = None
        self.control: AsyncControlPlane | None = None
        self.data: AsyncDataPlane | None = None
        self.tracker: Tracker | None = None
        self._emulator: Any = None
        self._emulator_started = threading.Event()
        self._open_lock: asyncio.Lock | None = None

    @property
    def is_open(self) -> bool:
        return self.control is not None

    async def open(self) -> None:
        """Choose the backend and open both planes (once; concurrent callers wait)."""
        if self.control is not None:
            return
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self.control is not None:
                return
            config = self._given_config
            remote = config.has_credentials or bool(
                config.control_endpoint and config.data_endpoint
            )
            backend = self._options.backend
            if backend != "local" and config.api_key and not config.has_credentials:
                raise ConfigError(
                    "AGENTRUN_API_KEY is set, but an API key only opens the data plane: the "
                    "interpreter also makes its template on the control plane, which needs "
                    "AGENTRUN_ACCESS_KEY_ID and AGENTRUN_ACCESS_KEY_SECRET. Set them too, use "
                    "DataPlane(Config.from_env()) on a template you already have, or unset "
                    "AGENTRUN_API_KEY (with backend='local' it is ignored)"
                )
            if backend == "local" or (backend == "auto" and not remote):
                config = await self._start_emulator()
            self.config = config
            self.tracker = Tracker(config)
            if self._emulator is not None:
                self.tracker.finalizers.append(self._emulator.stop)
            self.control = AsyncControlPlane(config)
            self.data = AsyncDataPlane(
                config, max_connections=max(100, self._options.max_concurrent_requests * 2)
            )
            if self._options.reap_on_start:
                try:
                    await reap(self.control, self._tag.owner)
                except AgentRunError as exc:
                    log.warning("could not reap orphans at start: %s", exc)

    async def _start_emulator(self) -> Config:
        global _noticed
        try:
            from .local import LocalEmulator
        except ImportError as exc:
            raise AgentRunError(
                "no AgentRun credentials and the local emulator is not installed: "
                "pip install 'agentrun-ci[local]', or set AGENTRUN_ACCESS_KEY_ID, "
                "AGENTRUN_ACCESS_KEY_SECRET and AGENTRUN_ACCOUNT_ID"
            ) from exc
        if self._options.backend == "auto" and not _noticed:
            _noticed = True
            # With no logging configured, Python's last-resort handler prints it to stderr.
            log.warning(LOCAL_NOTICE)
        emulator = LocalEmulator(_private(self._options.emulator_settings))
        # Recorded before it starts: cancelling this `await` does not stop the thread that
        # starts it, and close() must still stop what that thread started.
        self._emulator = emulator
        return await asyncio.to_thread(self._run_emulator, emulator)

    def _run_emulator(self, emulator: Any) -> Config:
        try:
            config: Config = emulator.start()
            # The emulator registers its own atexit stop, which would run *before* the
            # tracker's sweep (atexit is LIFO) and leave the sweep talking to a dead port.
            # The tracker stops the emulator itself, after deleting what we created.
            atexit.unregister(emulator.stop)
            return config
        finally:
            self._emulator_started.set()

    def _stop_emulator(self) -> None:
        """Stop our emulator once its start is over (a cancelled caller may have left it)."""
        self._emulator_started.wait()
        self._emulator.stop()

    async def close(self) -> None:
        """Close the planes, sweep what the tracker still records, stop our emulator."""
        if self.data is not None:
            await self.data.close()
        if self.control is not None:
            await self.control.close()
        if self.tracker is not None:
            # Whatever a failed step left behind, plus stopping our emulator.
            await asyncio.to_thread(self.tracker.cleanup_sync)
        elif self._emulator is not None:
            await asyncio.to_thread(self._stop_emulator)


def _private(settings: Any) -> Any:
    """Emulator settings with a fresh random key pair unless some were given.

    Sandboxed code shares this machine's loopback with the in-process emulator: signed
    requests with a key only this process holds keep that code from driving it (running
    code in other contexts, deleting sandboxes)."""
    import attrs

    from .local import EmulatorSettings
    from .local._settings import random_key_pair

    settings = settings or EmulatorSettings()
    if settings.signed:
        return settings
    key_id, secret = random_key_pair()
    return attrs.evolve(settings, access_key_id=key_id, access_key_secret=secret)
