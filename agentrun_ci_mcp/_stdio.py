"""stdin/stdout for the stdio transport without worker threads.

The SDK's `stdio_server()` reads stdin and writes stdout through `anyio.wrap_file`,
i.e. one worker-thread hop per line read and two per message written (write,
flush). On a small machine those hops are most of a tool call's overhead, and
the thread blocked in `readline()` is what makes SIGINT hang at exit. Here both
directions are asyncio pipe transports on private duplicates of fd 0 and 1:
no threads, and nothing to join at exit.

While serving, fd 0 reads /dev/null and fd 1 writes to stderr (as the SDK does),
so a stray `print()` or a child process can never corrupt the protocol stream;
both are restored afterwards.

`pipe_streams()` yields None when stdin/stdout are not pipes, sockets or ttys
(e.g. a regular file redirected in): the caller then lets the SDK use its own
threaded reader.
"""

import asyncio
import contextlib
import fcntl
import logging
import os
import stat
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
from mcp.shared.message import SessionMessage
from mcp.types import (
    INVALID_REQUEST,
    PARSE_ERROR,
    ErrorData,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
)
from pydantic import ValidationError

__all__ = ["PipeLines", "PipeWriter", "answer_before_eof", "pipe_streams"]

log = logging.getLogger("agentrun_ci_mcp")

#: one JSON-RPC message per line; a line this long is refused rather than buffered
MAX_LINE_BYTES = 256 * 1024 * 1024
_CHUNK = 256 * 1024


class PipeLines:
    """Async iterator of the text lines of a non-blocking pipe (UTF-8, errors replaced)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._buffer = bytearray()
        self._eof = False
        #: inside an oversized line: drop bytes up to its end
        self._dropping = False

    def __aiter__(self) -> "PipeLines":
        return self

    async def __anext__(self) -> str:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                if self._dropping:
                    self._dropping = False
                    continue
                return line.decode("utf-8", errors="replace")
            if self._eof:
                if self._buffer and not self._dropping:
                    line = bytes(self._buffer)
                    self._buffer.clear()
                    return line.decode("utf-8", errors="replace")
                raise StopAsyncIteration
            if len(self._buffer) > MAX_LINE_BYTES:
                # Too big to be a request we would serve: drop it up to its newline
                # rather than buffer without bound (its caller times out).
                if not self._dropping:
                    log.error("stdin: dropped a message over %d bytes", MAX_LINE_BYTES)
                self._dropping = True
                self._buffer.clear()
            chunk = await self._reader.read(_CHUNK)
            if chunk:
                self._buffer += chunk
            else:
                self._eof = True


class PipeWriter:
    """`write()` + `flush()` over an asyncio write-pipe transport."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._gone = False

    async def write(self, text: str) -> None:
        if not self._gone:
            self._writer.write(text.encode("utf-8"))

    async def flush(self) -> None:
        # A client that closed its end is gone: drop what we write until stdin's
        # EOF ends the session (raising here would kill the server before cleanup).
        if self._gone:
            return
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            self._gone = True
            log.info("stdout closed by the client (%s); output is dropped", exc)


def _pipe_like(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)


@contextlib.contextmanager
def _divert(fd: int, target: int) -> Iterator[int]:
    """Yield a private duplicate of `fd` while `fd` itself points at `target`.

    Afterwards `fd` is the wire again, in blocking mode (the event loop made it
    non-blocking, and duplicates share that flag), and the duplicate is closed.
    """
    private: int = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.dup2(target, fd)
    try:
        yield private
    finally:
        with contextlib.suppress(OSError):
            os.set_blocking(private, True)
            os.dup2(private, fd)
        os.close(private)


