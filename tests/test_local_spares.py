"""Spare kernels sized to demand: the policy (`SpareDemand`, `spare_cap`) with a clock the
tests move, and one real emulator whose spares rise with a burst of sandbox creations and
fall to none once creations stop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentrun_ci.local import EmulatorSettings
from agentrun_ci.local._kernel_base import KernelError
from agentrun_ci.local._spares import (
    SPARE_KERNEL_MB,
    SPARE_MEMORY_SHARE,
    SPARES_PER_START_SLOT,
    SpareDemand,
    spare_cap,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_spares_are_kept_at_the_base_from_the_start_until_idle() -> None:
    clock = Clock()
    demand = SpareDemand(1, idle_timeout=300, clock=clock)
    assert demand.target(8) == 1
    clock.now += 299
    assert demand.target(8) == 1
    clock.now += 1
    assert demand.target(8) == 0


def test_a_burst_raises_the_target_to_the_creations_of_the_window() -> None:
    clock = Clock()
    demand = SpareDemand(1, idle_timeout=300, window=60, clock=clock)
    for _ in range(5):
        demand.record()
        clock.now += 1
    assert demand.target(8) == 5


def test_the_target_never_exceeds_what_the_machine_holds() -> None:
    clock = Clock()
    demand = SpareDemand(2, idle_timeout=300, clock=clock)
    for _ in range(20):
        demand.record()
    assert demand.target(3) == 3
    assert demand.target(0) == 0  # a machine that holds none: not even the base


def test_the_target_falls_back_to_the_base_when_the_burst_leaves_the_window() -> None:
    clock = Clock()
    demand = SpareDemand(1, idle_timeout=300, window=60, clock=clock)
    for _ in range(6):
        demand.record()
    clock.now += 61
    assert demand.target(8) == 1


def test_idle_brings_the_target_to_zero_and_a_creation_brings_it_back() -> None:
    clock = Clock()
    demand = SpareDemand(1, idle_timeout=30, window=60, clock=clock)
    for _ in range(4):
        demand.record()
    clock.now += 30
    assert demand.target(8) == 0  # the burst is still in the window: idle wins
    demand.record()
    assert demand.target(8) == 5


def test_no_spares_when_the_base_is_zero_whatever_the_demand() -> None:
    clock = Clock()
    demand = SpareDemand(0, idle_timeout=300, clock=clock)
    for _ in range(10):
        demand.record()
    assert demand.target(8) == 0


def test_the_cap_follows_start_slots_the_setting_and_available_memory(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  99999999 kB\nMemAvailable:  99999999 kB\n")
    settings = EmulatorSettings(kernel_starts=2)
    assert spare_cap(settings, str(meminfo)) == 2 * SPARES_PER_START_SLOT
    assert spare_cap(EmulatorSettings(kernel_starts=2, max_spare_kernels=3), str(meminfo)) == 3
    available_mb = 1000
    meminfo.write_text(f"MemAvailable:  {available_mb * 1024} kB\n")
    expected = int(available_mb * SPARE_MEMORY_SHARE // SPARE_KERNEL_MB)
    assert 0 < expected < 2 * SPARES_PER_START_SLOT  # the memory bound is the one tested
    assert spare_cap(settings, str(meminfo)) == expected
    # no /proc/meminfo (not Linux): the other bounds only
    assert spare_cap(settings, str(tmp_path / "absent")) == 2 * SPARES_PER_START_SLOT


@pytest.mark.parametrize(
    ("field", "value"),
    [("spare_kernels", -1), ("max_spare_kernels", -1), ("spare_idle_timeout", 0)],
)
def test_bad_spare_settings_are_refused_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        EmulatorSettings(**{field: value})  # type: ignore[arg-type]


def _until(check: object, what: str, timeout: float = 300.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def test_a_burst_is_served_and_raises_the_spares_then_idle_spares_go_to_zero() -> None:
    pytest.importorskip("jupyter_client")
    from support import alive, live_mentioning, remaining

    from agentrun_ci.local import LocalEmulator

    burst = 3
    settings = EmulatorSettings(
        spare_kernels=1, max_spare_kernels=burst, reaper_interval=0.05, no_network=True
    )
    emulator = LocalEmulator(settings)
    with emulator as config, httpx.Client(base_url=str(config.data_endpoint), timeout=300) as http:
        core = emulator.core
        assert core is not None
        pool = core.pool
        base = str(core.runtime.parent)
        http.post("/2025-09-10/templates", json={"templateName": "t"})
        made = []
        for i in range(burst):
            sid = http.post("/sandboxes", json={"templateName": "t"}).json()["data"]["sandboxId"]
            made.append(sid)
            r = http.post(f"/sandboxes/{sid}/contexts/execute", json={"code": f"print({i})"})
            assert r.status_code == 200, r.text
            out = [e["text"] for e in r.json()["results"] if e["type"] == "stdout"]
            assert out == [f"{i}\n"]
        expected = min(burst, spare_cap(settings))
        assert expected > settings.spare_kernels, "this machine holds too few spares to test"
        assert pool.target == expected
        _until(lambda: pool.ready == expected, f"{expected} spares ready")
        kernels = [slot.kernel.pgid for slot in pool.slots() if slot.kernel is not None]
        assert len(kernels) == expected
        assert all(pid is not None and alive(pid) for pid in kernels)
        for sid in made:
            http.delete(f"/sandboxes/{sid}")
        # Time passes for the policy only: as if spare_idle_timeout went by without a creation
        real = pool.demand.clock
        pool.demand.clock = lambda: real() + settings.spare_idle_timeout
        _until(lambda: pool.ready == 0 and pool.starting == 0, "the idle spares to go")
        assert remaining(lambda: [pid for pid in kernels if pid is not None and alive(pid)]) == []
        # the next creation brings spares back
        pool.demand.clock = real
        http.post("/sandboxes", json={"templateName": "t"})
        assert pool.target >= settings.spare_kernels
    assert remaining(lambda: live_mentioning(base)) == []


def test_a_sandbox_making_contexts_in_a_burst_keeps_spares_then_none_when_idle() -> None:
    pytest.importorskip("jupyter_client")
    from support import alive, remaining

    from agentrun_ci.local import LocalEmulator

    contexts = 3
    settings = EmulatorSettings(
        spare_kernels=1, max_spare_kernels=contexts + 1, reaper_interval=0.05, no_network=True
    )
    emulator = LocalEmulator(settings)
    with emulator as config, httpx.Client(base_url=str(config.data_endpoint), timeout=300) as http:
        core = emulator.core
        assert core is not None
        http.post("/2025-09-10/templates", json={"templateName": "t"})
        sid = http.post("/sandboxes", json={"templateName": "t"}).json()["data"]["sandboxId"]
        for i in range(contexts):
            ctx = http.post(f"/sandboxes/{sid}/contexts", json={"language": "python"})
            assert ctx.status_code == 200, ctx.text
            body = {"code": f"print({i})", "contextId": ctx.json()["id"]}
            r = http.post(f"/sandboxes/{sid}/contexts/execute", json=body)
            assert [e["text"] for e in r.json()["results"] if e["type"] == "stdout"] == [f"{i}\n"]
        sandbox = core.sandboxes[sid]
        assert sandbox.demand is not None
        # the slots' pool keeps its one spare (one sandbox made); the sandbox gets the rest
        expected = min(contexts, spare_cap(settings) - settings.spare_kernels)
        assert expected > 1, "this machine holds too few spares to test"
        _until(lambda: len(sandbox.spares) == expected, f"{expected} spares in the sandbox")
        kernels = [k.pgid for k in sandbox.spares]
        assert all(pid is not None and alive(pid) for pid in kernels)
        real = sandbox.demand.clock
        sandbox.demand.clock = lambda: real() + settings.spare_idle_timeout
        _until(lambda: sandbox.spares == [] and sandbox.refilling == 0, "the idle spares to go")
        assert remaining(lambda: [pid for pid in kernels if pid is not None and alive(pid)]) == []
        # the sandbox still works: its next context is a cold start
        r = http.post(f"/sandboxes/{sid}/contexts", json={"language": "python"})
        assert r.status_code == 200, r.text


class _HeldStarts:
    """The pool's kernel starts held until `release()` (then real), and every cold start
    of a request counted: what a sandbox created while the spare starts does."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, fail: bool = False) -> None:
        import agentrun_ci.local._core as core_module
        import agentrun_ci.local._spares as spares_module

        self.held = threading.Event()
        self.pool_starts = 0
        self.cold_starts = 0
        pool_start, cold_start = spares_module.start_python, core_module.start_python  # type: ignore[attr-defined]

        async def held(launch: Any, cwd: str | None = None) -> Any:
            self.pool_starts += 1
            await asyncio.to_thread(self.held.wait, 300)
            if fail:
                raise KernelError("a spare that could not start (injected)")
            return await pool_start(launch, cwd)

        async def counted(launch: Any, cwd: str | None = None) -> Any:
            self.cold_starts += 1
            return await cold_start(launch, cwd)

        monkeypatch.setattr(spares_module, "start_python", held)
        monkeypatch.setattr(core_module, "start_python", counted)

    def release(self) -> None:
        self.held.set()


