"""The local emulator on a loaded machine: kernel starts wait their turn, they do not fail.

On 2 cores at load 12-17, context creations that all started kernels at once each missed
the readiness deadline (`500 could not start a python kernel`). Starts are admitted a few
at a time (`_admission.StartGate`, `EmulatorSettings.kernel_starts`), in order, from a
bounded queue (`kernel_start_queue`: past it, 503 with Retry-After), and a start's
deadline (`kernel_start_timeout`) runs only once it is admitted. A kernel that dies
still fails at once, saying why. Every timeout below is a hang guard, not a timing check.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

pytest.importorskip("jupyter_client")

from support import running_emulator, wait_until

from agentrun_ci.local import EmulatorSettings, LocalEmulator, _core, _kernels, _python_kernel
from agentrun_ci.local._admission import StartGate, StartQueueFull

#: hang guard for one HTTP answer: far above a loaded start, far below a stuck one's end
_ANSWER = 300.0


# ---------------------------------------------------------------- the gate alone


@pytest.mark.anyio
async def test_the_gate_admits_in_order_and_requests_before_background_starts() -> None:
    gate = StartGate(1, queue=8)
    order: list[str] = []
    release = asyncio.Event()

    async def start(name: str, *, background: bool = False) -> None:
        async with gate.turn(background=background):
            order.append(name)
            if name == "first":
                await release.wait()

    first = asyncio.ensure_future(start("first"))
    while not order:  # noqa: ASYNC110 -- the first start is admitted at its first await
        await asyncio.sleep(0)
    later = [
        asyncio.ensure_future(start("spare", background=True)),
        asyncio.ensure_future(start("a")),
        asyncio.ensure_future(start("b")),
    ]
    await asyncio.sleep(0)  # every one has queued
    assert gate.waiting == 2  # the two requests; the spare is not counted against the bound
    release.set()
    await asyncio.gather(first, *later)
    assert order == ["first", "a", "b", "spare"]


@pytest.mark.anyio
async def test_a_full_queue_refuses_at_once_naming_the_setting() -> None:
    gate = StartGate(1, queue=1)
    release = asyncio.Event()
    admitted = asyncio.Event()

    async def hold() -> None:
        async with gate.turn():
            admitted.set()
            await release.wait()

    holder = asyncio.ensure_future(hold())
    await admitted.wait()
    waiter = asyncio.ensure_future(_enter(gate))
    await asyncio.sleep(0)
    assert gate.waiting == 1
    with pytest.raises(StartQueueFull, match="kernel_start_queue=1"):
        await _enter(gate)
    spare = asyncio.ensure_future(_enter(gate, background=True))  # background: never refused
    release.set()
    await asyncio.gather(holder, waiter, spare)


@pytest.mark.anyio
async def test_a_cancelled_waiter_leaves_its_place_and_loses_no_slot() -> None:
    gate = StartGate(1, queue=4)
    release = asyncio.Event()
    admitted = asyncio.Event()

    async def hold() -> None:
        async with gate.turn():
            admitted.set()
            await release.wait()

    holder = asyncio.ensure_future(hold())
    await admitted.wait()
    gone = asyncio.ensure_future(_enter(gate))
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert gate.waiting == 0
    release.set()
    await holder
    await asyncio.wait_for(_enter(gate), 10)  # the slot came back (hang guard)


async def _enter(gate: StartGate, *, background: bool = False) -> None:
    async with gate.turn(background=background):
        pass


# ---------------------------------------------------------------- the emulator


@contextlib.contextmanager
def _sandboxes(
    settings: EmulatorSettings, count: int
) -> Iterator[tuple[LocalEmulator, httpx.Client, list[str]]]:
    with (
        running_emulator(settings) as (emulator, config),
        httpx.Client(base_url=str(config.data_endpoint), timeout=_ANSWER) as http,
    ):
        assert http.post("/2025-09-10/templates", json={"templateName": "t"}).is_success
        sids = [
            http.post("/sandboxes", json={"templateName": "t"}).json()["data"]["sandboxId"]
            for _ in range(count)
        ]
        yield emulator, http, sids


def _at_once(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Every call, each on its own connection and thread, all sent together."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def _create(base: str, sid: str) -> Callable[[], httpx.Response]:
    def call() -> httpx.Response:
        with httpx.Client(base_url=base, timeout=_ANSWER) as http:
            return http.post(f"/sandboxes/{sid}/contexts", json={"language": "python"})

    return call


def _runs_code(http: httpx.Client, sid: str, context_id: str) -> None:
    reply = http.post(
        f"/sandboxes/{sid}/contexts/execute",
        json={"code": "print(6 * 7)", "contextId": context_id, "timeout": 30},
    )
    assert reply.status_code == 200, reply.text
    assert [e.get("text") for e in reply.json()["results"] if e["type"] == "stdout"] == ["42\n"]


def _counting(gate: StartGate) -> list[int]:
    """Instrument `gate`: the returned list holds the most starts ever admitted at once."""
    running, peak = [0], [0]
    turn = gate.turn

    @contextlib.asynccontextmanager
    async def counted(**kw: Any) -> AsyncIterator[None]:
        async with turn(**kw):
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            try:
                yield
            finally:
                running[0] -= 1

    gate.turn = counted  # type: ignore[method-assign]
    return peak


def test_simultaneous_contexts_queue_for_one_start_slot_and_all_start() -> None:
    settings = EmulatorSettings(kernel_starts=1, spare_kernels=0)
    with _sandboxes(settings, 2) as (emulator, http, sids):
        assert emulator.core is not None
        peak = _counting(emulator.core.starts)
        base = str(http.base_url)
        replies = _at_once([_create(base, sid) for sid in sids for _ in range(3)])
        assert [r.status_code for r in replies] == [200] * 6, [r.text for r in replies]
        assert peak == [1]  # they queued: one start at a time
        for sid, reply in zip([s for s in sids for _ in range(3)], replies, strict=True):
            _runs_code(http, sid, reply.json()["id"])


@pytest.fixture
def held_starts(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Kernel starts of context creations wait, once admitted, until the event is set."""
    go = threading.Event()
    start = _core.start_python

    async def held(*args: Any, **kw: Any) -> _kernels.PythonKernel:
        await asyncio.to_thread(go.wait)
        return await start(*args, **kw)

    monkeypatch.setattr(_core, "start_python", held)
    try:
        yield go
    finally:
        go.set()


