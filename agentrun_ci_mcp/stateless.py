"""`--stateless`: no per-client state in the process, so that replicas can share clients.

Over streamable HTTP with `--stateless`, the SDK keeps no MCP session and this
server keeps no client state. What a client's calls need to find its state again
-- its sandbox and its contexts (one per language) -- travels in the `session`
handle every result carries, signed with HMAC-SHA256 under a key every replica
shares (`AGENTRUN_MCP_HANDLE_KEY`). Any replica serves any call; a forged or
altered handle is refused. A replica that dies loses only its calls in flight.

* A call without a handle starts a sandbox of its own (a sandbox per client, as
  `dedicated`) from the shared interpreter; its result carries the first handle.
* A handle whose context is gone (deleted, kernel died) gets a fresh context and
  `state_reset: true`; one whose sandbox is gone gets a fresh sandbox (run_code)
  or an error that says to start again (the other tools).
* Sandboxes are not tied to any process: they end by the service's idle timeout
  (`--idle-timeout`), never at a replica's exit.
* The interpreter (template) is shared by the replicas and never deleted: the
  one `--interpreter` names, else `agentrun-ci-mcp`, created by the first
  replica that needs it.

Handle format: `v1.<payload>.<signature>`, both base64url without padding; the
payload is compact JSON `{"s": sandbox, "c": {language: context}, "i": issued}`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, cast

import anyio
import attrs

from .clients import ClientState

if TYPE_CHECKING:
    from agentrun_ci import (
        AsyncCodeInterpreter,
        AsyncDataPlane,
        AsyncLease,
        CommandResult,
        Execution,
        FileContent,
        FileEntry,
        Job,
    )

    from .options import ServerOptions

__all__ = [
    "HANDLE_KEY_ENV",
    "MIN_KEY_CHARS",
    "SHARED_INTERPRETER",
    "BadHandle",
    "Handle",
    "HandleKey",
    "Stateless",
    "StatelessLease",
]

log = logging.getLogger("agentrun_ci_mcp")

HANDLE_KEY_ENV = "AGENTRUN_MCP_HANDLE_KEY"
#: the shortest key accepted (characters): 32 random URL-safe characters are 192 bits
MIN_KEY_CHARS = 32
#: the interpreter (template) replicas share when --interpreter names none
SHARED_INTERPRETER = "agentrun-ci-mcp"
_VERSION = "v1"
#: signed with every payload, so that a signature made for anything else never verifies
_DOMAIN = b"agentrun-ci-mcp session handle v1\0"
#: what a refused handle tells the client (never why in detail: nothing to probe)
_REFUSED = (
    "this `session` handle was not issued by this server's deployment, or was altered: it "
    "is refused. Omit `session` to start a new state (a new sandbox); if the servers' "
    f"{HANDLE_KEY_ENV} was changed, handles issued before are refused too"
)
_KEY_HINT = (
    "every replica needs the same secret: generate one with "
    "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'` and set it in each "
    "replica's environment (several, comma-separated, while rotating: the first signs, any "
    "verifies)"
)


class BadHandle(Exception):
    """A `session` handle that is malformed, forged or altered (its message says what to do)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@attrs.frozen
class Handle:
    """What a client's calls need to find its state: its sandbox and contexts."""

    sandbox: str
    #: language -> context id
    contexts: tuple[tuple[str, str], ...] = ()
    issued: int = attrs.field(factory=lambda: int(time.time()))

    def context(self, language: str) -> str | None:
        return dict(self.contexts).get(language)

    def payload(self) -> bytes:
        return json.dumps(
            {"s": self.sandbox, "c": dict(self.contexts), "i": self.issued},
            separators=(",", ":"),
            sort_keys=True,
        ).encode()

    @classmethod
    def from_payload(cls, data: bytes) -> Handle:
        fields = json.loads(data)
        sandbox, contexts, issued = fields["s"], fields["c"], fields["i"]
        if not isinstance(sandbox, str) or not sandbox or not isinstance(contexts, dict):
            raise ValueError("bad fields")
        if not isinstance(issued, int):
            raise ValueError("bad issue time")
        pairs = tuple(sorted((str(k), str(v)) for k, v in contexts.items()))
        return cls(sandbox=sandbox, contexts=pairs, issued=issued)


