"""The MCP server: `run_code` plus companion tools, one lease per MCP client.

Who is "the client" (each gets its own lease, hence its own state):

* stdio -- the process is the client (one host spawns one server);
* streamable HTTP with an ``mcp-session-id`` header -- that session;
* anything else (2026-07-28 clients, stateless HTTP) -- an unguessable
  `session` handle returned by the first call, passed back by later calls.

A tool never accepts another client's handle, and never takes a sandbox or
context id from the model: a lease is reached only through its owner's key.

Nothing blocks the handshake: the interpreter (template, sandbox) is created
at the first tool call. Leases idle longer than `idle_timeout` are released;
`AppState.close()` releases everything and deletes what the interpreter
created (called on stdin EOF, SIGTERM, SIGINT and HTTP shutdown by __main__).
"""

import base64
import contextlib
import hmac
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Literal

import anyio
import attrs
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from agentrun_ci import (
    AgentRunError,
    APIError,
    AsyncCodeInterpreter,
    AsyncLease,
    Config,
    Execution,
    InvalidArgumentError,
    SessionLostError,
    __version__,
)

from .render import RenderOptions, RunCodeOutput, compact_schema, render_execution, truncate

__all__ = [
    "ALL_TOOLS",
    "EXECUTE_CAP_SECONDS",
    "TOOL_GROUPS",
    "AppState",
    "ServerOptions",
    "build_server",
]

log = logging.getLogger("agentrun_ci_mcp")

EXECUTE_CAP_SECONDS = 30.0
TOOL_GROUPS: dict[str, tuple[str, ...]] = {
    "run_code": ("run_code", "reset_context"),
    "files": ("read_file", "write_file", "list_files"),
    "commands": ("run_command",),
}
ALL_TOOLS = tuple(t for group in TOOL_GROUPS.values() for t in group)
HOME = "/home/user"

SessionArg = Annotated[
    str | None,
    Field(
        description=(
            "Only for clients without a stable MCP session: the `session` value returned by "
            "your first call, to keep using the same state. Omit it otherwise."
        )
    ),
]

INSTRUCTIONS = (
    "Runs code in an isolated AgentRun sandbox (or a local emulator). Variables, imports and "
    "files persist between calls of the same client; `state_reset: true` in a result means "
    "they were lost. One run may take at most 30 s: split longer work or start it in the "
    "background with run_command and poll. Plots are returned as images."
)


@attrs.frozen
class ServerOptions:
    """Everything the server needs, already validated (see __main__ for the CLI/env)."""

    backend: Literal["auto", "cloud", "local"] = "auto"
    strategy: Literal["singleton", "pool", "ephemeral"] = "singleton"
    pool_size: int | tuple[int, int] = (1, 4)
    interpreter: str | None = None
    cpu: float = 2.0
    memory: int = 4096
    timeout: float = EXECUTE_CAP_SECONDS
    max_output_chars: int = 20_000
    image_budget_bytes: int = 400_000
    tools: frozenset[str] = frozenset(ALL_TOOLS)
    idle_timeout: float = 1800.0
    #: most client states kept at once; beyond it the least recently used idle one goes
    max_clients: int = 64
    #: delete a crashed earlier server's sandboxes and templates at start (cloud only)
    reap_orphans: bool = True
    progress_interval: float = 1.0
    config: Config | None = None
    owner: str | None = None

    @property
    def render(self) -> RenderOptions:
        return RenderOptions(
            max_output_chars=self.max_output_chars, image_budget_bytes=self.image_budget_bytes
        )


# ---------------------------------------------------------------- per-client state


@attrs.define(eq=False)
class _Client:
    key: str
    handle: str
    lock: anyio.Lock = attrs.field(factory=anyio.Lock)
    lease: AsyncLease | None = None
    last_used: float = attrs.field(factory=time.monotonic)
    busy: int = 0
    #: set when we had to restart the context (cancellation); reported on the next run
    reset_pending: bool = False
    #: a release callback is registered on the HTTP connection
    hooked: bool = False
    #: cancel scopes of this client's calls in flight (cancelled at shutdown)
    scopes: set[anyio.CancelScope] = attrs.field(factory=set)
    #: the caller has this state's `session` handle (a result carried it, or they sent it)
    delivered: bool = False


