"""What a live python kernel holds in the emulator's process, and that its shutdown frees
it all even when the caller that asked for it is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agentrun_ci.local import EmulatorSettings, LocalEmulator

pytest.importorskip("jupyter_client")


def _zmq_io_threads() -> int:
    """The process's threads that libzmq starts per context (named "ZMQbg/IO/<n>")."""
    count = 0
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{task}/comm") as fh:
            count += fh.read().startswith("ZMQbg/IO")
    return count


@pytest.fixture
def emulator() -> Iterator[tuple[LocalEmulator, httpx.Client]]:
    emulator = LocalEmulator(EmulatorSettings(spare_kernels=0, no_network=True))
    with emulator as config, httpx.Client(base_url=str(config.data_endpoint), timeout=300) as http:
        http.post("/2025-09-10/templates", json={"templateName": "t"}).raise_for_status()
        yield emulator, http


def _kernel_of_new_sandbox(emulator: LocalEmulator, http: httpx.Client) -> Any:
    r = http.post("/sandboxes", json={"templateName": "t"})
    r.raise_for_status()
    sid = r.json()["data"]["sandboxId"]
    r = http.post(f"/sandboxes/{sid}/contexts/execute", json={"code": "print(1)"})
    assert r.status_code == 200, r.text
    assert emulator.core is not None
    (context,) = emulator.core.sandboxes[sid].contexts.values()
    return context.kernel


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_kernels_share_one_zmq_context_and_start_no_heartbeat(
    emulator: tuple[LocalEmulator, httpx.Client],
) -> None:
    emu, http = emulator
    first = _kernel_of_new_sandbox(emu, http)  # the process's context exists from here on
    threads = _zmq_io_threads()
    kernels = [first] + [_kernel_of_new_sandbox(emu, http) for _ in range(3)]
    # each kernel's own context would have added an I/O thread, its client's another
    assert _zmq_io_threads() == threads
    contexts = {id(k._km.context) for k in kernels} | {id(k._kc.context) for k in kernels}
    assert len(contexts) == 1
    assert not any(k._kc.hb_channel.is_alive() for k in kernels)


def test_a_shutdown_whose_caller_is_cancelled_still_frees_everything(
    emulator: tuple[LocalEmulator, httpx.Client],
) -> None:
    from support import alive

    emu, http = emulator
    kernel = _kernel_of_new_sandbox(emu, http)
    pgid, stderr = kernel.pgid, kernel._stderr
    assert pgid is not None
    assert alive(pgid)
    assert emu.core is not None
    assert emu.core._reaper is not None
    loop = emu.core._reaper.get_loop()

    async def cut_short() -> None:
        first = asyncio.ensure_future(kernel.shutdown())
        await asyncio.sleep(0)  # it has begun
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        await kernel.shutdown()  # another caller: returns once the shutdown is done

    asyncio.run_coroutine_threadsafe(cut_short(), loop).result(timeout=120)
    assert stderr.closed
    assert not alive(pgid)