class HandleKey:
    """The secret(s) handles are signed with: the first signs, any verifies (rotation).

    Never shown: not by repr, str, logs or errors.
    """

    __slots__ = ("_keys",)

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError(f"{HANDLE_KEY_ENV} is empty: {_KEY_HINT}")
        self._keys = tuple(keys)

    @classmethod
    def from_text(cls, text: str | None) -> HandleKey:
        """Keys from the variable's value; ValueError names the variable and the fix."""
        if not text or not text.strip():
            raise ValueError(
                f"--stateless needs {HANDLE_KEY_ENV}, the key that signs the `session` "
                f"handles so that any replica can trust them: {_KEY_HINT}"
            )
        keys = [k.strip() for k in text.split(",") if k.strip()]
        short = [i + 1 for i, k in enumerate(keys) if len(k) < MIN_KEY_CHARS]
        if short:
            which = "it is" if len(keys) == 1 else f"key(s) {short} of {len(keys)} are"
            raise ValueError(
                f"{HANDLE_KEY_ENV}: {which} shorter than {MIN_KEY_CHARS} characters; {_KEY_HINT}"
            )
        return cls([k.encode() for k in keys])

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> HandleKey:
        return cls.from_text(environ.get(HANDLE_KEY_ENV))

    def __repr__(self) -> str:
        return f"HandleKey(<{len(self._keys)} key(s) hidden>)"

    __str__ = __repr__

    def __reduce__(self) -> Any:  # never pickled (into a log record, a cache...)
        raise TypeError("a HandleKey is not picklable")

    @staticmethod
    def _mac(key: bytes, body: bytes) -> bytes:
        return hmac.new(key, _DOMAIN + body, hashlib.sha256).digest()

    def sign(self, handle: Handle) -> str:
        body = _b64(handle.payload()).encode("ascii")
        return f"{_VERSION}.{body.decode()}.{_b64(self._mac(self._keys[0], body))}"

    def verify(self, text: str) -> Handle:
        """The handle `text` carries, if one of the keys signed it; else BadHandle."""
        version, _, rest = text.partition(".")
        body, _, signature = rest.partition(".")
        if version != _VERSION or not body or not signature or len(text) > 4096:
            raise BadHandle(_REFUSED)
        try:
            given = signature.encode("ascii")
            raw = body.encode("ascii")
        except UnicodeEncodeError:
            raise BadHandle(_REFUSED) from None
        # Compared as text, not as decoded bytes: base64 has several spellings of the same
        # bytes (the unused bits of the last character), and an altered spelling is an
        # altered handle. Every key is tried, so the time taken does not say which matched.
        valid = False
        for key in self._keys:
            valid |= hmac.compare_digest(_b64(self._mac(key, raw)).encode("ascii"), given)
        if not valid:
            raise BadHandle(_REFUSED)
        try:
            return Handle.from_payload(_unb64(body))
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise BadHandle(_REFUSED) from None


@attrs.define(eq=False)
class StatelessClient(ClientState):
    """One call's view of a stateless client: rebuilt from its handle at every call."""

    stateless_lease: StatelessLease | None = None


