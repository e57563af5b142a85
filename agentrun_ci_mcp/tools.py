"""The tools, at module level: each reaches its client's lease through `AppState`.

Every tool takes the MCP `Context` (its `lifespan_context` is the `AppState`)
and an optional `session` handle for clients without a stable identity (see
`clients`). `using()` is the one way a tool gets a lease: it counts the call as
busy, holds the client's lock, and makes the call cancellable at shutdown.

`agentrun_ci` is imported inside the functions: the server answers the
handshake before loading the SDK (see `__main__`).
"""

import base64
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from .clients import ClientState, UnknownHandle
from .mcplog import current_client, current_request
from .observe import observed
from .options import EXECUTE_CAP_SECONDS, HOME, ServerOptions
from .render import RunCodeOutput, compact_schema, render_execution, truncate
from .state import AppState, ClientRefused, RunProgress
from .stateless import BadHandle

if TYPE_CHECKING:
    from agentrun_ci import AgentRunError, AsyncLease, Execution, Job

__all__ = [
    "CommandOut",
    "EntryOut",
    "FileOut",
    "JobOut",
    "KillJobOut",
    "ListOut",
    "ResetOut",
    "RunCodeResult",
    "WriteOut",
    "make_tools",
]

log = logging.getLogger("agentrun_ci_mcp")

SessionArg = Annotated[
    str | None,
    Field(
        description=(
            "Only for clients without a stable MCP session: the `session` value returned by "
            "your first call, to keep using the same state. Omit it otherwise."
        )
    ),
]
Ctx = Context[AppState, Any]
#: the `session` argument's description under --stateless, where every client needs it
STATELESS_SESSION = (
    "The `session` value of your latest result: this server keeps no state between calls, "
    "so pass it with every call to keep your variables and files. Omit it only on your "
    "first call (a new sandbox)."
)


# ---------------------------------------------------------------- outputs


class FileOut(BaseModel):
    path: str
    size: int
    encoding: Literal["utf-8", "base64"]
    content: str = Field(
        description="the text; empty for a binary file, which comes as an image or resource block"
    )
    truncated: bool = False
    delivered_as: Literal["text", "image", "resource", "none"] = "text"
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
    job: str | None = Field(
        default=None,
        description="with background=true: the job's id, for read_job and kill_job",
    )
    status: Literal["completed", "running", "exited", "lost"] = "completed"
    session: str | None = None


class JobOut(BaseModel):
    job: str
    status: Literal["running", "exited", "lost"]
    exit_code: int | None = None
    stdout: str = Field(description="output since `offset`")
    stderr: str = Field(description="error output since `stderr_offset`")
    offset: int = Field(description="pass as `offset` next time")
    stderr_offset: int = Field(description="pass as `stderr_offset` next time")
    more: bool = Field(description="more output is already there: call again at once")
    session: str | None = None


class KillJobOut(BaseModel):
    job: str
    killed: bool = Field(description="false if the job was not running")
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


# ---------------------------------------------------------------- reaching a lease


def _state(ctx: Ctx) -> AppState:
    return ctx.request_context.lifespan_context


def resolve(ctx: Ctx, session: str | None) -> ClientState:
    """The caller's own state; a `session` handle is accepted only if it is theirs."""
    state = _state(ctx)
    if state.stateless is not None:
        try:
            return state.stateless.client(session)
        except BadHandle as exc:
            raise ToolError(str(exc)) from None
    headers = ctx.headers
    if headers is None:
        key: str | None = "stdio"
    else:
        sid = {k.lower(): v for k, v in headers.items()}.get("mcp-session-id")
        key = f"http:{sid}" if sid else None
    try:
        client = state.registry.resolve(key, session)
    except UnknownHandle as exc:
        raise ToolError(str(exc)) from None
    # what this call logs goes to this client's log notifications only (a client known
    # by a handle alone has no connection to receive them: to nobody)
    current_client.set(key or "anonymous")
    with contextlib.suppress(AttributeError, LookupError, ValueError):
        current_request.set((ctx.session, ctx.request_id))
    if key is not None and headers is not None:
        _end_with_connection(ctx, state, client)
    return client


