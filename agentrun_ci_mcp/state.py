"""The server's lifetime: the lazily created interpreter, leases, background tasks, cleanup.

`AppState` is the lifespan object every tool reaches through its context. The
interpreter (template, sandbox) is created at the first tool call, never
before the handshake. Leases idle longer than `idle_timeout` are released;
`AppState.close()` releases everything and deletes what the interpreter created
(called when the lifespan ends and, by the transports, on signals).
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from .clients import ClientRegistry, ClientState
from .options import ServerOptions

if TYPE_CHECKING:
    from mcp.server.mcpserver import Context

    from agentrun_ci import AsyncCodeInterpreter, AsyncLease

__all__ = ["AppState", "RunProgress", "lifespan", "make_interpreter"]

log = logging.getLogger("agentrun_ci_mcp")


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
        self._open_lock = anyio.Lock()
        self.registry = ClientRegistry()
        #: run_code calls in flight, for progress_forever
        self.runs: set[RunProgress] = set()
        #: set by close(); cleared when the lifespan starts again (in-memory tests)
        self.closing = False

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
        if client.lease is None:
            ci = await self._interpreter()
            client.lease = await ci.acquire(f"mcp-{secrets.token_hex(4)}")
        return client.lease

    async def release(self, key: str) -> None:
        from agentrun_ci import AgentRunError

        client = self.registry.pop(key)
        if client is None:
            return
        lease, client.lease = client.lease, None
        if lease is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(15):
                try:
                    await lease.release()
                except AgentRunError as exc:
                    log.warning("could not release the lease of client %s: %s", key, exc)
        log.info("released client %s", key)

    async def evict_over_limit(self, keep: ClientState) -> None:
        """Bound the number of states (a client that never passes its handle back
        would otherwise leave one per call until the idle timeout)."""
        while len(self.clients) > self.options.max_clients:
            oldest = self.registry.oldest_idle(keep)
            if oldest is None:
                return
            log.info(
                "more than %d client states: releasing %s", self.options.max_clients, oldest.key
            )
            await self.release(oldest.key)

    async def reap_idle(self) -> int:
        """Release leases of clients idle longer than options.idle_timeout."""
        idle = self.registry.idle_since(self.options.idle_timeout)
        for key in idle:
            await self.release(key)
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

    async def progress_forever(self) -> None:
        """One ticker for every run in flight (a task per call cost more than the call)."""
        interval = self.options.progress_interval
        while True:
            await anyio.sleep(interval)
            for run in list(self.runs):
                await run.tick(interval)

    async def reap_forever(self) -> None:
        interval = max(0.05, min(self.options.idle_timeout / 4, 60.0))
        while True:
            await anyio.sleep(interval)
            await self.reap_idle()

    async def close(self) -> None:
        """Release every lease and delete what the interpreter created. Idempotent.

        Calls in flight are cancelled first: each holds its client's lease lock, and
        a run may otherwise keep it for up to 30 s.
        """
        from agentrun_ci import AgentRunError

        self.closing = True
        with anyio.CancelScope(shield=True):
            self.registry.cancel_calls()
            with anyio.move_on_after(5):
                while self.registry.busy():  # noqa: ASYNC110 -- brief poll at shutdown
                    await anyio.sleep(0.01)
            for key in list(self.clients):
                await self.release(key)
            ci, self.interpreter = self.interpreter, None
            if ci is not None:
                try:
                    await ci.close()
                except AgentRunError as exc:
                    log.warning("cleanup at shutdown failed: %s", exc)
                log.info("deleted the sandboxes and interpreter this server created")


def lifespan(state: AppState) -> Callable[[Any], contextlib.AbstractAsyncContextManager[AppState]]:
    """The MCPServer lifespan: background tasks while serving, `state.close()` after."""

    @contextlib.asynccontextmanager
    async def run(_server: Any) -> AsyncIterator[AppState]:
        state.closing = False
        async with anyio.create_task_group() as tg:
            tg.start_soon(state.reap_forever)
            tg.start_soon(state.progress_forever)
            if state.options.reap_orphans:
                tg.start_soon(state.reap_orphans)
            try:
                yield state
            finally:
                tg.cancel_scope.cancel()
                with anyio.CancelScope(shield=True), anyio.move_on_after(20):
                    await state.close()

    return run


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
    )
    try:
        if options.interpreter is None:
            await ci.create_interpreter("mcp", cpu=options.cpu, memory=options.memory)
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