class StatelessLease:
    """The tools' lease for one call of a stateless client, on the data plane directly.

    Its methods mirror `AsyncLease`'s that the tools use. `handle` is the
    client's state after the call (a new sandbox or context changes it).
    """

    def __init__(self, owner: Stateless, handle: Handle | None) -> None:
        self._owner = owner
        self.handle = handle
        #: a sandbox this call started: deleted if the call fails (nobody gets its handle)
        self.created: str | None = None
        #: the call's run was cancelled
        self._cancelled = False

    def __repr__(self) -> str:
        return f"StatelessLease(session_id={self.session_id!r})"

    @property
    def session_id(self) -> str | None:
        return self.handle.sandbox if self.handle is not None else None

    async def _data(self) -> AsyncDataPlane:
        return await self._owner.data_plane()

    async def _sandbox(self) -> str:
        """The client's sandbox, started at its first call."""
        if self.handle is None:
            sandbox = await self._owner.start_sandbox()
            self.created = sandbox
            self.handle = Handle(sandbox=sandbox)
        return self.handle.sandbox

    def _with_context(self, language: str, context: str | None) -> None:
        assert self.handle is not None
        contexts = {k: v for k, v in self.handle.contexts if k != language}
        if context is not None:
            contexts[language] = context
        self.handle = Handle(sandbox=self.handle.sandbox, contexts=tuple(sorted(contexts.items())))

    async def _new_context(self, language: str) -> str:
        from agentrun_ci import DEFAULT_CWD

        data = await self._data()
        sandbox = await self._sandbox()
        context = await data.create_context(sandbox, language=language, cwd=DEFAULT_CWD)
        self._with_context(language, context.id)
        return context.id

    async def _gone(self, sandbox: str) -> bool:
        from agentrun_ci import APIError, NotFoundError, TransportError

        try:
            await (await self._data()).health(sandbox)
        except NotFoundError:
            return True
        except (APIError, TransportError):
            return False
        return False

    async def _replace_sandbox(self) -> None:
        """The client's sandbox is gone: a new one (its state is lost, and run_code says so)."""
        old = self.session_id
        self.handle = None
        await self._sandbox()
        log.info("sandbox %s of a stateless client is gone; started %s", old, self.session_id)

    async def execute_code(
        self, code: str, *, language: str | None = None, timeout: float = 30.0
    ) -> Execution:
        from agentrun_ci import APIError, NotFoundError
        from agentrun_ci._lease import context_lost, kernel_died

        language = language or "python"
        data = await self._data()
        sandbox = await self._sandbox()
        context = (self.handle.context(language) if self.handle else None) or (
            await self._new_context(language)
        )
        reset = False
        try:
            try:
                execution = await data.execute(sandbox, code, context_id=context, timeout=timeout)
            except NotFoundError:
                # refused (404): the code did not run, so running it in a fresh context is safe
                if await self._gone(sandbox):
                    await self._replace_sandbox()
                else:
                    self._with_context(language, None)
                context = await self._new_context(language)
                reset = True
                execution = await data.execute(
                    self.session_id or sandbox, code, context_id=context, timeout=timeout
                )
        except APIError as exc:
            if not context_lost(exc):
                raise
            self._with_context(language, None)  # the next run starts a fresh one
            return kernel_died(exc)
        except anyio.get_cancelled_exc_class():
            # the tools stop the code with reset(); no result will carry a handle, so
            # the context that reset() would make for it would serve nobody
            self._cancelled = True
            raise
        execution.state_reset = reset
        return execution

    async def reset(self) -> None:
        """Delete the client's contexts and make a fresh Python one (none when the reset
        stops a cancelled run: its call returns no handle)."""
        from agentrun_ci import AgentRunError

        data = await self._data()
        sandbox = await self._sandbox()
        assert self.handle is not None
        for _, context in self.handle.contexts:
            with contextlib.suppress(AgentRunError):
                await data.delete_context(sandbox, context)
        self.handle = Handle(sandbox=sandbox)
        if not self._cancelled:
            await self._new_context("python")

    async def _on_sandbox(self, action: Any) -> Any:
        from agentrun_ci import NotFoundError, SessionLostError

        sandbox = await self._sandbox()
        try:
            return await action(await self._data(), sandbox)
        except NotFoundError as exc:
            if not await self._gone(sandbox):
                raise
            raise SessionLostError(
                "the sandbox of this `session` is gone (it expired after being idle, or was "
                "deleted): its files and variables are lost. Omit `session` to start a new one"
            ) from exc

    async def read_file(self, path: str) -> FileContent:
        return cast("FileContent", await self._on_sandbox(lambda d, s: d.read_file(s, path)))

    async def write_file(self, path: str, content: str | bytes) -> FileEntry:
        return cast(
            "FileEntry", await self._on_sandbox(lambda d, s: d.write_file(s, path, content))
        )

    async def list_files(self, path: str, *, depth: int = 1) -> list[FileEntry]:
        return cast(
            "list[FileEntry]",
            await self._on_sandbox(lambda d, s: d.list_files(s, path, depth=depth)),
        )

    async def run_command(
        self, command: str, *, cwd: str | None = None, timeout: float = 30.0
    ) -> CommandResult:
        return cast(
            "CommandResult",
            await self._on_sandbox(
                lambda d, s: d.run_command(s, command, cwd=cwd, timeout=timeout)
            ),
        )

    async def start_job(self, command: str, *, cwd: str | None = None) -> Job:
        return cast(
            "Job", await self._on_sandbox(lambda d, s: d.start_job(s, command, cwd=cwd, tag="mcp"))
        )

    async def read_job(
        self, pid: int, *, stdout_offset: int = 0, stderr_offset: int = 0, wait: float = 0.0
    ) -> Job:
        return cast(
            "Job",
            await self._on_sandbox(
                lambda d, s: d.read_job(
                    s, pid, stdout_offset=stdout_offset, stderr_offset=stderr_offset, wait=wait
                )
            ),
        )

    async def kill_job(self, pid: int) -> bool:
        return bool(await self._on_sandbox(lambda d, s: d.kill_job(s, pid)))

    async def discard_created(self) -> None:
        """The call failed: delete the sandbox it started (no result carries its handle)."""
        from agentrun_ci import AgentRunError

        sandbox, self.created = self.created, None
        if sandbox is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(15):
            try:
                await (await self._data()).delete_sandbox(sandbox)
            except AgentRunError as exc:
                log.warning(
                    "could not delete sandbox %s of a failed first call (it ends by its idle "
                    "timeout): %s",
                    sandbox,
                    exc,
                )