@attrs.define(eq=False)
class _Run:
    """A run_code in flight, for the progress ticker."""

    ctx: Context["AppState", Any]
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
        self._factory = factory or _make_interpreter
        self.interpreter: AsyncCodeInterpreter | None = None
        self._open_lock = anyio.Lock()
        self.clients: dict[str, _Client] = {}
        #: run_code calls in flight, for progress_forever
        self.runs: set[_Run] = set()
        self.handles: dict[str, str] = {}
        #: set by close(); cleared when the lifespan starts again (in-memory tests)
        self.closing = False

    async def _interpreter(self) -> AsyncCodeInterpreter:
        if self.interpreter is None:
            async with self._open_lock:
                if self.interpreter is None:
                    self.interpreter = await self._factory(self.options)
        return self.interpreter

    def client(self, key: str) -> _Client:
        found = self.clients.get(key)
        if found is None:
            handle = secrets.token_urlsafe(18)
            found = self.clients[key] = _Client(key=key, handle=handle)
            self.handles[handle] = key
        return found

    async def lease(self, client: _Client) -> AsyncLease:
        if client.lease is None:
            ci = await self._interpreter()
            client.lease = await ci.acquire(f"mcp-{secrets.token_hex(4)}")
        return client.lease

    async def release(self, key: str) -> None:
        client = self.clients.pop(key, None)
        if client is None:
            return
        self.handles.pop(client.handle, None)
        lease, client.lease = client.lease, None
        if lease is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(15):
                try:
                    await lease.release()
                except AgentRunError as exc:
                    log.warning("could not release the lease of client %s: %s", key, exc)
        log.info("released client %s", key)

    async def evict_over_limit(self, keep: _Client) -> None:
        """Bound the number of states (a client that never passes its handle back
        would otherwise leave one per call until the idle timeout)."""
        while len(self.clients) > self.options.max_clients:
            idle = [c for c in self.clients.values() if c.busy == 0 and c is not keep]
            if not idle:
                return
            oldest = min(idle, key=lambda c: c.last_used)
            log.info(
                "more than %d client states: releasing %s", self.options.max_clients, oldest.key
            )
            await self.release(oldest.key)

    async def reap_idle(self) -> int:
        """Release leases of clients idle longer than options.idle_timeout."""
        now = time.monotonic()
        idle = [
            key
            for key, c in self.clients.items()
            if c.busy == 0 and now - c.last_used >= self.options.idle_timeout
        ]
        for key in idle:
            await self.release(key)
        return len(idle)

    async def reap_orphans(self) -> None:
        """Delete what an earlier, crashed server of this owner left in the cloud.

        Runs in the background at start, so the handshake is not delayed; only the
        cloud backend can have orphans (a local emulator dies with its process).
        """
        from agentrun_ci import AsyncControlPlane
        from agentrun_ci._ownership import OwnerTag, reap

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
                async with AsyncControlPlane(config) as control:
                    count = await reap(control, OwnerTag.current(options.owner).owner)
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
        self.closing = True
        with anyio.CancelScope(shield=True):
            for client in list(self.clients.values()):
                for scope in list(client.scopes):
                    scope.cancel()
            with anyio.move_on_after(5):
                while any(c.busy for c in self.clients.values()):  # noqa: ASYNC110 -- brief poll at shutdown
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


async def _make_interpreter(options: ServerOptions) -> AsyncCodeInterpreter:
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


# ---------------------------------------------------------------- companion outputs


class FileOut(BaseModel):
    path: str
    size: int
    encoding: Literal["utf-8", "base64"]
    content: str = Field(description="the text, or base64 for binary files")
    truncated: bool = False
    session: str | None = None


