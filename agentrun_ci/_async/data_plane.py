"""AsyncDataPlane: the AgentRun data API over one pooled, signed httpx client.

The sync twin is generated from agentrun_ci/_async/data_plane.py by
scripts/unasync.py; edit that file only. Every request and every answer is
built and parsed in `_wire`; this class only sends, retries what is safe to
retry, and maps transport failures.
"""

from __future__ import annotations

import logging
import os
import pathlib
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import anyio
import httpx

from .. import _jobs, _telemetry, _wire
from .._auth import AgentRunAuth
from .._config import Config
from .._errors import (
    AgentRunError,
    APIError,
    InvalidArgumentError,
    NotFoundError,
    RequestTimeout,
    TransportError,
    WaitTimeout,
    request_id_from,
)
from .._jobs import Job, JobInfo
from .._models import (
    CommandResult,
    Context,
    Execution,
    FileContent,
    FileEntry,
    Health,
    ProcessInfo,
    Sandbox,
)
from .._retry import Failure, RetryPolicy, parse_retry_after
from .._upload import UploadBody, UploadSource
from .._version import __version__
from .retrying import Retryable, with_retries
from .tty import AsyncTty

__all__ = ["AsyncDataPlane"]

T = TypeVar("T")
log = logging.getLogger("agentrun_ci.data_plane")

USER_AGENT = f"agentrun-ci/{__version__}"
CHUNK = 1 << 16


def _timeout(config: Config, read: float | None = None) -> httpx.Timeout:
    read = config.read_timeout if read is None else read
    return httpx.Timeout(connect=config.connect_timeout, read=read, write=read, pool=read)