class Stateless:
    """The stateless mode of one process: the planes, the shared interpreter, the key."""

    def __init__(self, options: ServerOptions, key: HandleKey) -> None:
        self.options = options
        self.key = key
        self.interpreter_name = options.interpreter or SHARED_INTERPRETER
        self._ci: AsyncCodeInterpreter | None = None
        self._data: AsyncDataPlane | None = None
        self._lock = anyio.Lock()
        #: calls in flight, cancelled at shutdown
        self.scopes: set[anyio.CancelScope] = set()
        self.closing = False

    def __repr__(self) -> str:
        return f"Stateless(interpreter={self.interpreter_name!r}, key={self.key!r})"

    # ---------------------------------------------------------------- the service

    async def data_plane(self) -> AsyncDataPlane:
        if self._data is None:
            async with self._lock:
                if self._data is None:
                    self._data = await self._open()
        return self._data

    async def _open(self) -> AsyncDataPlane:
        from agentrun_ci import AsyncCodeInterpreter, ConflictError, NotFoundError

        options = self.options
        if _in_process(options):
            log.warning(
                "--stateless with the in-process local emulator: its sandboxes live and die "
                "with this process, so no other replica can reach them. Point every replica "
                "at one shared service (AgentRun, or `agentrun-ci local serve`)"
            )
        ci = AsyncCodeInterpreter(
            options.config,
            backend=options.backend,
            owner=options.owner,
            interpreter_name=self.interpreter_name,
            keep_interpreter=True,
            reap_on_start=False,  # warm_up reaps; nothing of ours is ever an orphan
        )
        try:
            await ci.__aenter__()
            control, name = ci.control_plane, self.interpreter_name
            try:
                await control.get_template(name)
            except NotFoundError:
                if options.interpreter is not None:
                    raise
                # the first replica makes it; one that loses the race uses the winner's
                with contextlib.suppress(ConflictError):
                    await control.create_template(
                        name,
                        cpu=options.cpu,
                        memory=options.memory,
                        idle_timeout=options.idle_timeout,
                        description=json.dumps(
                            {"agentrun-ci-mcp": {"stateless": True, "keep": True}}
                        ),
                        **options.template_fields,
                    )
                    log.info("created the shared interpreter %s (it is never deleted)", name)
            await control.wait_template_ready(name, timeout=300)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await ci.close()
            raise
        self._ci = ci
        log.info("stateless: sandboxes of interpreter %s, one per client", name)
        return ci.data_plane

    async def start_sandbox(self) -> str:
        """A new sandbox for a client: not tracked by this process, never deleted at its exit
        (it ends by its idle timeout)."""
        from agentrun_ci import AgentRunError

        data = await self.data_plane()
        owner = self._ci.owner if self._ci is not None else "mcp"
        wanted = f"mcp-{owner}-{secrets.token_hex(8)}"
        sandbox = await data.create_sandbox(
            self.interpreter_name,
            idle_timeout=self.options.idle_timeout,
            sandbox_id=wanted,
            **self.options.session_mount_fields,
        )
        sandbox_id = sandbox.sandbox_id or wanted
        try:
            await data.wait_until_healthy(sandbox_id, timeout=60)
        except BaseException:
            with anyio.CancelScope(shield=True), contextlib.suppress(AgentRunError):
                await data.delete_sandbox(sandbox_id)
            raise
        log.info("stateless: started sandbox %s for a new client", sandbox_id)
        return sandbox_id

    # ---------------------------------------------------------------- calls

    def client(self, session: str | None) -> StatelessClient:
        """The caller's state, from its handle (None: a new client). BadHandle if refused."""
        handle = self.key.verify(session) if session is not None else None
        client = StatelessClient(key="stateless", handle=session or "")
        client.stateless_lease = StatelessLease(self, handle)
        client.had_state = client.delivered = handle is not None
        return client

    @contextlib.asynccontextmanager
    async def call(self, client: ClientState) -> AsyncIterator[AsyncLease]:
        """One call's lease; afterwards `client.handle` is the state's new signed handle."""
        from mcp.server.mcpserver.exceptions import ToolError

        from agentrun_ci import AgentRunError

        if self.closing:
            raise ToolError("the server is shutting down")
        assert isinstance(client, StatelessClient)
        assert client.stateless_lease is not None
        lease = client.stateless_lease
        scope = anyio.CancelScope()
        self.scopes.add(scope)
        answered = False
        try:
            with scope:
                try:
                    await self.data_plane()
                except AgentRunError as exc:
                    raise ToolError(f"could not reach the sandbox service: {exc}") from exc
                yield cast("AsyncLease", lease)
            if scope.cancelled_caught:
                raise ToolError("the server is shutting down; the call was stopped")
            answered = True
            if lease.handle is not None:
                client.handle = self.key.sign(lease.handle)
        finally:
            self.scopes.discard(scope)
            if not answered:
                await lease.discard_created()

    def cancel_calls(self) -> None:
        self.closing = True
        for scope in list(self.scopes):
            scope.cancel()

    async def close(self) -> None:
        """Close the planes; sandboxes and the interpreter are left to the service."""
        ci, self._ci, self._data = self._ci, None, None
        if ci is not None:
            await ci.close()


def _in_process(options: ServerOptions) -> bool:
    """Would this process run its own emulator (no shared service configured)?"""
    from agentrun_ci import Config

    if options.backend == "local":
        return True
    if options.backend == "cloud":
        return False
    config = options.config or Config.from_env()
    return not (config.has_credentials or bool(config.control_endpoint and config.data_endpoint))