def _end_with_connection(ctx: Ctx, state: AppState, client: ClientState) -> None:
    # The SDK has no public end-of-session hook yet; its connection exit stack is
    # unwound when an HTTP session is deleted. Best effort: the idle reaper covers
    # clients that vanish without it.
    if client.hooked:
        return
    connection = getattr(ctx.session, "_connection", None)
    stack = getattr(connection, "exit_stack", None)
    if stack is None:
        return
    key = client.key

    async def on_end() -> None:
        await state.release(key)

    try:
        stack.push_async_callback(on_end)
        client.hooked = True
    except Exception:  # private API; the reaper is the fallback
        log.debug("no connection hook for %s", key)


@contextlib.asynccontextmanager
async def using(state: AppState, client: ClientState) -> AsyncIterator["AsyncLease"]:
    """The client's lease, for one call: busy-counted, locked, cancellable at shutdown."""
    from agentrun_ci import AgentRunError

    if state.stateless is not None:  # no state here: the lease comes from the handle
        async with state.stateless.call(client) as lease:
            yield lease
        return
    if state.closing:
        raise ToolError("the server is shutting down")
    client.busy += 1
    scope = anyio.CancelScope()
    client.scopes.add(scope)
    answered = False
    try:
        try:
            await state.evict_over_limit(client)
        except ClientRefused as exc:
            raise ToolError(str(exc)) from None
        with scope:
            async with client.lock:
                try:
                    lease = await state.lease(client)
                except ClientRefused as exc:
                    raise ToolError(str(exc)) from None
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
        elif not client.stable and not client.delivered:
            # A first call without a stable identity failed: its result carries no
            # handle, so nobody can reach this state again. Release it now, or its
            # lease (a whole pool sandbox) would be held until the idle timeout.
            await state.release(client.key)


# ---------------------------------------------------------------- run_code

#: the `timeout` argument's description; `make_tools` fills in the server's default
TIMEOUT_DESCRIPTION = (
    "Seconds before the run is interrupted (default {default:g}, at most {cap:g})."
)


