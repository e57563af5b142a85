"""Waiting for a new kernel (`_kernels.wait_until_ready`) against a scripted client: it
returns on a kernel_info reply plus that request's idle status, asks again when iopub
missed it (a SUB socket that joined late), skips other requests' messages, and fails
when the kernel dies or never answers. Real kernels: every emulator test starts them."""

from __future__ import annotations

import asyncio
import itertools
import queue
from typing import Any

import pytest

pytest.importorskip("jupyter_client")

from agentrun_ci.local._kernels import wait_until_ready

pytestmark = pytest.mark.anyio


class ScriptedKernel:
    """A client and manager in one: `kernel_info()` queues what `answer(n)` says the n-th
    request gets: a shell reply, iopub busy/idle (unless `deaf_iopub` covers n), and
    stale messages of another request in front of each."""

    def __init__(self, *, deaf_iopub: int = 0, silent: bool = False, alive: bool = True):
        self.shell: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.iopub: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.requests: list[str] = []
        self.adapted: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self.deaf_iopub, self.silent, self.alive = deaf_iopub, silent, alive

    def kernel_info(self) -> str:
        msg_id = f"req-{next(self._ids)}"
        self.requests.append(msg_id)
        if self.silent:
            return msg_id
        stale = _msg("old", "status", execution_state="idle")
        self.shell.put_nowait(_msg("old", "kernel_info_reply"))
        self.shell.put_nowait(_msg(msg_id, "kernel_info_reply", protocol_version="5.3"))
        if len(self.requests) > self.deaf_iopub:
            self.iopub.put_nowait(stale)
            self.iopub.put_nowait(_msg(msg_id, "status", execution_state="busy"))
            self.iopub.put_nowait(_msg(msg_id, "status", execution_state="idle"))
        return msg_id

    async def get_shell_msg(self, timeout: float) -> dict[str, Any]:
        return await _get(self.shell, timeout)

    async def get_iopub_msg(self, timeout: float) -> dict[str, Any]:
        return await _get(self.iopub, timeout)

    def _handle_kernel_info_reply(self, msg: dict[str, Any]) -> None:
        self.adapted.append(msg)

    async def is_alive(self) -> bool:
        return self.alive


def _msg(parent: str, kind: str, **content: Any) -> dict[str, Any]:
    return {"parent_header": {"msg_id": parent}, "msg_type": kind, "content": content}


async def _get(q: asyncio.Queue[dict[str, Any]], timeout: float) -> dict[str, Any]:
    try:
        return await asyncio.wait_for(q.get(), timeout)
    except asyncio.TimeoutError:
        raise queue.Empty from None


async def test_ready_on_the_reply_and_its_idle_status_skipping_other_messages() -> None:
    kernel = ScriptedKernel()
    await wait_until_ready(kernel, kernel, timeout=5)
    assert kernel.requests == ["req-1"]
    assert [m["parent_header"]["msg_id"] for m in kernel.adapted] == ["req-1"]
    assert kernel.iopub.empty()  # read up to this request's idle, nothing more


async def test_asks_again_when_iopub_missed_the_answer() -> None:
    kernel = ScriptedKernel(deaf_iopub=1)  # the first request's status went unheard
    await wait_until_ready(kernel, kernel, timeout=5)
    assert kernel.requests == ["req-1", "req-2"]


async def test_a_dead_kernel_is_an_error() -> None:
    kernel = ScriptedKernel(silent=True, alive=False)
    with pytest.raises(RuntimeError, match="died"):
        await wait_until_ready(kernel, kernel, timeout=0.2)


async def test_a_kernel_that_never_answers_times_out() -> None:
    kernel = ScriptedKernel(silent=True)
    with pytest.raises(RuntimeError, match=r"did not answer in 0\.1 s"):
        await wait_until_ready(kernel, kernel, timeout=0.1)