@contextlib.asynccontextmanager
async def pipe_streams() -> AsyncIterator[tuple[PipeLines, PipeWriter] | None]:
    """Thread-free stdin lines and stdout writer, or None where that is not possible."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not on asyncio (trio)
        loop = None
    if loop is None or not (_pipe_like(0) and _pipe_like(1)):
        yield None
        return
    with contextlib.ExitStack() as stack:
        null = os.open(os.devnull, os.O_RDONLY)
        stack.callback(os.close, null)
        sys.stdout.flush()
        in_fd = stack.enter_context(_divert(0, null))
        out_fd = stack.enter_context(_divert(1, 2))
        # Each transport owns (and closes) a duplicate of its own: loops differ in
        # whether they close the fd they are given (uvloop does).
        stdin = os.fdopen(fcntl.fcntl(in_fd, fcntl.F_DUPFD_CLOEXEC, 3), "rb", buffering=0)
        stdout = os.fdopen(fcntl.fcntl(out_fd, fcntl.F_DUPFD_CLOEXEC, 3), "wb", buffering=0)
        reader = asyncio.StreamReader(limit=_CHUNK)
        read_transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), stdin
        )
        try:
            write_transport, protocol = await loop.connect_write_pipe(
                asyncio.streams.FlowControlMixin, stdout
            )
        except BaseException:
            read_transport.close()
            stdout.close()
            raise
        writer = asyncio.StreamWriter(write_transport, protocol, None, loop)
        try:
            yield PipeLines(reader), PipeWriter(writer)
        finally:
            read_transport.close()
            write_transport.close()
            # let the transports finish closing before the wire is restored
            with anyio.CancelScope(shield=True):
                await anyio.lowlevel.checkpoint()


# ---------------------------------------------------------------- answers before EOF


class Unanswered:
    """Ids of requests read from the client and not yet answered (nor cancelled)."""

    def __init__(self) -> None:
        self.ids: set[Any] = set()
        #: when the newest request was read (time.monotonic)
        self.last_request = 0.0
        self._changed = anyio.Event()

    def read(self, item: object) -> None:
        message = getattr(item, "message", None)
        if isinstance(message, JSONRPCRequest):
            self.ids.add(message.id)
            self.last_request = time.monotonic()
        elif isinstance(message, JSONRPCNotification) and message.method == (
            "notifications/cancelled"
        ):
            # a cancelled request gets no answer: nothing to wait for
            self._forget((message.params or {}).get("requestId"))

    def written(self, item: object) -> None:
        message = getattr(item, "message", None)
        if isinstance(message, JSONRPCResponse | JSONRPCError):
            self._forget(message.id)

    def _forget(self, request_id: Any) -> None:
        if request_id in self.ids:
            self.ids.discard(request_id)
            self._changed.set()
            self._changed = anyio.Event()

    async def wait_answered(self, grace: float, batch_window: float) -> None:
        """At EOF: wait up to `grace` for the requests of a batch to be answered.

        A batch is a client that closed stdin within `batch_window` of its last
        request (it wrote everything, then closed). A client that went quiet first
        and then closed stdin is a host stopping us (MCP's stdio shutdown): nothing
        is waited for, and the SDK cancels what is in flight.
        """
        if not self.ids:
            return
        quiet = time.monotonic() - self.last_request
        if quiet > batch_window:
            log.info(
                "stdin closed %.1f s after the last request, with %d call(s) in flight: "
                "a client stopping the server; cancelling them",
                quiet,
                len(self.ids),
            )
            return
        with anyio.move_on_after(grace):
            while self.ids:
                await self._changed.wait()
        if self.ids:
            log.info("stdin closed with %d request(s) unanswered after %g s", len(self.ids), grace)


def refusal(exc: Exception) -> JSONRPCError:
    """The JSON-RPC 2.0 answer to a line that is not a message (the SDK drops it silently)."""
    errors = exc.errors() if isinstance(exc, ValidationError) else []
    first: dict[str, Any] = dict(errors[0]) if errors else {}
    if first.get("type") == "json_invalid":
        detail = str(first.get("msg", "invalid JSON"))
        return JSONRPCError(
            jsonrpc="2.0",
            id=None,
            error=ErrorData(
                code=PARSE_ERROR,
                message=f"Parse error: {detail}; send one JSON-RPC message per line",
            ),
        )
    given = first.get("input")
    request_id = given.get("id") if isinstance(given, dict) else None
    return JSONRPCError(
        jsonrpc="2.0",
        id=request_id if isinstance(request_id, int | str) else None,
        error=ErrorData(
            code=INVALID_REQUEST,
            message="Invalid Request: not a JSON-RPC 2.0 request, notification or response",
        ),
    )


class _Wrapped:
    """A stream that forwards everything it does not override to the SDK's own."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:  # e.g. `last_context`, which the SDK probes
        return getattr(self._inner, name)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> "_Wrapped":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AnswerBeforeEOF(_Wrapped):
    """The server's read stream, holding end-of-input back until what was read is answered.

    The SDK cancels the requests in flight as soon as stdin ends; a client that
    writes its requests and closes stdin (a file, a shell pipe) would lose the last
    answers. Only a batch is waited for (stdin ended within `batch_window` of the last
    request; a host closes stdin to stop the server, after going quiet), at most
    `grace`. Lines that are not messages, which the
    SDK drops with a debug log, are answered with a JSON-RPC parse or request error.
    """

    def __init__(
        self,
        inner: Any,
        unanswered: Unanswered,
        grace: float,
        batch_window: float,
        reply: Any,
        on_eof: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(inner)
        self._unanswered = unanswered
        self._grace = grace
        self._batch_window = batch_window
        self._reply = reply
        self._on_eof = on_eof

    async def receive(self) -> Any:
        while True:
            try:
                item = await self._inner.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                await self._unanswered.wait_answered(self._grace, self._batch_window)
                if self._on_eof is not None:
                    self._on_eof()
                raise
            if isinstance(item, Exception):
                log.debug("refused a line that is not a JSON-RPC message: %s", item)
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                    await self._reply.send(SessionMessage(refusal(item)))
                continue
            self._unanswered.read(item)
            return item

    def __aiter__(self) -> "AnswerBeforeEOF":
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None


class CountAnswers(_Wrapped):
    """The server's write stream, marking each response's request answered."""

    def __init__(
        self, inner: Any, unanswered: Unanswered, on_answer: Callable[[], None] | None = None
    ) -> None:
        super().__init__(inner)
        self._unanswered = unanswered
        self._on_answer = on_answer

    async def send(self, item: Any, /) -> None:
        await self._inner.send(item)
        self._unanswered.written(item)
        if self._on_answer is not None:
            self._on_answer()


def answer_before_eof(
    read: Any,
    write: Any,
    grace: float,
    batch_window: float,
    on_answer: Callable[[], None] | None = None,
    on_eof: Callable[[], None] | None = None,
) -> tuple[Any, Any]:
    """Wrap the SDK's stdio streams: EOF waits (up to `grace`) for a batch's answers, and
    a line that is not a message gets a JSON-RPC error instead of silence. `on_answer`
    is called after each message sent; `on_eof` when the end of input is passed on."""
    unanswered = Unanswered()
    return (
        AnswerBeforeEOF(read, unanswered, grace, batch_window, write, on_eof),
        CountAnswers(write, unanswered, on_answer),
    )