async def run_code(
    code: Annotated[str, Field(description="The source code to run.")],
    ctx: Ctx,
    language: Annotated[
        Literal["python", "javascript"], Field(description="python (default) or javascript")
    ] = "python",
    timeout: Annotated[
        float | None,
        Field(
            description=TIMEOUT_DESCRIPTION.format(
                default=EXECUTE_CAP_SECONDS, cap=EXECUTE_CAP_SECONDS
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
    from agentrun_ci import AgentRunError, InvalidArgumentError

    state = _state(ctx)
    options = state.options
    client = resolve(ctx, session)
    limit = options.timeout if timeout is None else timeout
    if limit > EXECUTE_CAP_SECONDS:
        return _fail(
            f"timeout={limit:g} s is above the service's cap of {EXECUTE_CAP_SECONDS:g} s "
            "for one run. Split the work into several run_code calls (state persists), "
            "or start it as a background job: run_command(command='python job.py', "
            "background=true), then poll it with read_job."
        )
    notes: list[str] = []
    try:
        async with using(state, client) as lease:
            started = time.monotonic()
            had_state, sandbox = client.had_state, lease.session_id
            run = RunProgress(ctx, limit)
            state.runs.add(run)
            try:
                execution = await lease.execute_code(code, language=language, timeout=limit)
            except InvalidArgumentError as exc:
                raise _RunFailed(str(exc)) from exc
            except AgentRunError as exc:
                raise _RunFailed(_run_failure(exc)) from exc
            except BaseException as exc:
                if isinstance(exc, anyio.get_cancelled_exc_class()):
                    await _interrupt(state, lease, client, time.monotonic() - started)
                raise
            finally:
                state.runs.discard(run)
                client.had_state = True
            # singleton: a released state's files stay in the sandbox every client shares
            shared = options.strategy == "singleton" and sandbox in (None, lease.session_id)
            reset_note = _reset_note(
                client, execution, limit, had_state, sandbox, lease.session_id, shared
            )
            execution.state_reset = reset_note is not None
            notes += _timeout_notes(execution, limit)
            if execution.duration is None:
                execution.duration = time.monotonic() - started
    except _RunFailed as failed:
        # raised through `using`, so that it knows this call failed
        return _fail(str(failed))
    rendered = render_execution(
        execution,
        options.render,
        notes=notes,
        extra={"session": client.handle},
        reset_note=reset_note,
    )
    return CallToolResult(
        content=list(rendered.content),
        structured_content=rendered.structured,
        is_error=rendered.is_error,
    )


def _reset_note(
    client: ClientState,
    execution: "Execution",
    limit: float,
    had_state: bool,
    sandbox_before: str | None,
    sandbox_after: str | None,
    files_kept: bool = False,
) -> str | None:
    """Why this client's earlier state is gone, or None when it is not.

    `state_reset` is true exactly when the client had state and it is gone: a
    client's first run is never a reset, even if the facade had to replace a
    sandbox that expired while nobody used it.
    """
    lost, client.lost = client.lost, None
    pending, client.reset_pending = client.reset_pending, False
    if lost is not None:
        if files_kept:
            return (
                f"state reset: your earlier state was {lost}, so variables and imports from "
                "earlier calls are gone (files are kept: the sandbox is shared)"
            )
        return (
            f"state reset: your earlier state was {lost}, so variables, imports and files "
            "from earlier calls are gone"
        )
    if pending:
        return (
            "state reset: the previous run was cancelled, so its context was restarted to "
            "stop it: variables and imports from earlier calls are gone (files are kept)"
        )
    if not had_state:
        return None
    if execution.status == "timeout" and _kernel_restarted(execution):
        return (
            f"state reset: the run exceeded its timeout of {limit:g} s and did not stop when "
            "interrupted, so its kernel was restarted: variables and imports from earlier "
            "calls are gone (files are kept)"
        )
    if not execution.state_reset:
        return None
    if sandbox_before is not None and sandbox_after != sandbox_before:
        return (
            "state reset: the sandbox was gone (deleted or expired) and a new one replaced "
            "it, so variables, imports and files from earlier calls are gone"
        )
    return (
        "state reset: the context had to be recreated before this run, so variables and "
        "imports from earlier calls are gone (files are kept)"
    )


def _timeout_notes(execution: "Execution", limit: float) -> list[str]:
    if execution.status != "timeout" or _kernel_restarted(execution):
        return []  # a restarted kernel is told by the reset note
    return [
        f"the run exceeded its timeout of {limit:g} s and was interrupted; the "
        "context is still usable and keeps earlier state. One run is capped at "
        f"{EXECUTE_CAP_SECONDS:g} s: split long work, or run it in the background "
        "with run_command and poll its output"
    ]


async def _interrupt(
    state: AppState, lease: "AsyncLease", client: ClientState, elapsed: float
) -> None:
    """Stop cancelled code: the only interrupt the service offers is a context restart."""
    from agentrun_ci import AgentRunError

    if state.closing:
        return  # the whole sandbox is about to be deleted
    log.info("run_code cancelled after %.1fs; restarting the client's context", elapsed)
    # Shielded from the call's own cancellation, not from the server stopping: on stdin
    # EOF the sandbox is deleted anyway, and the restart must not delay the exit.
    with anyio.CancelScope(shield=True) as scope, anyio.move_on_after(10):
        state.interrupts.add(scope)
        try:
            await lease.reset()
        except AgentRunError as exc:
            log.warning("could not restart the context after cancellation: %s", exc)
        finally:
            state.interrupts.discard(scope)
    client.reset_pending = True


# ---------------------------------------------------------------- companions


async def reset_context(ctx: Ctx, session: SessionArg = None) -> ResetOut:
    """Forget all variables and imports: the next run_code starts in a fresh context.

    Files in the sandbox are kept.
    """
    state = _state(ctx)
    client = resolve(ctx, session)
    async with using(state, client) as lease:
        await _guard(lease.reset())
        client.reset_pending = False
    return ResetOut(reset=True, session=client.handle)


async def read_file(
    path: Annotated[str, Field(description="Path in the sandbox, e.g. /home/user/out.csv")],
    ctx: Ctx,
    session: SessionArg = None,
) -> Annotated[CallToolResult, FileOut]:
    """Read a file from your sandbox: text as text, an image as an image, any other file as
    an embedded resource."""
    state = _state(ctx)
    client = resolve(ctx, session)
    async with using(state, client) as lease:
        content = await _guard(lease.read_file(path))
    raw = content.content
    limit = state.options.max_output_chars
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _binary_file(path, raw, state.options.render.image_budget_bytes, client.handle)
    truncated = len(text) > limit
    if truncated:
        text, _ = truncate(text, limit, what="file")
    out = FileOut(
        path=path,
        size=len(raw),
        encoding="utf-8",
        content=text,
        truncated=truncated,
        session=client.handle,
    )
    return CallToolResult(
        content=[TextContent(type="text", text=out.model_dump_json())],
        structured_content=out.model_dump(),
    )


#: the largest non-image file read_file returns (as an embedded resource)
MAX_RESOURCE_BYTES = 8 * 1024 * 1024
_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def _image_mime(raw: bytes) -> str | None:
    for magic, mime in _IMAGE_MAGIC:
        if raw.startswith(magic):
            return mime
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "image/webp"
    return None


def _binary_file(path: str, raw: bytes, budget: int, handle: str | None) -> CallToolResult:
    """A binary file as an image block (within the image budget) or an embedded resource:
    never base64 in the text the model reads."""
    import mimetypes

    from mcp.types import BlobResourceContents, EmbeddedResource, ImageContent

    from .render import fit_image

    out = FileOut(
        path=path,
        size=len(raw),
        encoding="base64",
        content="",
        session=handle,
        delivered_as="resource",
    )
    block: ImageContent | EmbeddedResource | None = None
    note = ""
    mime = _image_mime(raw)
    if mime is not None:
        fitted = fit_image(raw, mime, budget)
        if fitted is not None:
            data, out_mime, how = fitted
            block = ImageContent(
                type="image", data=base64.b64encode(data).decode("ascii"), mime_type=out_mime
            )
            out = out.model_copy(update={"delivered_as": "image", "truncated": how != "as is"})
            note = f"{path}: image, {len(raw)} bytes" + ("" if how == "as is" else f", {how}")
    if block is None and len(raw) <= MAX_RESOURCE_BYTES:
        guessed = mimetypes.guess_type(path)[0] or mime or "application/octet-stream"
        block = EmbeddedResource(
            type="resource",
            resource=BlobResourceContents(
                uri=f"sandbox://{path}" if path.startswith("/") else f"sandbox:///{path}",
                mime_type=guessed,
                blob=base64.b64encode(raw).decode("ascii"),
            ),
        )
        note = f"{path}: binary file ({guessed}), {len(raw)} bytes, as an embedded resource"
    if block is None:
        out = out.model_copy(update={"truncated": True, "delivered_as": "none"})
        note = (
            f"{path}: binary file of {len(raw)} bytes, over the {MAX_RESOURCE_BYTES} bytes "
            "read_file returns: process it in the sandbox (run_code), or download it with "
            "the agentrun-ci SDK"
        )
    content: list[Any] = [TextContent(type="text", text=note)]
    if block is not None:
        content.append(block)
    return CallToolResult(content=content, structured_content=out.model_dump())


async def write_file(
    path: Annotated[str, Field(description="Path in the sandbox; parent dirs are created")],
    content: Annotated[str, Field(description="The file's content")],
    ctx: Ctx,
    encoding: Annotated[
        Literal["utf-8", "base64"], Field(description="how `content` is encoded")
    ] = "utf-8",
    session: SessionArg = None,
) -> WriteOut:
    """Write (create or overwrite) a file in your sandbox."""
    state = _state(ctx)
    client = resolve(ctx, session)
    data: str | bytes = content
    if encoding == "base64":
        try:
            data = base64.b64decode(content, validate=True)
        except ValueError as exc:
            raise ToolError(f"content is not valid base64: {exc}") from exc
    async with using(state, client) as lease:
        entry = await _guard(lease.write_file(path, data))
        client.had_state = True
    return WriteOut(path=entry.path or path, size=entry.size, session=client.handle)


async def list_files(
    ctx: Ctx,
    path: Annotated[str, Field(description="Directory in the sandbox")] = HOME,
    depth: Annotated[int, Field(ge=1, le=5, description="levels to descend")] = 1,
    session: SessionArg = None,
) -> ListOut:
    """List a directory of your sandbox."""
    state = _state(ctx)
    client = resolve(ctx, session)
    async with using(state, client) as lease:
        entries = await _guard(lease.list_files(path, depth=depth))
    return ListOut(
        path=path,
        entries=[
            EntryOut(name=e.name, path=e.path, type=e.type or "file", size=e.size) for e in entries
        ],
        session=client.handle,
    )


async def run_command(
    command: Annotated[str, Field(description="A shell command line")],
    ctx: Ctx,
    cwd: Annotated[str | None, Field(description="working directory")] = None,
    timeout: Annotated[
        float | None,
        Field(gt=0, allow_inf_nan=False, description="seconds, at most 30 (not with background)"),
    ] = None,
    background: Annotated[
        bool,
        Field(
            description="start it as a job and return at once with its `job` id: no time "
            "limit; poll with read_job, stop with kill_job"
        ),
    ] = False,
    session: SessionArg = None,
) -> CommandOut:
    """Run a shell command in your sandbox (ls, pip install, a build, a server).

    Returns exit code, stdout and stderr; at most 30 s. With background=true it
    returns a `job` id at once and the command runs until it ends or is killed
    (`pip install`, training, servers): read its output with read_job.
    """
    state = _state(ctx)
    options = state.options
    client = resolve(ctx, session)
    if background:
        if timeout is not None:
            raise ToolError("timeout is for foreground commands; a background job has none")
        async with using(state, client) as lease:
            client.had_state = True
            job = await _guard(lease.start_job(command, cwd=cwd))
        out, err, job_out = _job_output(job, 0, 0, options.max_output_chars)
        return CommandOut(
            exit_code=job.exit_code,
            stdout=out,
            stderr=err,
            truncated=job_out.more,
            job=str(job.pid),
            status=job_out.status,
            session=client.handle,
        )
    limit = options.timeout if timeout is None else timeout
    async with using(state, client) as lease:
        client.had_state = True  # a command may change files even when it fails
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


def _text(data: bytes, final: bool) -> tuple[str, int]:
    """`data` as text and how many bytes of it that is: an incomplete UTF-8 character at the
    end of a running job's output waits for the next read instead of becoming U+FFFD."""
    used = len(data)
    if not final:
        for back in range(1, min(4, len(data)) + 1):
            byte = data[-back]
            if byte & 0xC0 != 0x80:  # the start of the last character
                need = (
                    2
                    if byte >> 5 == 0b110
                    else 3
                    if byte >> 4 == 0b1110
                    else 4
                    if byte >> 3 == 0b11110
                    else 1
                )
                if need > back:
                    used = len(data) - back
                break
    return data[:used].decode("utf-8", "replace"), used


def _job_output(job: "Job", offset: int, stderr_offset: int, limit: int) -> tuple[str, str, JobOut]:
    final = not job.running
    out, used_out = _text(job.stdout, final)
    err, used_err = _text(job.stderr, final)
    if len(out) > limit:
        out = out[:limit]
        used_out = len(out.encode("utf-8", "surrogatepass"))
    if len(err) > limit:
        err = err[:limit]
        used_err = len(err.encode("utf-8", "surrogatepass"))
    next_out, next_err = offset + used_out, stderr_offset + used_err
    more = next_out < job.stdout_size or next_err < job.stderr_size
    status: Literal["running", "exited", "lost"] = (
        "running" if job.running else "lost" if job.state == "lost" else "exited"
    )
    return (
        out,
        err,
        JobOut(
            job=str(job.pid),
            status=status,
            exit_code=job.exit_code,
            stdout=out,
            stderr=err,
            offset=next_out,
            stderr_offset=next_err,
            more=more,
        ),
    )


def _job_id(job: str) -> int:
    try:
        pid = int(job)
    except ValueError:
        pid = 0
    if pid <= 0:
        raise ToolError(f"job {job!r} is not a job id: use the `job` that run_command returned")
    return pid


async def read_job(
    job: Annotated[str, Field(description="the `job` id run_command(background=true) returned")],
    ctx: Ctx,
    offset: Annotated[int, Field(ge=0, description="stdout bytes already read (0 at first)")] = 0,
    stderr_offset: Annotated[int, Field(ge=0, description="stderr bytes already read")] = 0,
    wait: Annotated[
        float, Field(ge=0, le=20, description="seconds to wait for new output or the end")
    ] = 0,
    session: SessionArg = None,
) -> JobOut:
    """Status, exit code and new output of a background job (output since the offsets)."""
    from agentrun_ci import AgentRunError, NotFoundError

    pid = _job_id(job)
    state = _state(ctx)
    client = resolve(ctx, session)
    async with using(state, client) as lease:
        try:
            found = await lease.read_job(
                pid, stdout_offset=offset, stderr_offset=stderr_offset, wait=wait
            )
        except NotFoundError:
            raise ToolError(
                f"no job {job} in your sandbox: use the `job` run_command(background=true) "
                "returned (jobs end with their sandbox)"
            ) from None
        except AgentRunError as exc:
            raise ToolError(str(exc)) from exc
    _, _, out = _job_output(found, offset, stderr_offset, state.options.max_output_chars)
    return out.model_copy(update={"session": client.handle})


async def kill_job(
    job: Annotated[str, Field(description="the `job` id run_command(background=true) returned")],
    ctx: Ctx,
    session: SessionArg = None,
) -> KillJobOut:
    """Stop a background job (SIGKILL to it and its children)."""
    pid = _job_id(job)
    state = _state(ctx)
    client = resolve(ctx, session)
    async with using(state, client) as lease:
        killed = await _guard(lease.kill_job(pid))
    return KillJobOut(job=job, killed=bool(killed), session=client.handle)


# ---------------------------------------------------------------- registration


def _hints(
    read_only: bool, destructive: bool, idempotent: bool, open_world: bool
) -> ToolAnnotations:
    return ToolAnnotations(
        read_only_hint=read_only,
        destructive_hint=destructive,
        idempotent_hint=idempotent,
        open_world_hint=open_world,
    )


# Code and commands can do anything in the sandbox (delete files, kill processes) and reach the
# network (template network mode PUBLIC): destructive and open-world, so hosts that auto-approve
# non-destructive tools still ask. File and job tools touch only the sandbox (closed world).


#: name, function, title, annotations
TOOL_TABLE: tuple[tuple[str, Callable[..., Any], str, ToolAnnotations], ...] = (
    ("run_code", run_code, "Run code", _hints(False, True, False, True)),
    ("reset_context", reset_context, "Reset the code context", _hints(False, True, True, False)),
    ("read_file", read_file, "Read a sandbox file", _hints(True, False, True, False)),
    ("write_file", write_file, "Write a sandbox file", _hints(False, True, True, False)),
    ("list_files", list_files, "List sandbox files", _hints(True, False, True, False)),
    ("run_command", run_command, "Run a shell command", _hints(False, True, False, True)),
    ("read_job", read_job, "Read a background job", _hints(True, False, True, False)),
    ("kill_job", kill_job, "Stop a background job", _hints(False, True, True, False)),
)


def make_tools(options: ServerOptions) -> list[Tool]:
    """The enabled tools, with compact output schemas and unknown arguments refused."""
    tools = [
        Tool.from_function(readable_failures(fn), name=name, title=title, annotations=annotations)
        for name, fn, title, annotations in TOOL_TABLE
        if name in options.tools
    ]
    for tool in tools:
        # The metadata is read live: validation still runs against the pydantic model.
        if tool.fn_metadata.output_schema is not None:
            tool.fn_metadata.output_schema = compact_schema(tool.fn_metadata.output_schema)
        _refuse_unknown_arguments(tool)
        tool.fn = observed(tool.name, tool.fn)  # one INFO line and span attributes per call
        if options.stateless and "session" in tool.parameters["properties"]:
            tool.parameters["properties"]["session"]["description"] = STATELESS_SESSION
        if tool.name == "run_code":
            described = tool.parameters["properties"]["timeout"]
            described["description"] = TIMEOUT_DESCRIPTION.format(
                default=options.timeout, cap=EXECUTE_CAP_SECONDS
            )
    return tools


def readable_failures(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Any exception a tool raises becomes a result that says what failed and what to do.

    The SDK withholds the message of anything but a `ToolError` ("Error executing
    tool run_code", nothing more); here the traceback goes to the log and the
    client reads the exception's type and message.
    """

    @functools.wraps(fn)
    async def tool(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except ToolError:
            raise
        except Exception as exc:
            log.exception("%s failed unexpectedly", fn.__name__)
            raise ToolError(
                f"{fn.__name__} failed unexpectedly: {type(exc).__name__}: "
                f"{exc or 'no message'}. Retry the call; if it fails again, the server's log "
                "(stderr) has the traceback, and restarting the server may help"
            ) from exc

    return tool


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
    from agentrun_ci import AgentRunError

    try:
        return await awaitable
    except AgentRunError as exc:
        raise ToolError(str(exc)) from exc


class _RunFailed(Exception):
    """run_code could not run the code; its message becomes the error result."""


def _fail(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


def _run_failure(exc: "AgentRunError") -> str:
    """The text of a run_code call the service could not complete."""
    from agentrun_ci import APIError, SessionLostError

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


def _kernel_restarted(execution: "Execution") -> bool:
    # the emulator says so (`kernelRestarted`) when an interrupt did not stop the code
    return execution.kernel_restarted