def _new_sandbox(http: httpx.Client) -> str:
    http.post("/2025-09-10/templates", json={"templateName": "t"})
    r = http.post("/sandboxes", json={"templateName": "t"})
    assert r.status_code == 200, r.text
    return str(r.json()["data"]["sandboxId"])


def _stdout(http: httpx.Client, sid: str, code: str) -> list[str]:
    r = http.post(f"/sandboxes/{sid}/contexts/execute", json={"code": code})
    assert r.status_code == 200, r.text
    return [e["text"] for e in r.json()["results"] if e["type"] == "stdout"]


@contextlib.contextmanager
def _held_emulator(
    monkeypatch: pytest.MonkeyPatch, *, fail: bool = False
) -> Iterator[tuple[_HeldStarts, Any, httpx.Client]]:
    """An emulator whose spare kernel start is held (`_HeldStarts`), once that start has
    begun: (the starts, its core, a client). Everything it started is gone afterwards."""
    pytest.importorskip("jupyter_client")
    from support import live_mentioning, remaining

    from agentrun_ci.local import LocalEmulator

    starts = _HeldStarts(monkeypatch, fail=fail)
    emulator = LocalEmulator(EmulatorSettings(spare_kernels=1, no_network=True))
    try:
        with (
            emulator as config,
            httpx.Client(base_url=str(config.data_endpoint), timeout=300) as http,
        ):
            core = emulator.core
            assert core is not None
            base = str(core.runtime.parent)
            _until(lambda: starts.pool_starts == 1, "the spare's kernel start")
            yield starts, core, http
    finally:
        starts.release()
    assert remaining(lambda: live_mentioning(base)) == []


