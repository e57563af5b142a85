"""Pausing and resuming a sandbox, waited on until it says so: the one mechanism behind
`CodeInterpreter.pause_session()` / `resume_session()` and the E2B shim's `pause()` /
`connect()`.

AgentRun documents PauseSandbox / ResumeSandbox and the states PAUSED and READY; whether
it passes through PAUSING / RESUMING on the way is not documented (inferred: it may), so
those are tolerated and polled through. Either call is a no-op on a sandbox already in
the state asked for (or on its way there).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ._errors import AgentRunError, ConflictError, NotFoundError, WaitTimeout

if TYPE_CHECKING:
    from ._async.control_plane import AsyncControlPlane
    from ._async.data_plane import AsyncDataPlane
    from ._models import Sandbox

__all__ = ["PAUSING", "RESUMING", "SandboxStateError", "pause", "resume"]

#: states on the way to (or at) PAUSED, and to (or at) READY
PAUSING = frozenset({"PAUSED", "PAUSING"})
RESUMING = frozenset({"READY", "RESUMING"})


class SandboxStateError(AgentRunError):
    """The sandbox is in a state from which it cannot be paused or resumed (stopped,
    failed, terminated)."""

    def __init__(self, sandbox_id: str, status: str | None, wanted: str) -> None:
        verb = "paused" if wanted == "PAUSED" else "resumed"
        super().__init__(f"sandbox {sandbox_id} is {status}, not {wanted}: it cannot be {verb}")
        self.sandbox_id = sandbox_id
        self.status = status


def _state(sandbox: Sandbox) -> str:
    return (sandbox.status or "").upper()


async def _get(data: AsyncDataPlane, sandbox_id: str) -> Sandbox:
    sandbox = await data.get_sandbox(sandbox_id)
    if _state(sandbox) == "TERMINATED":  # the emulator keeps deleted ones listed a while
        raise NotFoundError(
            f"sandbox {sandbox_id} is TERMINATED", status_code=404, code="ERR_NOT_FOUND"
        )
    return sandbox


async def pause(
    control: AsyncControlPlane, data: AsyncDataPlane, sandbox_id: str, *, timeout: float
) -> tuple[Sandbox, bool]:
    """Pause the sandbox and wait until it is PAUSED; (the sandbox, whether this call
    paused it). NotFoundError when it is gone; SandboxStateError when it cannot be paused;
    WaitTimeout when it is still on its way after `timeout` seconds."""
    return await _move(control.pause_sandbox, data, sandbox_id, PAUSING, "READY", timeout)


async def resume(
    control: AsyncControlPlane, data: AsyncDataPlane, sandbox_id: str, *, timeout: float
) -> tuple[Sandbox, bool]:
    """Resume the sandbox and wait until it is READY; (the sandbox, whether this call
    resumed it). Errors as for `pause`."""
    return await _move(control.resume_sandbox, data, sandbox_id, RESUMING, "PAUSED", timeout)


async def _move(
    call: Callable[[str], Awaitable[Sandbox]],
    data: AsyncDataPlane,
    sandbox_id: str,
    toward: frozenset[str],
    source: str,
    timeout: float,
) -> tuple[Sandbox, bool]:
    wanted = "PAUSED" if toward is PAUSING else "READY"
    before = await _get(data, sandbox_id)
    if _state(before) in toward:  # there, or on its way
        return await _settle(data, sandbox_id, before, toward, wanted, timeout), False
    try:
        after = await call(sandbox_id)
    except ConflictError:  # moved meanwhile by another caller?
        after = await _get(data, sandbox_id)
        if _state(after) not in toward:
            raise
    return await _settle(data, sandbox_id, after, toward | {source}, wanted, timeout), True


async def _settle(
    data: AsyncDataPlane,
    sandbox_id: str,
    sandbox: Sandbox,
    passing: frozenset[str],
    wanted: str,
    timeout: float,
) -> Sandbox:
    """Poll until the sandbox is `wanted`, through the states in `passing`."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    while _state(sandbox) != wanted:
        if _state(sandbox) not in passing:
            raise SandboxStateError(sandbox_id, sandbox.status, wanted)
        if time.monotonic() + delay > deadline:
            raise WaitTimeout(
                f"sandbox {sandbox_id} was still {sandbox.status} after {timeout:g} s "
                f"on its way to {wanted}; wait longer (timeout=)"
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)
        sandbox = await _get(data, sandbox_id)
    return sandbox
