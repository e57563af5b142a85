"""The javascript kernel: a persistent node process running our small vm-based REPL
(`_node_repl.js`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._jail import JAIL_TOOLS
from ._kernel_base import (
    _INTERRUPT_GRACE,
    Event,
    KernelError,
    _signal_group,
    _StreamCap,
    _timeout_event,
)
from ._launch import Launch
from ._limits import kill_group
from ._threads import blocking

__all__ = ["NodeKernel"]

_NODE_REPL = Path(__file__).with_name("_node_repl.js")
_MARK = b"\x00AGENTRUN\x00"


class NodeKernel:
    """A persistent node process running our small vm-based REPL (`_node_repl.js`)."""

    language = "javascript"

    def __init__(self, launch: Launch, home: str, env: dict[str, str]) -> None:
        self._launch = launch
        self._settings = launch.settings
        self._home = home
        self._env = env
        self._proc: asyncio.subprocess.Process | None = None
        self._ids = itertools.count(1)
        self.restarts = 0

    @property
    def pgid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @staticmethod
    def available() -> bool:
        return shutil.which("node") is not None

    @classmethod
    async def start(cls, launch: Launch, home: str, env: dict[str, str]) -> NodeKernel:
        kernel = cls(launch, home, env)
        await kernel._spawn()
        return kernel

    async def _spawn(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise KernelError("javascript needs `node` on PATH; install Node.js")
        # V8 reserves far more address space than it uses, so RLIMIT_AS would stop node
        # from starting: javascript kernels get a V8 heap cap instead.
        heap = max(64, (self._settings.memory_mb or 4096) // 2)
        launch = self._launch
        await launch.prepare()
        repl = f"{JAIL_TOOLS}/node_repl.js" if launch.jailed else str(_NODE_REPL)
        self._proc = await asyncio.create_subprocess_exec(
            *launch.argv([node, f"--max-old-space-size={heap}", repl], cwd=self._home),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=launch.host_cwd(self._home),
            env=launch.env(self._home, self._env),
            start_new_session=True,
            limit=64 * 1024 * 1024,
            preexec_fn=self._launch.preexec(self._settings.kernel_cpu_seconds, memory=False),
        )

    async def execute(
        self, code: str, timeout: float, sent: Callable[[], None] | None = None
    ) -> tuple[list[Event], str, int | None]:
        proc = self._proc
        if proc is None or proc.returncode is not None or proc.stdin is None or proc.stdout is None:
            raise KernelError("the javascript kernel has died (state lost)")
        req_id = next(self._ids)
        line = json.dumps({"id": req_id, "code": code, "timeoutMs": int(timeout * 1000)})
        proc.stdin.write(line.encode() + b"\n")
        await proc.stdin.drain()
        if sent is not None:
            sent()
        extra: list[Event] = []
        stdout = proc.stdout
        streams = _StreamCap()

        async def read_reply() -> dict[str, Any]:
            while True:
                raw = await stdout.readline()
                if not raw:
                    raise KernelError("the javascript kernel died during execution (state lost)")
                if raw.startswith(_MARK):
                    reply: dict[str, Any] = json.loads(raw[len(_MARK) :])
                    if reply.get("id") == req_id:
                        return reply
                else:  # process.stdout.write from user code
                    streams.add(extra, "stdout", raw.decode("utf-8", "replace"))

        try:
            reply = await asyncio.wait_for(read_reply(), timeout + _INTERRUPT_GRACE)
        except asyncio.TimeoutError:
            # Stuck outside vm's own timeout (e.g. a busy timer callback): restart.
            await self.shutdown()
            await self._spawn()
            self.restarts += 1
            extra.append(_timeout_event(timeout))
            extra.append({"type": "stderr", "text": "kernel restarted: state lost\n"})
            return extra, "timeout", None
        count = reply.get("executionCount")
        for event in reply["events"]:
            if event.get("type") in ("stdout", "stderr"):
                streams.add(extra, str(event["type"]), str(event.get("text") or ""))
            else:
                extra.append(event)
        return extra + streams.notes(), str(reply["status"]), count

    async def pause(self, stop: bool) -> None:
        _signal_group(self.pgid, stop)

    async def shutdown(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        await blocking(kill_group, proc.pid)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 5)
