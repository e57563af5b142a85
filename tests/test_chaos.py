"""Chaos: mixed operations through the SDK under ~20% injected faults (issue #7).

Each operation ends in a correct result or a typed AgentRunError; no execute or
command runs twice (every one appends a unique token to a ledger; we count them
with faults off). The full 1,000-operation run is marked slow; a ~150-operation
share runs by default.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

import httpx
import pytest
from chaos_workload import (
    DataPlaneWorkload,
    Stats,
    check_stats,
    ensure_template,
    facade_pool_workload,
    facade_sync_workload,
)

from agentrun_ci import (
    AsyncCodeInterpreter,
    Config,
    DataPlane,
    NotFoundError,
    ServerError,
    SessionLostError,
    TransportError,
)

pytest.importorskip("jupyter_client")

from agentrun_ci.local import TRANSIENT_KINDS, EmulatorSettings, FaultPlan, LocalEmulator

RATE = 0.2


@pytest.fixture(scope="module")
def chaos() -> Iterator[tuple[Config, FaultPlan, str]]:
    """An emulator of our own with a fault plan (off until a test sets rates)."""
    plan = FaultPlan(seed=7, retry_after=0.05, slow_seconds=0.05)
    with LocalEmulator(EmulatorSettings(faults=plan, spare_kernels=2)) as config:
        yield config, plan, config.data_url


def _on(plan: FaultPlan, rates: dict[str, float] | None = None) -> None:
    share = RATE / len(TRANSIENT_KINDS)
    plan.update(
        {"rates": rates or dict.fromkeys(TRANSIENT_KINDS, share), "seed": 7, "resetCounts": True}
    )


def _off(plan: FaultPlan) -> None:
    plan.update({"rates": {}})


def _dataplane_run(config: Config, plan: FaultPlan, n: int, seed: int) -> Stats:
    template = f"chaos-{uuid.uuid4().hex[:8]}"
    ensure_template(config, template)
    _on(plan)
    with DataPlane(config) as dp:
        work = DataPlaneWorkload(dp, template, random.Random(seed))
        try:
            work.run(n)
        finally:
            _off(plan)
            stats = work.finish()
    return stats


def test_dataplane_mixed_operations_under_transient_faults(
    chaos: tuple[Config, FaultPlan, str],
) -> None:
    config, plan, _ = chaos
    stats = _dataplane_run(config, plan, 100, seed=1)
    assert stats.total == 100
    assert sum(plan.counts.values()) >= 5  # faults were really injected
    assert sum(stats.errors.values()) > 0
    check_stats(stats)
    assert stats.leaked_contexts <= plan.counts["reset_after"]


def test_facade_sync_under_transient_faults(chaos: tuple[Config, FaultPlan, str]) -> None:
    config, plan, _ = chaos
    _on(plan)
    try:
        stats = facade_sync_workload(
            config, "c" + uuid.uuid4().hex[:7], 30, random.Random(2), lambda: _off(plan)
        )
    finally:
        _off(plan)
    assert stats.total == 30
    check_stats(stats, allow_unverifiable=True)


@pytest.mark.anyio
async def test_facade_pool_under_transient_faults(chaos: tuple[Config, FaultPlan, str]) -> None:
    config, plan, _ = chaos
    _on(plan)
    try:
        stats = await facade_pool_workload(
            config, "c" + uuid.uuid4().hex[:7], 24, lambda: _off(plan), callers=3
        )
    finally:
        _off(plan)
    assert stats.ops["execute"] == 24
    check_stats(stats, allow_unverifiable=True)


def test_destructive_faults_end_in_typed_errors(chaos: tuple[Config, FaultPlan, str]) -> None:
    """Sandboxes vanish and kernels die: NotFound/ServerError, never a wrong result."""
    config, plan, _ = chaos
    template = f"chaos-{uuid.uuid4().hex[:8]}"
    ensure_template(config, template)
    _on(plan, {"sandbox_gone": 0.03, "kernel_death": 0.05, "error_503": 0.05, "reset_after": 0.05})
    with DataPlane(config) as dp:
        work = DataPlaneWorkload(dp, template, random.Random(3))
        try:
            work.run(60)
        finally:
            _off(plan)
            stats = work.finish()
    check_stats(stats, allow_unverifiable=True)
    assert plan.counts["sandbox_gone"] + plan.counts["kernel_death"] > 0


def test_kernel_death_is_a_server_error_and_the_context_is_gone(
    chaos: tuple[Config, FaultPlan, str],
) -> None:
    config, plan, _ = chaos
    template = f"chaos-{uuid.uuid4().hex[:8]}"
    ensure_template(config, template)
    with DataPlane(config) as dp:
        sid = dp.create_sandbox(template).sandbox_id
        try:
            dp.wait_until_healthy(sid)
            ctx = dp.create_context(sid)
            assert dp.execute(sid, "x = 1", context_id=ctx.id).ok
            plan.inject("kernel_death")
            with pytest.raises(ServerError) as info:
                dp.execute(sid, "x", context_id=ctx.id)
            assert info.value.code == "ERR_CONTEXT_LOST"
            with pytest.raises(NotFoundError):
                dp.get_context(sid, ctx.id)
            assert dp.execute(sid, "print(2)").stdout == "2\n"  # the sandbox is fine
        finally:
            dp.delete_sandbox(sid)


@pytest.mark.anyio
async def test_pool_replaces_a_vanished_session_and_reports_state_reset(
    chaos: tuple[Config, FaultPlan, str],
) -> None:
    config, plan, _ = chaos
    async with (
        AsyncCodeInterpreter(
            config, owner="c" + uuid.uuid4().hex[:7], strategy="pool", pool_size=(1, 2)
        ) as ci,
        ci.lease("victim") as lease,
    ):
        assert (await lease.execute_code("x = 41")).ok
        dead = lease.session_id
        plan.inject("sandbox_gone")  # the next request deletes the session first
        after = await lease.execute_code("print('x' in globals())")
        assert after.state_reset is True
        assert after.stdout == "False\n"
        assert lease.session_id not in (None, dead)
        plan.inject("kernel_death")
        with pytest.raises((ServerError, SessionLostError, TransportError)):
            await lease.execute_code("1")
        again = await lease.execute_code("print('ok')")
        assert again.stdout == "ok\n"
        assert again.state_reset is True
        assert (await lease.execute_code("1")).state_reset is False
    assert plan.counts["sandbox_gone"] >= 1
    assert plan.counts["kernel_death"] >= 1


def test_admin_route_changes_the_plan_at_run_time(chaos: tuple[Config, FaultPlan, str]) -> None:
    config, _, url = chaos
    template = f"chaos-{uuid.uuid4().hex[:8]}"
    ensure_template(config, template)
    with DataPlane(config) as dp:
        sid = dp.create_sandbox(template).sandbox_id
        try:
            dp.wait_until_healthy(sid)
            r = httpx.post(f"{url}/_admin/faults", json={"inject": ["error_500"]})
            assert r.status_code == 200
            assert r.json()["queue"] == ["error_500"]
            with pytest.raises(ServerError) as info:
                dp.list_contexts(sid)
            assert info.value.status_code == 500
            assert dp.list_contexts(sid) == []
            bad = httpx.post(f"{url}/_admin/faults", json={"rates": {"meteor": 0.5}})
            assert bad.status_code == 400
            assert "meteor" in bad.json()["message"]
            state = httpx.get(f"{url}/_admin/faults").json()
            assert state["enabled"] is True
            assert state["counts"]["error_500"] >= 1
        finally:
            dp.delete_sandbox(sid)


def test_faults_are_off_by_default(emulator: Config) -> None:
    # not asked for (`EmulatorSettings(faults=...)`): no fault route at all
    answer = httpx.get(f"{emulator.data_url}/_admin/faults")
    assert answer.status_code == 404
    assert "enabled" not in answer.json()


@pytest.mark.slow
@pytest.mark.anyio
async def test_one_thousand_operations_under_transient_faults(
    chaos: tuple[Config, FaultPlan, str],
) -> None:
    import anyio

    config, plan, _ = chaos
    total = Stats()
    total.merge(await anyio.to_thread.run_sync(_dataplane_run, config, plan, 700, 11))
    _on(plan)
    try:
        total.merge(
            await anyio.to_thread.run_sync(
                facade_sync_workload,
                config,
                "c" + uuid.uuid4().hex[:7],
                150,
                random.Random(12),
                lambda: _off(plan),
            )
        )
        _on(plan)
        total.merge(
            await facade_pool_workload(
                config, "c" + uuid.uuid4().hex[:7], 150, lambda: _off(plan), callers=4
            )
        )
    finally:
        _off(plan)
    assert total.total >= 1000
    check_stats(total, allow_unverifiable=True)