def test_a_sandbox_created_while_the_spare_starts_takes_that_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new emulator's first sandbox comes while its spare kernel is still starting: the
    sandbox takes that start instead of cold-starting a second kernel beside it."""
    from support import live_mentioning, remaining

    with _held_emulator(monkeypatch) as (starts, core, http):
        sid = _new_sandbox(http)
        sandbox = core.sandboxes[sid]
        assert sandbox.pending is not None  # the start in flight is the sandbox's now
        assert core.pool.ready == 0
        starts.release()
        assert _stdout(http, sid, "import os; print(os.getcwd())") == ["/home/user\n"]
        assert starts.cold_starts == 0
        assert sandbox.pending is None
        assert http.delete(f"/sandboxes/{sid}").status_code == 200
        # its kernel and its directory (still the spare's name) go with it
        assert remaining(lambda: live_mentioning(str(sandbox.base))) == []
        assert sandbox.base is not None
        assert not sandbox.base.exists()


def test_a_sandbox_deleted_while_its_kernel_starts_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with _held_emulator(monkeypatch) as (_, core, http):
        sid = _new_sandbox(http)
        sandbox = core.sandboxes[sid]
        assert sandbox.pending is not None
        assert http.delete(f"/sandboxes/{sid}").status_code == 200
        assert sandbox.status == "TERMINATED"
        assert sandbox.pending is None
        assert sandbox.base is not None
        assert not sandbox.base.exists()
        # the emulator goes on: the next sandbox starts its kernel (the pool's
        # replacement is held too, so a cold start serves it)
        other = _new_sandbox(http)
        assert _stdout(http, other, "print(2)") == ["2\n"]


def test_a_spare_that_fails_to_start_leaves_its_sandbox_a_cold_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with _held_emulator(monkeypatch, fail=True) as (starts, core, http):
        sid = _new_sandbox(http)
        assert core.sandboxes[sid].pending is not None
        starts.release()
        with caplog.at_level("WARNING", logger="agentrun_ci.local"):
            assert _stdout(http, sid, "print(3)") == ["3\n"]
        assert starts.cold_starts == 1
        assert "its spare kernel did not start" in caplog.text
        assert "injected" in caplog.text