class EntryOut(BaseModel):
    name: str
    path: str
    type: str
    size: int | None = None


class ListOut(BaseModel):
    path: str
    entries: list[EntryOut]
    session: str | None = None


class WriteOut(BaseModel):
    path: str
    size: int | None = None
    session: str | None = None


class CommandOut(BaseModel):
    exit_code: int | None
    stdout: str
    stderr: str
    duration_ms: float | None = None
    truncated: bool = False
    session: str | None = None


class ResetOut(BaseModel):
    reset: bool
    session: str | None = None


class RunCodeResult(RunCodeOutput):
    session: str | None = Field(
        default=None,
        description="handle of your state; pass it back as `session` if your client has no "
        "stable MCP session",
    )


# ---------------------------------------------------------------- the server


def _is_cancel(exc: BaseException) -> bool:
    return isinstance(exc, anyio.get_cancelled_exc_class())


def build_server(
    options: ServerOptions | None = None,
    *,
    state: AppState | None = None,
) -> tuple[MCPServer[AppState], AppState]:
    """The MCPServer and its state (the caller owns `state.close()` on signals)."""
    options = options or ServerOptions()
    app_state = state or AppState(options)

    @contextlib.asynccontextmanager
    async def lifespan(_server: MCPServer[AppState]) -> AsyncIterator[AppState]:
        app_state.closing = False
        async with anyio.create_task_group() as tg:
            tg.start_soon(app_state.reap_forever)
            tg.start_soon(app_state.progress_forever)
            if options.reap_orphans:
                tg.start_soon(app_state.reap_orphans)
            try:
                yield app_state
            finally:
                tg.cancel_scope.cancel()
                with anyio.CancelScope(shield=True), anyio.move_on_after(20):
                    await app_state.close()

    def resolve(ctx: Context[AppState, Any], session: str | None) -> _Client:
        """The caller's own state; a `session` handle is accepted only if it is theirs."""
        headers = ctx.headers
        if headers is None:
            key: str | None = "stdio"
        else:
            sid = {k.lower(): v for k, v in headers.items()}.get("mcp-session-id")
            key = f"http:{sid}" if sid else None
        if key is not None:
            client = app_state.client(key)
            if session is not None and not hmac.compare_digest(session, client.handle):
                raise ToolError(
                    "unknown `session` handle: it does not belong to this client; omit it"
                )
            if headers is not None:
                _end_with_connection(ctx, key)
            return client
        if session is None:
            # No stable identity: a fresh handle, returned in the result.
            return app_state.client(f"handle:{secrets.token_hex(8)}")
        owner_key = app_state.handles.get(session)
        if owner_key is None or not owner_key.startswith("handle:"):
            raise ToolError(
                "unknown or expired `session` handle; omit `session` to start a new state"
            )
        client = app_state.clients[owner_key]
        client.delivered = True
        return client

    def _end_with_connection(ctx: Context[AppState, Any], key: str) -> None:
        # The SDK has no public end-of-session hook yet; its connection exit stack is
        # unwound when an HTTP session is deleted. Best effort: the idle reaper covers
        # clients that vanish without it.
        client = app_state.clients[key]
        if client.hooked:
            return
        connection = getattr(ctx.session, "_connection", None)
        stack = getattr(connection, "exit_stack", None)
        if stack is None:
            return

        async def on_end() -> None:
            await app_state.release(key)

        try:
            stack.push_async_callback(on_end)
            client.hooked = True
        except Exception:  # private API; the reaper is the fallback
            log.debug("no connection hook for %s", key)

    @contextlib.asynccontextmanager
    async def using(client: _Client) -> AsyncIterator[AsyncLease]:
        if app_state.closing:
            raise ToolError("the server is shutting down")
        client.busy += 1
        scope = anyio.CancelScope()
        client.scopes.add(scope)
        answered = False
        try:
            await app_state.evict_over_limit(client)
            with scope:
                async with client.lock:
                    try:
                        lease = await app_state.lease(client)
                    except AgentRunError as exc:
                        raise ToolError(f"could not start the sandbox: {exc}") from exc
                    yield lease
            if scope.cancelled_caught:
                raise ToolError("the server is shutting down; the call was stopped")
            answered = True
        finally:
            client.scopes.discard(scope)
            client.busy -= 1
            client.last_used = time.monotonic()
            if answered:
                client.delivered = True
            elif client.key.startswith("handle:") and not client.delivered:
                # A first call without a stable identity failed: its result carries no
                # handle, so nobody can reach this state again. Release it now, or its
                # lease (a whole pool sandbox) would be held until the idle timeout.
                await app_state.release(client.key)

    enabled = options.tools

    # ------------------------------------------------------------ run_code

    async def run_code(
        code: Annotated[str, Field(description="The source code to run.")],
        ctx: Context[AppState, Any],
        language: Annotated[
            Literal["python", "javascript"], Field(description="python (default) or javascript")
        ] = "python",
        timeout: Annotated[
            float | None,
            Field(
                description=(
                    f"Seconds before the run is interrupted (default {options.timeout:g}, "
                    f"at most {EXECUTE_CAP_SECONDS:g})."
                ),
                gt=0,
                allow_inf_nan=False,  # a NaN deadline would never expire
            ),
        ] = None,
        session: SessionArg = None,
    ) -> Annotated[CallToolResult, RunCodeResult]:
        """Run Python or JavaScript in a stateful sandbox, like a Jupyter cell.

        Variables, imports and files persist between calls from the same client.
        The value of the last expression is returned as a result; matplotlib figures
        come back as images. Returns stdout, stderr, results, and the exception
        (name, value, traceback) if the code raised. One run may take at most 30 s.
        """
        client = resolve(ctx, session)
        limit = options.timeout if timeout is None else timeout
        if limit > EXECUTE_CAP_SECONDS:
            return _fail(
                f"timeout={limit:g} s is above the service's cap of {EXECUTE_CAP_SECONDS:g} s "
                "for one run. Split the work into several run_code calls (state persists), "
                "or start it in the background with run_command, e.g. "
                "`nohup python job.py > job.log 2>&1 &`, and poll job.log."
            )
        notes: list[str] = []
        try:
            async with using(client) as lease:
                started = time.monotonic()
                run = _Run(ctx, limit)
                app_state.runs.add(run)
                try:
                    execution = await lease.execute_code(code, language=language, timeout=limit)
                except InvalidArgumentError as exc:
                    raise _RunFailed(str(exc)) from exc
                except AgentRunError as exc:
                    raise _RunFailed(_run_failure(exc)) from exc
                except BaseException as exc:
                    if _is_cancel(exc):
                        await _interrupt(lease, client, time.monotonic() - started)
                    raise
                finally:
                    app_state.runs.discard(run)
                if client.reset_pending:
                    client.reset_pending = False
                    execution.state_reset = True
                    notes.append(
                        "the previous run was cancelled, so its context was restarted to stop it"
                    )
                if execution.status == "timeout" and _kernel_restarted(execution):
                    execution.state_reset = True
                    notes.append(
                        f"the run exceeded its timeout of {limit:g} s and did not stop when "
                        "interrupted, so its kernel was restarted: variables and imports from "
                        "earlier calls are gone (files are kept)"
                    )
                elif execution.status == "timeout":
                    notes.append(
                        f"the run exceeded its timeout of {limit:g} s and was interrupted; the "
                        "context is still usable and keeps earlier state. One run is capped at "
                        f"{EXECUTE_CAP_SECONDS:g} s: split long work, or run it in the background "
                        "with run_command and poll its output"
                    )
                if execution.duration is None:
                    execution.duration = time.monotonic() - started
        except _RunFailed as failed:
            # raised through `using`, so that it knows this call failed
            return _fail(str(failed))
        rendered = render_execution(
            execution, options.render, notes=notes, extra={"session": client.handle}
        )
        return CallToolResult(
            content=list(rendered.content),
            structured_content=rendered.structured,
            is_error=rendered.is_error,
        )

    async def _interrupt(lease: AsyncLease, client: _Client, elapsed: float) -> None:
        """Stop cancelled code: the only interrupt the service offers is a context restart."""
        if app_state.closing:
            return  # the whole sandbox is about to be deleted
        log.info("run_code cancelled after %.1fs; restarting the client's context", elapsed)
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            try:
                await lease.reset()
            except AgentRunError as exc:
                log.warning("could not restart the context after cancellation: %s", exc)
        client.reset_pending = True

    # ------------------------------------------------------------ companions

    async def reset_context(ctx: Context[AppState, Any], session: SessionArg = None) -> ResetOut:
        """Forget all variables and imports: the next run_code starts in a fresh context.

        Files in the sandbox are kept.
        """
        client = resolve(ctx, session)
        async with using(client) as lease:
            await _guard(lease.reset())
            client.reset_pending = False
        return ResetOut(reset=True, session=client.handle)

    async def read_file(
        path: Annotated[str, Field(description="Path in the sandbox, e.g. /home/user/out.csv")],
        ctx: Context[AppState, Any],
        session: SessionArg = None,
    ) -> FileOut:
        """Read a file from your sandbox (text as UTF-8, other files as base64)."""
        client = resolve(ctx, session)
        async with using(client) as lease:
            content = await _guard(lease.read_file(path))
        raw = content.content
        try:
            text, encoding = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(raw).decode("ascii"), "base64"
        limit = options.max_output_chars
        truncated = len(text) > limit
        if truncated and encoding == "utf-8":
            text, _ = truncate(text, limit, what="file")
        elif truncated:
            text = text[: limit - limit % 4]  # whole base64 quanta: the head still decodes
        return FileOut(
            path=path,
            size=len(raw),
            encoding=encoding,  # type: ignore[arg-type]
            content=text,
            truncated=truncated,
            session=client.handle,
        )

    async def write_file(
        path: Annotated[str, Field(description="Path in the sandbox; parent dirs are created")],
        content: Annotated[str, Field(description="The file's content")],
        ctx: Context[AppState, Any],
        encoding: Annotated[
            Literal["utf-8", "base64"], Field(description="how `content` is encoded")
        ] = "utf-8",
        session: SessionArg = None,
    ) -> WriteOut:
        """Write (create or overwrite) a file in your sandbox."""
        client = resolve(ctx, session)
        data: str | bytes = content
        if encoding == "base64":
            try:
                data = base64.b64decode(content, validate=True)
            except ValueError as exc:
                raise ToolError(f"content is not valid base64: {exc}") from exc
        async with using(client) as lease:
            entry = await _guard(lease.write_file(path, data))
        return WriteOut(path=entry.path or path, size=entry.size, session=client.handle)

    async def list_files(
        ctx: Context[AppState, Any],
        path: Annotated[str, Field(description="Directory in the sandbox")] = HOME,
        depth: Annotated[int, Field(ge=1, le=5, description="levels to descend")] = 1,
        session: SessionArg = None,
    ) -> ListOut:
        """List a directory of your sandbox."""
        client = resolve(ctx, session)
        async with using(client) as lease:
            entries = await _guard(lease.list_files(path, depth=depth))
        return ListOut(
            path=path,
            entries=[
                EntryOut(name=e.name, path=e.path, type=e.type or "file", size=e.size)
                for e in entries
            ],
            session=client.handle,
        )

    async def run_command(
        command: Annotated[str, Field(description="A shell command line")],
        ctx: Context[AppState, Any],
        cwd: Annotated[str | None, Field(description="working directory")] = None,
        timeout: Annotated[
            float | None, Field(gt=0, allow_inf_nan=False, description="seconds, at most 30")
        ] = None,
        session: SessionArg = None,
    ) -> CommandOut:
        """Run a shell command in your sandbox (pip install, ls, background jobs with nohup ... &).

        Returns exit code, stdout and stderr. At most 30 s per command; start longer
        jobs in the background and poll their output file.
        """
        client = resolve(ctx, session)
        limit = options.timeout if timeout is None else timeout
        async with using(client) as lease:
            result = await _guard(lease.run_command(command, cwd=cwd, timeout=limit))
        out, d1 = truncate(result.stdout or "", options.max_output_chars, what="stdout")
        err, d2 = truncate(result.stderr or "", options.max_output_chars, what="stderr")
        return CommandOut(
            exit_code=result.exit_code,
            stdout=out,
            stderr=err,
            duration_ms=round(result.duration * 1000, 3) if result.duration is not None else None,
            truncated=bool(d1 or d2),
            session=client.handle,
        )

    # ------------------------------------------------------------ registration

    def hints(read_only: bool, destructive: bool, idempotent: bool) -> ToolAnnotations:
        # open world: the sandbox may reach the network (template network mode PUBLIC)
        return ToolAnnotations(
            read_only_hint=read_only,
            destructive_hint=destructive,
            idempotent_hint=idempotent,
            open_world_hint=True,
        )

    table: list[tuple[str, Callable[..., Any], str, ToolAnnotations]] = [
        ("run_code", run_code, "Run code", hints(False, False, False)),
        ("reset_context", reset_context, "Reset the code context", hints(False, True, True)),
        ("read_file", read_file, "Read a sandbox file", hints(True, False, True)),
        ("write_file", write_file, "Write a sandbox file", hints(False, True, True)),
        ("list_files", list_files, "List sandbox files", hints(True, False, True)),
        ("run_command", run_command, "Run a shell command", hints(False, True, False)),
    ]
    tools = [
        Tool.from_function(fn, name=name, title=title, annotations=annotations)
        for name, fn, title, annotations in table
        if name in enabled
    ]
    for tool in tools:
        # The metadata is read live: validation still runs against the pydantic model.
        if tool.fn_metadata.output_schema is not None:
            tool.fn_metadata.output_schema = compact_schema(tool.fn_metadata.output_schema)
        _refuse_unknown_arguments(tool)
    mcp: MCPServer[AppState] = MCPServer(
        "agentrun-ci",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        log_level="WARNING",
        tools=tools,
    )
    return mcp, app_state


