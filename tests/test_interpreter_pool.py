"""The pool strategy against the local emulator over real HTTP: isolation under concurrency,
replacement of dead sessions, FIFO waiting with a deadline, trimming."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from test_interpreter import owned

from agentrun_ci import AsyncCodeInterpreter, AsyncDataPlane, Config, WaitTimeout

pytestmark = pytest.mark.anyio


def _owner() -> str:
    return "p" + uuid.uuid4().hex[:7]


async def _eventually(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await asyncio.to_thread(check):  # type: ignore[arg-type]
            return
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_32_concurrent_callers_on_a_pool_of_4_see_only_their_own_variables(
    emulator: Config,
) -> None:
    owner = _owner()
    async with AsyncCodeInterpreter(
        emulator, owner=owner, strategy="pool", pool_size=4, lease_timeout=120
    ) as ci:
        await ci.start_session()

        async def caller(i: int) -> tuple[str, str, str | None]:
            async with ci.lease(f"caller-{i}") as lease:
                first = await lease.execute_code(f"print('mine' in globals()); mine = {i}")
                second = await lease.execute_code("mine")
                assert first.ok
                assert second.ok
                return first.stdout, second.text or "", lease.session_id

        results = await asyncio.gather(*(caller(i) for i in range(32)))
        assert [r[0] for r in results] == ["False\n"] * 32
        assert [r[1] for r in results] == [str(i) for i in range(32)]
        assert len({r[2] for r in results}) <= 4
        _, sandboxes = await asyncio.to_thread(owned, emulator, owner)
        assert len(sandboxes) <= 4
    assert await asyncio.to_thread(owned, emulator, owner) == ([], [])


async def test_session_killed_behind_the_pools_back_is_replaced_with_state_reset(
    emulator: Config,
) -> None:
    owner = _owner()
    async with AsyncCodeInterpreter(emulator, owner=owner, strategy="pool", pool_size=(1, 2)) as ci:
        lease = await ci.acquire("victim")
        await lease.execute_code("x = 1")
        dead = lease.session_id
        assert dead is not None
        async with AsyncDataPlane(ci.config) as dp:
            await dp.delete_sandbox(dead)
        after = await lease.execute_code("print('x' in globals())")
        assert after.state_reset is True
        assert after.stdout == "False\n"
        assert lease.session_id not in (None, dead)
        assert (await lease.execute_code("1")).state_reset is False
        await lease.release()
    assert await asyncio.to_thread(owned, emulator, owner) == ([], [])


async def test_a_parked_session_that_died_is_replaced_on_lease(emulator: Config) -> None:
    async with AsyncCodeInterpreter(
        emulator, owner=_owner(), strategy="pool", pool_size=(1, 1)
    ) as ci:
        async with ci.lease("one") as lease:
            await lease.execute_code("1")
            parked = lease.session_id
        assert parked is not None
        async with AsyncDataPlane(ci.config) as dp:
            await dp.delete_sandbox(parked)
        async with ci.lease("two") as lease:
            execution = await lease.execute_code("2")
            assert execution.text == "2"
            assert execution.state_reset is False  # a new lease had no state to lose
            assert lease.session_id != parked


async def test_waiters_are_served_fifo_and_time_out_with_advice(emulator: Config) -> None:
    async with AsyncCodeInterpreter(
        emulator, owner=_owner(), strategy="pool", pool_size=(1, 1), lease_timeout=0.3
    ) as ci:
        holder = await ci.acquire("holder")
        await holder.execute_code("1")
        late = await ci.acquire("late")
        with pytest.raises(WaitTimeout, match="lease_timeout"):
            await late.execute_code("1")
        await late.release()

    async with AsyncCodeInterpreter(
        emulator, owner=_owner(), strategy="pool", pool_size=(1, 1), lease_timeout=30
    ) as ci:
        holder = await ci.acquire("holder")
        await holder.execute_code("1")
        order: list[str] = []

        async def wait_then_run(name: str) -> None:
            lease = await ci.acquire(name)
            await lease.execute_code("1")
            order.append(name)
            await lease.release()

        tasks = []
        for name in ("first", "second", "third"):
            tasks.append(asyncio.ensure_future(wait_then_run(name)))
            await asyncio.sleep(0.05)  # queue them in this order
        await holder.release()
        await asyncio.gather(*tasks)
        assert order == ["first", "second", "third"]


async def test_idle_sessions_above_the_minimum_are_trimmed(emulator: Config) -> None:
    owner = _owner()
    async with AsyncCodeInterpreter(
        emulator, owner=owner, strategy="pool", pool_size=(0, 2), pool_idle_timeout=0.2
    ) as ci:
        a, b = await ci.acquire("a"), await ci.acquire("b")
        await asyncio.gather(a.execute_code("1"), b.execute_code("1"))
        assert len((await asyncio.to_thread(owned, emulator, owner))[1]) == 2
        await a.release()
        await b.release()
        await _eventually(lambda: owned(emulator, owner)[1] == [])
