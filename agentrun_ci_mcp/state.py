"""The server's lifetime: the lazily created interpreter, leases, background tasks, cleanup.

`AppState` is the lifespan object every tool reaches through its context. The
interpreter (template, sandbox) is created at the first tool call, never
before the handshake. Leases idle longer than `idle_timeout` are released;
`AppState.close()` releases everything and deletes what the interpreter created
(called when the lifespan ends and, by the transports, on signals).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import attrs

from .clients import ClientRegistry, ClientState
from .mcplog import ClientLogs, Redactor
from .options import ServerOptions
from .stateless import Stateless

if TYPE_CHECKING:
    from mcp.server.mcpserver import Context

    from agentrun_ci import AsyncCodeInterpreter, AsyncLease

__all__ = [
    "AppState",
    "ClientRefused",
    "RunProgress",
    "lifespan",
    "make_interpreter",
    "reap_interval",
    "sandbox_idle_timeout",
]

log = logging.getLogger("agentrun_ci_mcp")


class ClientRefused(Exception):
    """A client beyond a limit of this server: refused at once, with the limit and the flag
    that sets it (never queued: a queued client's first call waited up to a minute)."""


@attrs.define(eq=False)
class RunProgress:
    """A run_code in flight, for the progress ticker."""

    ctx: Context[AppState, Any]
    total: float
    started: float = attrs.field(factory=time.monotonic)
    last: float = -1.0

    async def tick(self, interval: float) -> None:
        """Send a progress notification: clients reset their idle timers on it."""
        elapsed = time.monotonic() - self.started
        value = min(math.floor(elapsed * 10) / 10, self.total)
        if elapsed < interval / 2 or value <= self.last:
            return
        self.last = value
        with anyio.move_on_after(max(interval, 0.5)):
            try:
                await self.ctx.report_progress(value, self.total, f"running for {elapsed:.0f} s")
            except Exception:  # a dead progress channel must not fail the run
                log.debug("progress notification failed", exc_info=True)


class AppState:
    """The lifespan object: the lazily created interpreter and every client's lease."""

    def __init__(
        self,
        options: ServerOptions,
        factory: Callable[[ServerOptions], Awaitable[AsyncCodeInterpreter]] | None = None,
    ) -> None:
        self.options = options
        self._factory = factory or make_interpreter
        self.interpreter: AsyncCodeInterpreter | None = None
        #: the interpreter close() is deleting (for kill_now)
        self._deleting: AsyncCodeInterpreter | None = None
        self._open_lock = anyio.Lock()
        self.registry = ClientRegistry()
        #: run_code calls in flight, for progress_forever
        self.runs: set[RunProgress] = set()
        #: set by close(); cleared when the lifespan starts again (in-memory tests)
        self.closing = False
        #: set when the one cleanup has finished; every later close() joins it
        self._closed: anyio.Event | None = None
        #: shielded context restarts after a cancelled run (cancelled when the server stops)
        self.interrupts: set[anyio.CancelScope] = set()
        #: log notifications for clients that sent logging/setLevel (see `mcplog`)
        self.logs = ClientLogs(Redactor(_env_secrets(options), self._client_secrets))
        #: set once the first answer went out (stdio): the SDK is loaded only after it,
        #: so that nothing delays the handshake. None: load at once (HTTP, in memory)
        self.first_answer: anyio.Event | None = None
        #: --stateless: client state travels in signed handles, not in this process
        self.stateless: Stateless | None = None
        if options.stateless:
            if options.handle_key is None:
                raise ValueError("stateless mode needs a handle key (AGENTRUN_MCP_HANDLE_KEY)")
            self.stateless = Stateless(options, options.handle_key)

    def _client_secrets(self) -> list[str]:
        """What lets someone reach a client's state: `session` handles, HTTP session ids."""
        registry = self.registry
        found = list(registry.handles)
        for key in [*registry.clients, *registry.tombstones]:
            found.append(key.partition(":")[2] if key.startswith("http:") else key)
        return found

    def begin_shutdown(self) -> None:
        """The server is stopping (stdin ended): refuse new calls, stop the ones in flight
        and any context restart after a cancelled run (the sandbox is deleted anyway)."""
        self.closing = True
        self.registry.cancel_calls()
        for scope in list(self.interrupts):
            scope.cancel()

    def kill_now(self) -> bool:
        """Kill the embedded emulator's kernels and processes at once and remove its
        directories (no graceful deletion); False when there is none (the cloud)."""
        ci = self.interpreter or self._deleting
        if ci is None:
            return False
        try:
            return ci._kill_local_now()
        except Exception as exc:
            log.warning("could not kill the local sandboxes at once: %s", _text(exc))
            return False

    @property
    def clients(self) -> dict[str, ClientState]:
        return self.registry.clients

    @property
    def handles(self) -> dict[str, str]:
        """Client keys by `session` handle."""
        return self.registry.handles

    def client(self, key: str) -> ClientState:
        return self.registry.get(key)

    async def _interpreter(self) -> AsyncCodeInterpreter:
        if self.interpreter is None:
            async with self._open_lock:
                if self.interpreter is None:
                    self.interpreter = await self._factory(self.options)
        return self.interpreter

    async def lease(self, client: ClientState) -> AsyncLease:
        """The client's lease; ClientRefused when `pool` has no sandbox free for it."""
        if client.lease is None:
            ci = await self._interpreter()
            client.lease = await ci.acquire(f"mcp-{secrets.token_hex(4)}")
        if self.options.strategy == "pool" and client.lease.session_id is None:
            try:
                await self._take_pool_sandbox(client.lease)
            except ClientRefused:
                # a refused client holds nothing: its next call asks the pool afresh
                lease, client.lease = client.lease, None
                with anyio.CancelScope(shield=True):
                    await lease.release()
                raise
        return client.lease

    async def _take_pool_sandbox(self, lease: AsyncLease) -> None:
        """Take a pool sandbox for the lease now (its calls would take it anyway), so that
        a full pool is one clear refusal, not a wait (the interpreter's lease_timeout is 0)."""
        from agentrun_ci._strategies import PoolExhausted

        try:
            await lease.start()
        except PoolExhausted:
            options = self.options
            high = options.pool_size if isinstance(options.pool_size, int) else options.pool_size[1]
            raise ClientRefused(
                f"every sandbox of the pool is held by another client (--pool-size max {high}); "
                "a client keeps its sandbox until it ends its session or has been idle for "
                f"--idle-timeout ({options.idle_timeout:g} s). Retry later, or restart the "
                "server with a larger --pool-size, a shorter --idle-timeout, or --strategy "
                "dedicated (a sandbox per client, up to --max-clients)"
            ) from None

    async def release(self, key: str, why: str | None = None) -> None:
        """Release `key`'s lease (its context, or its pool sandbox). `why` is told to the
        client if it comes back (see `ClientRegistry.pop`)."""
        client = self.registry.pop(key, why)
        if client is None:
            return
        lease, client.lease = client.lease, None
        if lease is None:
            return
        done = False
        with anyio.CancelScope(shield=True), anyio.move_on_after(15):
            try:
                await lease.release()
                done = True
            except Exception as exc:  # one client's failure must not stop the others' cleanup
                log.warning("could not release the state of client %s: %s", key, _text(exc))
                return
        if done:
            log.info("released the state of client %s%s", key, f" ({why})" if why else "")
        else:
            log.warning("gave up releasing the state of client %s after 15 s", key)

    async def evict_over_limit(self, keep: ClientState) -> None:
        """Bound the number of states (a client that never passes its handle back
        would otherwise leave one per call until the idle timeout)."""
        limit = self.options.max_clients
        while len(self.clients) > limit:
            oldest = self.registry.oldest_idle(keep)
            if oldest is None:
                if keep.lease is not None:  # already served: counted before the others came
                    return
                # every other client has a call in flight: nobody to release, and no waiting
                await self.release(keep.key, keep.lost)  # a note owed to it stays owed
                raise ClientRefused(
                    f"this server already serves --max-clients={limit} clients, each with a "
                    "call in flight; retry when one has finished, or restart the server with a "
                    "larger --max-clients (AGENTRUN_MCP_MAX_CLIENTS)"
                )
            log.info("more than %d client states: releasing %s", limit, oldest.key)
            await self.release(
                oldest.key, f"released to make room: at most {limit} states (--max-clients)"
            )

    async def reap_idle(self) -> int:
        """Release leases of clients idle longer than options.idle_timeout."""
        timeout = self.options.idle_timeout
        idle = self.registry.idle_since(timeout)
        for key in idle:
            await self.release(key, f"released after {timeout:g} s without a call (--idle-timeout)")
        return len(idle)

    async def reap_orphans(self) -> None:
        """Delete what an earlier, crashed server of this owner left in the cloud.

        Runs in the background at start, so the handshake is not delayed; only the
        cloud backend can have orphans (a local emulator dies with its process).
        """
        from agentrun_ci import AgentRunError, Config, reap_orphans

        options = self.options
        count = 0
        try:
            config = options.config or Config.from_env()
            remote = config.has_credentials or bool(
                config.control_endpoint and config.data_endpoint
            )
            if options.backend == "local" or (options.backend == "auto" and not remote):
                return
            # Shielded: a half-finished listing must not leave its HTTP client open.
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                count = await reap_orphans(config, options.owner)
            if count:
                log.info("deleted %d resources left by an earlier server that crashed", count)
        except (AgentRunError, ValueError, OSError) as exc:
            log.warning("could not look for orphans at start: %s", exc)

    async def warm_up(self) -> None:
        """After the first answer: load the SDK (in a thread, so pings are still
        answered) and reap orphans, so the first tool call does not pay for either."""
        if self.first_answer is not None:
            await self.first_answer.wait()
        modules = ["agentrun_ci"]
        if self.options.backend != "cloud":
            modules.append("agentrun_ci.local")  # the emulator, if it is used
        for name in modules:
            # e.g. the `local` extra is not installed: the first tool call says so
            with contextlib.suppress(ImportError):
                await anyio.to_thread.run_sync(importlib.import_module, name)
        if self.options.reap_orphans:
            await self.reap_orphans()

    async def progress_forever(self) -> None:
        """One ticker for every run in flight (a task per call cost more than the call)."""
        interval = self.options.progress_interval
        while True:
            await anyio.sleep(interval)
            for run in list(self.runs):
                await run.tick(interval)

    async def reap_forever(self) -> None:
        interval = reap_interval(self.options)
        while True:
            await anyio.sleep(interval)
            await self.reap_idle()

    @property
    def closed(self) -> bool:
        """The cleanup has finished."""
        return self._closed is not None and self._closed.is_set()

    async def wait_closed(self) -> None:
        """Until the one cleanup has finished (it may not have started yet)."""
        while self._closed is None:  # noqa: ASYNC110 -- brief poll until close() starts
            await anyio.sleep(0.01)
        await self._closed.wait()

    def reopen(self) -> None:
        """Serve again after a close (an in-memory client's lifespan is entered per client)."""
        self.closing = False
        self._closed = None
        if self.stateless is not None:
            self.stateless.closing = False

    async def close(self) -> None:
        """Release every lease and delete what the interpreter created.

        The one close path: the first call cleans up; a call made while that runs
        (a signal during the cleanup after EOF, HTTP shutdown) waits for it, and a
        call after it returns at once. Shielded: nothing cuts the cleanup off.
        Calls in flight are cancelled first: each holds its client's lease lock,
        and a run may otherwise keep it for up to 30 s.
        """
        if self._closed is not None:
            with anyio.CancelScope(shield=True):
                await self._closed.wait()
            return
        self._closed = anyio.Event()
        self.closing = True
        try:
            with anyio.CancelScope(shield=True):
                await self._cleanup()
        finally:
            self._closed.set()

    async def _cleanup(self) -> None:
        self.registry.cancel_calls()
        if self.stateless is not None:
            self.stateless.cancel_calls()
        with anyio.move_on_after(5):
            while self.registry.busy() or (  # noqa: ASYNC110 -- brief poll at shutdown
                self.stateless is not None and self.stateless.scopes
            ):
                await anyio.sleep(0.01)
        if self.stateless is not None:
            # stateless clients' sandboxes outlive this process: they end by their idle timeout
            await self.stateless.close()
            log.info("stateless: closed; client sandboxes end by their idle timeout")
            return
        for key in list(self.clients):
            await self.release(key)
        ci, self.interpreter = self.interpreter, None
        if ci is None:
            log.info("nothing to delete: no sandbox was created")
            return
        self._deleting = ci  # kill_now() may still cut this cleanup short
        try:
            await ci.close()
        except Exception as exc:
            log.warning(
                "could not delete everything this server created: %s. What is left is "
                "deleted by the next start with the same owner (AGENTRUN_CI_OWNER)",
                _text(exc),
            )
        else:
            log.info("deleted the sandboxes and interpreter this server created")


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _env_secrets(options: ServerOptions) -> list[str | None]:
    """The credentials this server may hold: masked in log notifications wherever they show."""
    import os

    found: list[str | None] = []
    config = options.config
    if config is not None:
        found += [config.access_key_secret, config.security_token]
    for name in (
        "AGENTRUN_ACCESS_KEY_SECRET",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        "AGENTRUN_SECURITY_TOKEN",
        "ALIBABA_CLOUD_SECURITY_TOKEN",
        "AGENTRUN_MCP_AUTH_TOKEN",
        "E2B_API_KEY",
    ):
        found.append(os.environ.get(name))
    return found


def lifespan(state: AppState) -> Callable[[Any], contextlib.AbstractAsyncContextManager[AppState]]:
    """The MCPServer lifespan: background tasks while serving, `state.close()` after."""

    @contextlib.asynccontextmanager
    async def run(_server: Any) -> AsyncIterator[AppState]:
        state.reopen()
        async with anyio.create_task_group() as tg:
            tg.start_soon(state.reap_forever)
            tg.start_soon(state.progress_forever)
            tg.start_soon(state.warm_up)
            state.logs.install()
            tg.start_soon(state.logs.forward)
            try:
                yield state
            finally:
                state.logs.uninstall()
                tg.cancel_scope.cancel()
                with anyio.CancelScope(shield=True), anyio.move_on_after(20):
                    await state.close()

    return run


def reap_interval(options: ServerOptions) -> float:
    """How often idle client states are looked for."""
    return max(0.05, min(options.idle_timeout / 4, 60.0))


def sandbox_idle_timeout(options: ServerOptions) -> float:
    """The sandbox's idle timeout: longer than any client state it holds can live.

    A client state is released `idle_timeout` (plus at most one reaper interval)
    after its last call; the sandbox outlives it by a minute more, so a state is
    never lost to the sandbox expiring first.
    """
    return math.ceil(options.idle_timeout + reap_interval(options) + 60.0)


async def make_interpreter(options: ServerOptions) -> AsyncCodeInterpreter:
    """The interpreter of this server: a template of its own, or `options.interpreter`."""
    from agentrun_ci import AsyncCodeInterpreter

    ci = AsyncCodeInterpreter(
        options.config,
        backend=options.backend,
        strategy=options.strategy,
        pool_size=options.pool_size,
        interpreter_name=options.interpreter,
        owner=options.owner,
        session_idle_timeout=sandbox_idle_timeout(options),
        # pool: a full pool refuses a new client at once, naming --pool-size (`lease`)
        lease_timeout=0.0,
        # a sandbox per client (dedicated): as many as clients, plus the interpreter's own,
        # so that no client waits for a slot (the client limit is --max-clients)
        max_sessions=max(8, options.max_clients + 1),
        template_fields=options.template_fields,
        session_mounts=options.session_mount_fields,
    )
    try:
        if options.interpreter is None:
            await ci.create_interpreter(
                "mcp",
                cpu=options.cpu,
                memory=options.memory,
                idle_timeout=sandbox_idle_timeout(options),
            )
        else:
            await ci.attach_interpreter(options.interpreter)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await ci.close()
        raise
    log.info(
        "interpreter %s ready (backend %s, strategy %s)",
        ci.code_interpreter_id,
        ci.backend,
        ci.strategy,
    )
    return ci
