"""Code that kills its own kernel (os._exit, a crash) is the code's error: an Execution with
`error` and `state_reset`, from the facade, a lease, the CLI and the E2B shim; never a
"ServerError ... retry later" (running it again would kill the fresh kernel too)."""

from __future__ import annotations

import io
import os
import uuid

import pytest

from agentrun_ci import AsyncCodeInterpreter, CodeInterpreter, Config, SessionLostError, e2b
from agentrun_ci.cli import main

DIE = "import os; os._exit(1)"


def _owner() -> str:
    return "d" + uuid.uuid4().hex[:7]


def _says_it_died(execution: object) -> None:
    error = getattr(execution, "error", None)
    assert error is not None
    assert error.name == "DeadKernelError"
    assert "died" in error.value
    assert "retry later" not in error.traceback  # not the service's advice for its own faults
    assert "ERR_CONTEXT_LOST" in error.traceback
    assert getattr(execution, "state_reset", None) is True
    assert getattr(execution, "ok", None) is False


def test_the_facade_returns_the_death_and_the_next_run_starts_fresh(emulator: Config) -> None:
    with CodeInterpreter(emulator, owner=_owner()) as ci:
        ci.execute_code("x = 1")
        seen: list[str] = []
        dead = ci.execute_code("print('last words', flush=True); " + DIE, on_stdout=seen.append)
        _says_it_died(dead)
        after = ci.execute_code("print('x' in globals())")
        assert after.stdout == "False\n"
        assert after.state_reset is True  # it runs in a fresh context: says so too
        assert ci.execute_code("1").state_reset is False


@pytest.mark.anyio
async def test_the_async_facade_returns_it_too(emulator: Config) -> None:
    async with AsyncCodeInterpreter(emulator, owner=_owner()) as ci:
        await ci.execute_code("z = 3")
        _says_it_died(await ci.execute_code(DIE))
        after = await ci.execute_code("print('z' in globals())")
        assert after.stdout == "False\n"
        assert after.state_reset is True


@pytest.mark.anyio
@pytest.mark.parametrize("strategy", ["pool", "ephemeral", "dedicated"])
async def test_every_strategy_reports_it_the_same_way(emulator: Config, strategy: str) -> None:
    ci = AsyncCodeInterpreter(emulator, owner=_owner(), strategy=strategy)  # type: ignore[arg-type]
    async with ci, ci.lease("victim") as lease:
        _says_it_died(await lease.execute_code(DIE))
        assert (await lease.execute_code("6 * 7")).text == "42"


def test_an_explicit_context_that_dies_is_reported_and_then_gone(emulator: Config) -> None:
    with CodeInterpreter(emulator, owner=_owner()) as ci:
        ci.execute_code("x = 4")
        ctx = ci.create_context()
        _says_it_died(ci.execute_code(DIE, context_id=ctx.id))
        untouched = ci.execute_code("x")  # the default context keeps its state, and says so
        assert untouched.text == "4"
        assert untouched.state_reset is False
        with pytest.raises(SessionLostError, match="create a new context"):
            ci.execute_code("1", context_id=ctx.id)


def test_the_cli_prints_it_as_the_codes_error_and_exits_1(
    emulator: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [k for k in os.environ if k.startswith(("AGENTRUN_", "ALIBABA_CLOUD_", "FC_"))]:
        monkeypatch.delenv(name)
    assert emulator.control_endpoint
    assert emulator.data_endpoint
    monkeypatch.setenv("AGENTRUN_CONTROL_ENDPOINT", emulator.control_endpoint)
    monkeypatch.setenv("AGENTRUN_DATA_ENDPOINT", emulator.data_endpoint)
    monkeypatch.setenv("AGENTRUN_ACCOUNT_ID", "local")
    out, err = io.StringIO(), io.StringIO()
    status = main(["run", "print('before', flush=True)\n" + DIE], out=out, err=err)
    assert status == 1
    assert "DeadKernelError" in err.getvalue()
    assert "died" in err.getvalue()
    assert "retry later" not in err.getvalue()


def test_the_e2b_shim_returns_it_as_execution_error(emulator: Config) -> None:
    try:
        with e2b.Sandbox(config=emulator) as sbx:
            sbx.run_code("y = 2")
            _says_it_died(sbx.run_code(DIE))
            assert sbx.run_code("print('y' in globals())").stdout == "False\n"
    finally:
        e2b.close_shared()


@pytest.mark.anyio
async def test_the_async_e2b_shim_returns_it_too(emulator: Config) -> None:
    try:
        sbx = await e2b.AsyncSandbox.create(config=emulator)
        async with sbx:
            _says_it_died(await sbx.run_code(DIE))
            assert (await sbx.run_code("6 * 7")).text == "42"
    finally:
        e2b.close_shared()