class AsyncDataPlane:
    """Contexts, code execution, files and processes inside AgentRun sandboxes.

    One instance holds one keep-alive connection pool; share it, and close it
    (or use it as a context manager) when done.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        http2: bool = False,
        max_connections: int = 100,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config if config is not None else Config.from_env()
        # Seams for tests: a pinned jitter and a sleep that only records the delay.
        self.retry = retry if retry is not None else RetryPolicy(self.config.max_retries)
        self._sleep = sleep if sleep is not None else anyio.sleep
        auth = None
        key_id, secret = self.config.access_key_id, self.config.access_key_secret
        if key_id and secret and not self.config.api_key:  # an API key stands in for a signature
            auth = AgentRunAuth(key_id, secret, self.config.region, self.config.security_token)
        self._client = httpx.AsyncClient(
            base_url=self.config.data_url,
            auth=auth,
            headers={
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
                **self.config.data_headers,
            },
            timeout=_timeout(self.config),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            http2=http2,
            transport=transport,
            follow_redirects=False,
        )
        self._closed = False
        # Per-path absolute URLs and per-read-timeout Timeouts, made once: httpx parses a
        # relative URL twice to join it to the base (a sixth of a call's CPU here).
        self._urls: dict[str, httpx.URL] = {}
        self._timeouts: dict[float | None, httpx.Timeout] = {}
        # the instruments, or None without OpenTelemetry (then one None check per request)
        self._telemetry = _telemetry.get()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(endpoint={self.config.data_url!r})"

    # ------------------------------------------------------------ plumbing

    async def close(self) -> None:
        """Close the connection pool. Safe to call more than once."""
        if not self._closed:
            self._closed = True
            await self._client.aclose()

    async def __aenter__(self) -> AsyncDataPlane:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _url(self, path: str) -> httpx.URL:
        url = self._urls.get(path)
        if url is None:
            if len(self._urls) >= 1024:  # sandboxes come and go: keep the cache bounded
                self._urls.clear()
            # as httpx joins them: the base's path, then ours (which starts with "/")
            url = self._urls[path] = httpx.URL(str(self._client.base_url).rstrip("/") + path)
        return url

    def _request(self, call: _wire.Call[Any], **kw: Any) -> httpx.Request:
        timeout = self._timeouts.get(call.read_timeout)
        if timeout is None:
            timeout = self._timeouts[call.read_timeout] = _timeout(self.config, call.read_timeout)
        try:
            return self._client.build_request(
                call.method,
                self._url(call.path),
                params=call.params,
                json=call.json,
                timeout=timeout,
                **kw,
            )
        except UnicodeEncodeError as exc:
            # A lone surrogate (e.g. from os.fsdecode of a non-UTF-8 name) cannot travel as
            # UTF-8 JSON; say so instead of leaking a codec error from inside httpx.
            raise InvalidArgumentError(
                f"{call.method} {call.path}: the request contains text that is not valid "
                f"Unicode ({exc.reason} at position {exc.start}); remove lone surrogates or "
                "send the data as bytes"
            ) from None

    async def _send(
        self,
        call: _wire.Call[Any],
        *,
        stream: bool = False,
        content: Callable[[], AsyncIterator[bytes]] | None = None,
        **kw: Any,
    ) -> httpx.Response:
        """Send with the retry policy of `_retry`; return a successful response.

        `content` makes the body of each attempt (a stream is read once)."""

        async def attempt(resends: int) -> httpx.Response:
            if content is not None:
                kw["content"] = content()
            request = self._request(call, **kw)
            try:
                if self._telemetry is None or not self._telemetry.active():
                    response = await self._client.send(request, stream=stream)
                else:
                    with self._telemetry.http(request, call.path, resends) as span:
                        response = await self._client.send(request, stream=stream)
                        span.status = response.status_code
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # The connection never opened: the body cannot have reached the server.
                failure = Failure(connect_failed=True)
                raise Retryable(failure, _transport_error(exc, request), exc) from exc
            except httpx.TransportError as exc:
                # The body may have reached the server: never re-send (execute runs once).
                raise _transport_error(exc, request) from exc
            if response.status_code < 400:
                return response
            await response.aread()
            await response.aclose()
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            failure = Failure(status_code=response.status_code, retry_after=retry_after)
            raise Retryable(failure, _wire.error_from_response(response))

        return await with_retries(
            attempt,
            policy=self.retry,
            sleep=self._sleep,
            idempotent=call.idempotent,
            what=f"{call.method} {call.path}",
        )

    async def _call(self, call: _wire.Call[T]) -> T:
        response = await self._send(call)
        return call.parse(response)

    # ------------------------------------------------------------ sandboxes

    async def create_sandbox(
        self,
        template_name: str,
        *,
        idle_timeout: float | None = None,
        sandbox_id: str | None = None,
        nas_config: Any = None,
        oss_mount_config: Any = None,
        polar_fs_config: Any = None,
    ) -> Sandbox:
        """Start a sandbox from a template (it may still be CREATING: see wait_until_healthy).

        `nas_config`, `oss_mount_config` and `polar_fs_config` mount storage into this
        sandbox: each an `alibabacloud_agentrun20250910` model object (`NASConfig`,
        `OSSMountConfig`, `PolarFsConfig`) or a dict with the wire's field names."""
        return await self._call(
            _wire.create_sandbox(
                template_name,
                idle_timeout=idle_timeout,
                sandbox_id=sandbox_id,
                nas_config=nas_config,
                oss_mount_config=oss_mount_config,
                polar_fs_config=polar_fs_config,
            )
        )

    async def get_sandbox(self, sandbox_id: str) -> Sandbox:
        """Fetch a sandbox's current state."""
        return await self._call(_wire.get_sandbox(sandbox_id))

    async def stop_sandbox(self, sandbox_id: str) -> Sandbox:
        """Stop a sandbox (idempotent: a TERMINATED sandbox stays so)."""
        return await self._call(_wire.stop_sandbox(sandbox_id))

    async def delete_sandbox(self, sandbox_id: str) -> Sandbox | None:
        """Delete a sandbox (stopping it first); returns its last state if the service sends one."""
        return await self._call(_wire.delete_sandbox(sandbox_id))

    async def health(self, sandbox_id: str) -> Health:
        """Ask the sandbox's `/health` once."""
        return await self._call(_wire.health(sandbox_id))

    async def wait_until_healthy(
        self, sandbox_id: str, *, timeout: float = 60.0, interval: float = 0.2
    ) -> Health:
        """Poll `/health` until it says ok; WaitTimeout at the deadline."""
        deadline = time.monotonic() + timeout
        last: str = "no answer yet"
        delay = interval
        while True:
            try:
                health = await self.health(sandbox_id)
                if health.ok:
                    return health
                last = f"status {health.status!r}"
            except TransportError as exc:
                last = str(exc)
            except APIError as exc:
                # 404, 429 and 5xx are what a booting sandbox answers; anything else is final.
                if exc.status_code < 404 or exc.status_code in (405, 409, 413):
                    raise
                last = str(exc)
            if time.monotonic() + delay > deadline:
                raise WaitTimeout(
                    f"sandbox {sandbox_id} was not healthy after {timeout:g} s (last: {last}); "
                    "raise the timeout or check the sandbox in the console"
                )
            await anyio.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    # ------------------------------------------------------------ contexts

    async def create_context(
        self, sandbox_id: str, *, language: str = "python", cwd: str = _wire.DEFAULT_CWD
    ) -> Context:
        """Start a kernel (python or javascript) that keeps state between executes."""
        return await self._call(_wire.create_context(sandbox_id, language=language, cwd=cwd))

    async def list_contexts(self, sandbox_id: str) -> list[Context]:
        """List the sandbox's contexts."""
        return await self._call(_wire.list_contexts(sandbox_id))

    async def get_context(self, sandbox_id: str, context_id: str) -> Context:
        """Fetch one context."""
        return await self._call(_wire.get_context(sandbox_id, context_id))

    async def delete_context(self, sandbox_id: str, context_id: str) -> None:
        """Stop a context's kernel; its variables are gone."""
        await self._call(_wire.delete_context(sandbox_id, context_id))

    async def execute(
        self,
        sandbox_id: str,
        code: str,
        *,
        context_id: str | None = None,
        language: str | None = None,
        timeout: float = 30.0,
    ) -> Execution:
        """Run code in a context (or the language's default one) and return its Execution.

        Errors in the code are data (`Execution.error`); this raises only for
        API and transport failures, and it never sends the same code twice.
        """
        call = _wire.execute(
            sandbox_id, code, context_id=context_id, language=language, timeout=timeout
        )
        started = time.monotonic()
        response = await self._send(call)
        execution = call.parse(response)
        execution.duration = time.monotonic() - started
        execution.request_id = request_id_from(response.headers)
        return execution

    # ------------------------------------------------------------ files

    async def read_file(self, sandbox_id: str, path: str) -> FileContent:
        """Read a file (text as UTF-8, binary as base64 on the wire; always bytes here)."""
        return await self._call(_wire.read_file(sandbox_id, path))

    async def write_file(
        self,
        sandbox_id: str,
        path: str,
        content: str | bytes,
        *,
        mode: str = "644",
        create_dir: bool = True,
    ) -> FileEntry:
        """Write a file (bytes that are not UTF-8 travel as base64); parents are created."""
        return await self._call(
            _wire.write_file(sandbox_id, path, content, mode=mode, create_dir=create_dir)
        )

    async def list_files(
        self, sandbox_id: str, path: str = _wire.DEFAULT_CWD, *, depth: int = 1
    ) -> list[FileEntry]:
        """List a directory, `depth` levels deep."""
        return await self._call(_wire.list_files(sandbox_id, path, depth=depth))

    async def stat(self, sandbox_id: str, path: str) -> FileEntry:
        """Describe one file or directory."""
        return await self._call(_wire.stat(sandbox_id, path))

    async def mkdir(
        self, sandbox_id: str, path: str, *, parents: bool = True, mode: str = "0755"
    ) -> FileEntry:
        """Create a directory (mkdir -p by default; idempotent)."""
        return await self._call(_wire.mkdir(sandbox_id, path, parents=parents, mode=mode))

    async def move(self, sandbox_id: str, source: str, destination: str) -> FileEntry:
        """Move or rename a file or directory (idempotent)."""
        return await self._call(_wire.move(sandbox_id, source, destination))

    async def remove(self, sandbox_id: str, path: str) -> None:
        """Remove a file or directory, recursively (idempotent)."""
        await self._call(_wire.remove(sandbox_id, path))

    async def upload(
        self,
        sandbox_id: str,
        local_path: UploadSource | AsyncIterable[bytes],
        remote_path: str,
    ) -> FileEntry:
        """Upload a file, streamed: never read whole (≤100 MB on the service).

        `local_path` is a local file's path, or the data itself: bytes, a binary file
        object open for reading (sent from its current position; left open), or an
        iterable of bytes (the async plane takes an async one too). A path, bytes or a
        seekable file go with their length; an iterable of unknown length is sent with
        chunked transfer encoding, which the service does not document.
        """
        # Not idempotent for the retry policy: only a connect failure is retried, and then
        # no byte of the source was read (the body restarts; AgentRunAuth never reads it).
        call = _wire.Call(
            "POST", _wire.upload_path(sandbox_id), _wire.parse_upload, idempotent=False
        )
        with UploadBody(local_path, remote_path) as body:
            response = await self._send(call, content=body.aiter_bytes, headers=body.headers)
        return call.parse(response)

    async def download(
        self, sandbox_id: str, remote_path: str, local_path: str | os.PathLike[str]
    ) -> pathlib.Path:
        """Download a file to `local_path`, streamed to disk chunk by chunk."""
        target = pathlib.Path(local_path)
        partial = target.with_name(target.name + ".part")
        response = await self._send(_wire.download(sandbox_id, remote_path), stream=True)
        try:
            with partial.open("wb") as handle:
                async for chunk in response.aiter_bytes():  # as they arrive: no re-chunking
                    handle.write(chunk)
            partial.replace(target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        finally:
            await response.aclose()
        return target

    async def iter_download(
        self, sandbox_id: str, remote_path: str, *, chunk_size: int = CHUNK
    ) -> AsyncIterator[bytes]:
        """A file's bytes, streamed: the request goes out on the first step (a missing file
        raises there); close the iterator (`aclose()`) when stopping early."""
        response = await self._send(_wire.download(sandbox_id, remote_path), stream=True)
        try:
            async for chunk in response.aiter_bytes(chunk_size):
                yield chunk
        finally:
            await response.aclose()

    # ------------------------------------------------------------ processes

    async def run_command(
        self, sandbox_id: str, command: str, *, cwd: str | None = None, timeout: float = 30.0
    ) -> CommandResult:
        """Run a shell command to completion (≤30 s); a non-zero exit code is data."""
        return await self._call(_wire.run_command(sandbox_id, command, cwd=cwd, timeout=timeout))

    # ------------------------------------------------------------ background jobs

    async def _job_command(
        self, sandbox_id: str, script: str, *, wait: float = 0.0, cwd: str | None = None
    ) -> str:
        result = await self.run_command(sandbox_id, script, cwd=cwd, timeout=min(wait + 8.0, 30.0))
        if result.exit_code != 0 or "AGENTRUN-JOB " not in result.stdout:
            raise AgentRunError(
                f"the job helper failed in sandbox {sandbox_id} (exit code {result.exit_code}): "
                f"{(result.stderr or result.stdout).strip()[:300]}; background jobs need a POSIX "
                "shell with base64, setsid and mkfifo in the sandbox"
            )
        return result.stdout

    async def start_job(
        self,
        sandbox_id: str,
        command: str,
        *,
        cwd: str | None = None,
        envs: Mapping[str, str] | None = None,
        stdin: bool = False,
        tag: str | None = None,
        wait: float = 0.0,
    ) -> Job:
        """Start `command` in the background; it may run for hours (no 30 s cap).

        Returns the job's first report (`pid`, state, output so far), after
        waiting up to `wait` seconds for it to print or end. Poll it with
        `read_job`, stop it with `kill_job`; it is gone with its sandbox.
        """
        script = _jobs.start_script(command, cwd=cwd, envs=envs, stdin=stdin, tag=tag, wait=wait)
        try:
            out = await self._job_command(sandbox_id, script, wait=wait, cwd=cwd)
            job = _jobs.parse_job(None, out)
        except _jobs.JobError as exc:
            raise AgentRunError(f"could not start the job in sandbox {sandbox_id}: {exc}") from None
        assert job is not None
        return job

    async def read_job(
        self,
        sandbox_id: str,
        pid: int | str,
        *,
        stdout_offset: int = 0,
        stderr_offset: int = 0,
        wait: float = 0.0,
    ) -> Job:
        """A job's state and its output past the byte offsets (at most 1 MiB per stream).

        Waits in the sandbox up to `wait` seconds (≤20) for new output or the
        end. Pass the returned `stdout_offset`/`stderr_offset` to the next call.
        NotFoundError if there is no such job.
        """
        script = _jobs.poll_script(
            pid, stdout_offset=stdout_offset, stderr_offset=stderr_offset, wait=wait
        )
        out = await self._job_command(sandbox_id, script, wait=wait)
        try:
            job = _jobs.parse_job(
                pid, out, stdout_offset=stdout_offset, stderr_offset=stderr_offset
            )
        except _jobs.JobError as exc:
            raise AgentRunError(
                f"could not read job {pid} in sandbox {sandbox_id}: {exc}"
            ) from None
        if job is None:
            raise NotFoundError(f"no background job {pid} in sandbox {sandbox_id}", status_code=404)
        return job

    async def kill_job(self, sandbox_id: str, pid: int | str) -> bool:
        """SIGKILL a job (its whole process group) or any process by pid; False if none ran."""
        return _jobs.parse_kill(await self._job_command(sandbox_id, _jobs.kill_script(pid)))

    async def list_jobs(self, sandbox_id: str) -> list[JobInfo]:
        """The background jobs still running in the sandbox."""
        return _jobs.parse_list(await self._job_command(sandbox_id, _jobs.list_script()))

    async def send_job_stdin(self, sandbox_id: str, pid: int | str, data: str | bytes) -> None:
        """Write to the stdin of a job started with `stdin=True`."""
        payload = data.encode() if isinstance(data, str) else bytes(data)
        await self._job_stdin(sandbox_id, pid, payload)

    async def close_job_stdin(self, sandbox_id: str, pid: int | str) -> None:
        """Close a job's stdin: the command reads EOF."""
        await self._job_stdin(sandbox_id, pid, None)

    async def _job_stdin(self, sandbox_id: str, pid: int | str, data: bytes | None) -> None:
        said = _jobs.parse_stdin(await self._job_command(sandbox_id, _jobs.stdin_script(pid, data)))
        if said == "none":
            raise NotFoundError(f"no background job {pid} in sandbox {sandbox_id}", status_code=404)
        if said == "nostdin":
            raise InvalidArgumentError(
                f"job {pid} has no stdin: start it with stdin=True to send it input"
            )
        if said == "ended":
            raise InvalidArgumentError(f"job {pid} has ended: its stdin is closed")

    async def open_tty(
        self,
        sandbox_id: str,
        *,
        rows: int = 24,
        cols: int = 80,
        cwd: str | None = None,
        envs: dict[str, str] | None = None,
        pid: int | None = None,
    ) -> AsyncTty:
        """Open a terminal: an interactive shell on a pseudo-terminal of `rows` x `cols`,
        over the `/processes/tty` WebSocket (needs the `tty` extra).

        `cwd`, `envs` and `pid` (re-attach to a running shell instead of starting one)
        are understood by the local emulator; AgentRun documents none of them (the size
        is also sent as a `resize` frame, which it documents). Not retried: a second
        attempt could start a second shell.
        """
        return await AsyncTty.open(
            self.config,
            sandbox_id,
            rows=rows,
            cols=cols,
            cwd=cwd,
            envs=envs,
            pid=pid,
            user_agent=USER_AGENT,
        )

    async def list_processes(self, sandbox_id: str) -> list[ProcessInfo]:
        """List the processes running in the sandbox."""
        return await self._call(_wire.list_processes(sandbox_id))

    async def get_process(self, sandbox_id: str, pid: str) -> ProcessInfo:
        """Describe one process."""
        return await self._call(_wire.get_process(sandbox_id, pid))

    async def kill_process(self, sandbox_id: str, pid: str) -> None:
        """Stop a process (SIGTERM, then SIGKILL)."""
        await self._call(_wire.kill_process(sandbox_id, pid))


def _transport_error(exc: httpx.TransportError, request: httpx.Request) -> TransportError:
    where = f"{request.method} {request.url.copy_with(query=None)}"
    if isinstance(exc, httpx.ConnectTimeout):
        return RequestTimeout(
            f"connecting for {where} timed out; check the endpoint, the network, or raise "
            "Config.connect_timeout"
        )
    if isinstance(exc, httpx.TimeoutException):
        return RequestTimeout(
            f"{where} timed out waiting for the answer ({type(exc).__name__}); it was not "
            "re-sent, because the request may already have run. Raise Config.read_timeout, "
            "or for code use a shorter execute"
        )
    if isinstance(exc, httpx.ConnectError):
        return TransportError(
            f"could not connect for {where}: {exc}; check AGENTRUN_DATA_ENDPOINT / the region "
            "and the network"
        )
    return TransportError(
        f"{where} failed in transit ({type(exc).__name__}: {exc}); it was not re-sent because "
        "it may have reached the service"
    )