def test_past_the_queue_bound_a_creation_gets_503_naming_the_setting(
    held_starts: threading.Event,
) -> None:
    settings = EmulatorSettings(kernel_starts=1, kernel_start_queue=1, spare_kernels=0)
    with _sandboxes(settings, 1) as (emulator, http, [sid]):
        core = emulator.core
        assert core is not None
        base = str(http.base_url)
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(_create(base, sid))  # admitted, held
            wait_until(lambda: core.starts.running == 1, "a start admitted")
            queued = pool.submit(_create(base, sid))
            wait_until(lambda: core.starts.waiting == 1, "a creation waiting for its turn")
            refused = http.post(f"/sandboxes/{sid}/contexts", json={"language": "python"})
            assert refused.status_code == 503, refused.text
            assert refused.json()["code"] == "ERR_SERVICE_UNAVAILABLE"
            assert "kernel_start_queue=1" in refused.json()["message"]
            assert int(refused.headers["retry-after"]) > 0
            assert refused.headers.get("connection") != "close"
            # the same connection serves the next request
            assert http.get(f"/sandboxes/{sid}/contexts").json() == []
            held_starts.set()
            assert running.result(_ANSWER).status_code == 200
            assert queued.result(_ANSWER).status_code == 200
        assert len(http.get(f"/sandboxes/{sid}/contexts").json()) == 2


def test_a_kernel_that_dies_at_once_fails_at_once_with_its_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the kernel's entry point, replaced by one that cannot start
    dying = "import sys; sys.stderr.write('boom: this kernel cannot start\\n'); sys.exit(3)"
    monkeypatch.setattr(_python_kernel, "_LAUNCH", dying)
    # a deadline this test would never wait out: the death must end the wait
    settings = EmulatorSettings(spare_kernels=0, kernel_start_timeout=3600)
    with _sandboxes(settings, 1) as (_, http, [sid]):
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(_create(str(http.base_url), sid))
            reply = answer.result(timeout=_ANSWER)  # hang guard: far below the deadline
        assert reply.status_code == 500, reply.text
        message = reply.json()["message"]
        assert "could not start a python kernel" in message
        assert "died" in message
        assert "exit status 3" in message
        assert "boom: this kernel cannot start" in message


@contextlib.contextmanager
def _busy_loops(count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    loops: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            loops.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        yield loops
    finally:
        for proc in loops:
            proc.kill()
        for proc in loops:
            proc.wait()


def test_contexts_created_at_once_under_cpu_load_all_start() -> None:
    with _busy_loops(4), _sandboxes(EmulatorSettings(), 2) as (_, http, sids):
        base = str(http.base_url)
        replies = _at_once([_create(base, sid) for sid in sids for _ in range(2)])
        assert [r.status_code for r in replies] == [200] * 4, [r.text for r in replies]
        for sid, reply in zip([s for s in sids for _ in range(2)], replies, strict=True):
            _runs_code(http, sid, reply.json()["id"])
