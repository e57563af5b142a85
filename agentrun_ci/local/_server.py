"""LocalEmulator: the app served by uvicorn on a loopback port in a background thread."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import socket
import threading
from types import TracebackType
from typing import Any

import uvicorn

from .. import _discovery
from .._config import Config
from ._app import build_app
from ._core import Core
from ._settings import EmulatorSettings
from ._threads import blocking

__all__ = ["LocalEmulator"]

log = logging.getLogger("agentrun_ci.local")

LOOPBACK = ("127.0.0.1", "::1", "localhost")


class LocalEmulator:
    """Run the emulator in this process; use as `with` or `async with`, yielding a Config.

    The server gets its own thread and event loop, so it also serves synchronous
    callers; every kernel, process and temporary directory is gone after `stop()`.
    While it serves, it is listed in this user's registry of local emulators
    (`agentrun_ci._discovery`; `register_as` is the kind written there: `serve`, `mcp`
    or `embedded`, None = guessed from the program), which `agentrun-ci sessions list`
    and `agentrun-ci run` read.
    """

    def __init__(
        self,
        settings: EmulatorSettings | None = None,
        *,
        access_key_id: str | None = None,
        access_key_secret: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        register_as: str | None = None,
    ) -> None:
        settings = settings or EmulatorSettings()
        if access_key_id or access_key_secret:
            import attrs

            settings = attrs.evolve(
                settings, access_key_id=access_key_id, access_key_secret=access_key_secret
            )
        self.settings = settings
        self._host = host
        self._port = port
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._url: str | None = None
        self._kind = register_as
        self._registration: _discovery.Registration | None = None
        self.core: Core | None = None

    def __repr__(self) -> str:
        return f"LocalEmulator(url={self._url!r})"

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the emulator is not running: call start() or use `with`")
        return self._url

    @property
    def config(self) -> Config:
        return Config(
            access_key_id=self.settings.access_key_id,
            access_key_secret=self.settings.access_key_secret,
            account_id="local",
            control_endpoint=self.url,
            data_endpoint=self.url,
        )

    def start(self) -> Config:
        if self._thread is not None:
            return self.config
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = listening_socket(self._host, self._port)
        port = sock.getsockname()[1]
        shown = f"[{self._host}]" if family == socket.AF_INET6 else self._host
        self._url = f"http://{shown}:{port}"
        self._thread = threading.Thread(
            target=self._run, args=(sock,), name="agentrun-local-emulator", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"the local emulator did not start: {self._error}") from self._error
        atexit.register(self.stop)
        self._register()
        return self.config

    def _register(self) -> None:
        """List this emulator in the user's registry (see `agentrun_ci._discovery`)."""
        core = self.core
        # Sandboxed code that runs as us outside the jail can read our files: it must not
        # find the key pair that keeps it from driving this emulator.
        me = os.geteuid() if hasattr(os, "geteuid") else None
        withhold = core is None or (core.jail is None and core.uid in (None, me))
        self._registration = _discovery.register(
            url=self.url,
            kind=self._kind or _discovery.program_kind(),
            access_key_id=self.settings.access_key_id,
            access_key_secret=self.settings.access_key_secret,
            withhold=withhold,
        )

    def _unregister(self) -> None:
        registration, self._registration = self._registration, None
        if registration is not None:
            registration.remove()

    def _run(self, sock: socket.socket) -> None:
        try:
            asyncio.run(self._serve(sock))
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()
            sock.close()

    async def _serve(self, sock: socket.socket) -> None:
        core = Core(self.settings)
        self.core = core
        try:
            await core.start()
            server = uvicorn.Server(server_config(build_app(core)))
            self._server = server
            serving = asyncio.ensure_future(server.serve(sockets=[sock]))
            while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn has no event
                await asyncio.sleep(0.01)
            if serving.done():
                serving.result()
                raise RuntimeError("uvicorn stopped during start-up")
            self._ready.set()
            await serving
        finally:
            await core.close()

    def stop(self) -> None:
        """Stop serving; kill every kernel and process; remove the temporary directories."""
        thread = self._thread
        if thread is None:
            return
        self._unregister()  # first: no client picks an emulator that is stopping
        if self._server is not None:
            self._server.should_exit = True
        thread.join(timeout=30)
        self._thread = None
        self._server = None
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def kill_now(self) -> None:
        """Kill every kernel and process of every sandbox at once and remove the temporary
        directories, waiting for nothing: for a process that exits right after, when the
        graceful `stop()` would take too long (see `Core.kill_now`). The serving thread is
        left to die with the process."""
        self._unregister()
        core = self.core
        if core is not None and self._thread is not None:
            core.kill_now()

    def __enter__(self) -> Config:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Config:
        return await blocking(self.start)

    async def __aexit__(self, *exc_info: Any) -> None:
        await blocking(self.stop)


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for uvicorn's `serve(sockets=...)` (the emulator's, and the
    bare servers its benchmarks compare it with)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose
    # proto says TCP, and without it every response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def server_config(app: Any) -> uvicorn.Config:
    """How the emulator's uvicorn serves `app` (and the bare servers of its benchmarks)."""
    return uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        access_log=False,
        timeout_graceful_shutdown=2,
        # nothing reads the client's address: skip the X-Forwarded-* pass that uvicorn
        # makes on every request from a trusted (loopback) peer
        proxy_headers=False,
    )