def _refuse_unknown_arguments(tool: Tool) -> None:
    """Make an argument the tool does not name an error; the SDK drops it silently, so
    a misspelt `timout` would run with the default timeout and nobody would know."""
    base = tool.fn_metadata.arg_model

    class Strict(base):  # type: ignore[valid-type,misc]
        model_config = ConfigDict(extra="forbid", title=base.__name__)

    tool.fn_metadata.arg_model = Strict
    tool.parameters = {**tool.parameters, "additionalProperties": False}


async def _guard(awaitable: Awaitable[Any]) -> Any:
    """Facade errors become tool errors whose message the model can act on."""
    try:
        return await awaitable
    except AgentRunError as exc:
        raise ToolError(str(exc)) from exc


class _RunFailed(Exception):
    """run_code could not run the code; its message becomes the error result."""


def _fail(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


def _run_failure(exc: AgentRunError) -> str:
    """The text of a run_code call the service could not complete."""
    if isinstance(exc, SessionLostError) or (
        isinstance(exc, APIError) and exc.code == "ERR_CONTEXT_LOST"
    ):
        # Not "retry later": running the same code again would kill the new context too.
        return (
            "the code's process died (os._exit, a crash, or killed for memory), so its "
            "context is gone with all variables and imports; the next run_code call starts "
            f"in a fresh context and reports state_reset: true. Details: {exc}"
        )
    return f"the run failed on the service side: {exc}"


#: what the emulator appends to stderr when an interrupt did not stop the code and it
#: had to restart the kernel (same context id, empty namespace)
_KERNEL_RESTARTED = "kernel restarted: state lost"


def _kernel_restarted(execution: Execution) -> bool:
    return any(_KERNEL_RESTARTED in chunk for chunk in execution.logs.stderr[-2:])
