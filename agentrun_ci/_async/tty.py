"""AsyncTty: a terminal in a sandbox, over AgentRun's `/processes/tty` WebSocket.

The sync twin is generated from agentrun_ci/_async/tty.py by scripts/unasync.py;
edit that file only. Frames are built and read in `agentrun_ci._tty` (where the
inferred parts of the protocol are listed). The WebSocket client is the
`websockets` library, imported when a terminal is opened: install the `tty` extra.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import httpx

from .. import _tty, _wire
from .._config import Config
from .._errors import AgentRunError, ConfigError, TransportError
from .._tty import TtyEvent, TtyExit, TtyStarted

__all__ = ["AsyncTty"]

MAX_FRAME = 16 * 1024 * 1024


def _connect() -> Any:
    try:
        from websockets.asyncio.client import connect
    except ImportError:
        raise ConfigError(
            "terminals need the `websockets` package: pip install 'agentrun-ci[tty]'"
        ) from None
    return connect


class AsyncTty:
    """One connection to a shell on a pseudo-terminal in a sandbox.

    `send` types into it, `resize` changes its size, `events()` yields what it prints
    (`TtyOutput`) and finally `TtyExit` with the shell's exit code; pings are answered
    while `events()` is read. AgentRun closes a connection after 2 minutes without
    input or output (a `TtyWarning` comes first).
    """

    def __init__(self, connection: Any, pid: int | None, first: list[TtyEvent]) -> None:
        self._ws = connection
        self._pid = pid
        self._pending = first
        self._closed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(pid={self._pid})"

    @property
    def pid(self) -> int | None:
        """The shell's process id in the sandbox, if the service said it."""
        return self._pid

    @classmethod
    async def open(
        cls,
        config: Config,
        sandbox_id: str,
        *,
        rows: int = 24,
        cols: int = 80,
        cwd: str | None = None,
        envs: dict[str, str] | None = None,
        pid: int | None = None,
        user_agent: str = "agentrun-ci",
    ) -> AsyncTty:
        """Connect: a new shell, or with `pid` the running one (an emulator extension)."""
        connect = _connect()
        from websockets.exceptions import InvalidStatus, WebSocketException

        url = _tty.tty_url(config, sandbox_id, rows=rows, cols=cols, cwd=cwd, envs=envs, pid=pid)
        headers = _tty.tty_headers(config, url, user_agent)
        where = f"GET {url.partition('?')[0]}"
        try:
            ws = await connect(
                url,
                additional_headers=headers,
                open_timeout=config.connect_timeout,
                max_size=MAX_FRAME,
            )
        except InvalidStatus as exc:
            answer = exc.response
            response = httpx.Response(
                answer.status_code,
                headers=list(answer.headers.raw_items()),
                content=bytes(answer.body or b""),
            )
            raise _wire.error_from_response(response) from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise TransportError(
                f"could not open the terminal ({where}): {type(exc).__name__}: {exc}; check "
                "the data endpoint and the network"
            ) from None
        tty = cls(ws, None, [])
        try:
            await ws.__aenter__()  # (websockets >= 17.1 wants its connections entered)
            # The first frame says the shell's pid (inferred: `connectionEstablished`).
            first = _tty.parse_frame(await ws.recv())
            if isinstance(first, TtyStarted):
                tty._pid = first.pid
            elif first is not None and not isinstance(first, str):  # (a ping: not yet)
                tty._pending.append(first)
            if pid is not None and tty._pid != pid:
                raise AgentRunError(
                    f"the service did not re-attach to terminal {pid} (it answered with "
                    f"{'a new shell, pid ' + str(tty._pid) if tty._pid else 'no pid'}): "
                    "re-attaching by pid is a local-emulator extension AgentRun does not "
                    "document; keep the first connection open instead"
                )
            # the query's size is an emulator extension: say it with the documented frame
            await ws.send(_tty.resize_frame(rows, cols))
        except BaseException:
            await tty.close()
            raise
        return tty

    async def send(self, data: str | bytes) -> None:
        """Type `data` into the terminal (e.g. "ls\\n"; bytes that are not UTF-8 go as
        base64, which only the local emulator is known to take)."""
        await self._ws.send(_tty.input_frame(data))

    async def resize(self, rows: int, cols: int) -> None:
        """Change the terminal's size; the foreground program gets SIGWINCH."""
        if rows <= 0 or cols <= 0:
            raise ValueError(f"rows and cols must be positive (got {rows} x {cols})")
        await self._ws.send(_tty.resize_frame(rows, cols))

    async def events(self) -> AsyncIterator[TtyEvent]:
        """What the terminal says, until the shell ends (`TtyExit`, last) or the
        connection closes (then the iteration just stops)."""
        from websockets.exceptions import ConnectionClosed

        while self._pending:
            event = self._pending.pop(0)
            yield event
            if isinstance(event, TtyExit):
                return
        try:
            async for message in self._ws:
                parsed = _tty.parse_frame(message)
                if isinstance(parsed, str):  # a ping
                    await self._ws.send(_tty.pong_frame())
                elif parsed is not None:
                    yield parsed
                    if isinstance(parsed, TtyExit):
                        return
        except ConnectionClosed:
            return

    async def close(self) -> None:
        """Close the connection (on the local emulator the shell keeps running until it
        exits, is killed, or stays unattached for its idle time). Safe to call twice."""
        if not self._closed:
            self._closed = True
            await self._ws.close()

    async def __aenter__(self) -> AsyncTty:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
