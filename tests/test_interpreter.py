"""The CodeInterpreter facade against the local emulator over real HTTP: the seed's flow,
the singleton and ephemeral strategies, attaching, closing, backend choice."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

import httpx
import pytest

from agentrun_ci import (
    AsyncCodeInterpreter,
    CodeInterpreter,
    Config,
    ControlPlane,
    DataPlane,
    InvalidArgumentError,
    NetworkMode,
    SessionLostError,
    _backend,
    _lease,
    _strategies,
)


def _owner() -> str:
    return "t" + uuid.uuid4().hex[:7]


def owned(config: Config, owner: str) -> tuple[list[str], list[str]]:
    """(templates, sandboxes) on the emulator that carry `owner`'s tag."""
    prefix = f"arci-{owner}-"
    with ControlPlane(config) as cp:
        templates = [t.name for t in cp.list_templates() if t.name.startswith(prefix)]
        sandboxes = [
            s.sandbox_id
            for s in cp.list_sandboxes()
            if s.sandbox_id.startswith(prefix) or (s.template_name or "").startswith(prefix)
        ]
    return templates, sandboxes


def test_seed_flow_runs_as_written_and_leaves_nothing(emulator: Config) -> None:
    owner = _owner()
    # phase 3 of the seed, with the emulator's Config in place of the key arguments
    interpreter = CodeInterpreter(emulator, region="cn-hangzhou", owner=owner)
    instance = interpreter.create_interpreter(
        name="mcp-server-interpreter",
        cpu=2.0,
        memory=2048,
        network_mode=NetworkMode.PUBLIC,
        session_timeout=3600,
    )
    assert instance.status == "READY"
    assert instance.name.endswith("mcp-server-interpreter")
    assert instance.idle_timeout == 3600
    session = interpreter.start_session()
    assert session is not None
    assert session.status == "READY"

    result = interpreter.execute_code(
        code="import sys\nprint('Hello')\nprint('warn', file=sys.stderr)",
        context_id="default",
        execution_timeout=30,
    )
    text = json.dumps({"stdout": result.stdout, "stderr": result.stderr}, indent=2)
    assert json.loads(text) == {"stdout": "Hello\n", "stderr": "warn\n"}
    # the code comparison's per-request form, positional; state persists in "default"
    interpreter.execute_code("x = 41")
    assert interpreter.execute_code("x + 1").text == "42"
    assert owned(emulator, owner) != ([], [])

    # the seed's shutdown()
    if interpreter and interpreter.code_interpreter_id:
        interpreter.control_client.delete_code_interpreter(interpreter.code_interpreter_id)
    interpreter.close()
    interpreter.close()  # idempotent
    assert owned(emulator, owner) == ([], [])


def test_close_deletes_everything_this_object_created(emulator: Config) -> None:
    owner = _owner()
    with CodeInterpreter(emulator, owner=owner) as ci:
        ci.execute_code("a = 1")  # creates interpreter + session + context implicitly
        ctx = ci.create_context()
        assert ci.execute_code("b = 2", context_id=ctx.id).ok
        templates, sandboxes = owned(emulator, owner)
        assert len(templates) == 1
        assert len(sandboxes) == 1
    assert owned(emulator, owner) == ([], [])


def test_keep_interpreter_and_attach_by_name_and_session_id(emulator: Config) -> None:
    owner = _owner()
    name = f"kept-{uuid.uuid4().hex[:8]}"
    with CodeInterpreter(emulator, owner=owner, keep_interpreter=True) as first:
        first.create_interpreter(name=name)
    with ControlPlane(emulator) as cp:
        assert cp.get_template(name).status == "READY"  # survived close
        try:
            with CodeInterpreter(emulator, owner=owner, interpreter_name=name) as second:
                assert second.execute_code("1 + 1").text == "2"
                session_id = second.session_id
                assert session_id is not None
                with CodeInterpreter(emulator, owner=owner, interpreter_name=name) as third:
                    third.start_session(session_id=session_id)
                    assert third.execute_code("40 + 2").text == "42"
                # the attached session was not deleted by `third`
                assert cp.get_sandbox(session_id).status == "READY"
            assert cp.get_template(name).status == "READY"  # attached: never deleted
        finally:
            cp.delete_template(name)


def test_singleton_leases_share_a_session_not_variables(emulator: Config) -> None:
    owner = _owner()
    with CodeInterpreter(emulator, owner=owner, strategy="singleton") as ci:
        a, b = ci.acquire("a"), ci.acquire("b")
        a.execute_code("secret = 'a'")
        seen = b.execute_code("print('secret' in globals())")
        assert seen.stdout == "False\n"
        assert a.session_id == b.session_id
        context_id = a.context_id
        assert context_id is not None
        a.release()
        with DataPlane(ci.config) as dp:
            assert context_id not in {c.id for c in dp.list_contexts(b.session_id or "")}
        b.reset()
        assert b.execute_code("print('x' in globals())").stdout == "False\n"
        b.release()


def test_singleton_session_killed_is_replaced_and_says_state_reset(emulator: Config) -> None:
    owner = _owner()
    with CodeInterpreter(emulator, owner=owner) as ci:
        ci.execute_code("x = 1")
        dead = ci.session_id
        assert dead is not None
        with DataPlane(ci.config) as dp:
            dp.delete_sandbox(dead)
        after = ci.execute_code("print('x' in globals())")
        assert after.state_reset is True
        assert after.stdout == "False\n"
        assert ci.session_id != dead
        assert ci.execute_code("1").state_reset is False
    assert owned(emulator, owner) == ([], [])


def test_explicit_context_lost_raises_session_lost(emulator: Config) -> None:
    with CodeInterpreter(emulator, owner=_owner()) as ci:
        ctx = ci.create_context()
        with DataPlane(ci.config) as dp:
            dp.delete_context(ci.session_id or "", ctx.id)
        with pytest.raises(SessionLostError, match="create a new context"):
            ci.execute_code("1", context_id=ctx.id)


def test_ephemeral_runs_each_execute_in_a_fresh_sandbox(emulator: Config) -> None:
    owner = _owner()
    with CodeInterpreter(emulator, owner=owner, strategy="ephemeral") as ci:
        assert ci.start_session() is None
        assert ci.execute_code("x = 1").ok
        assert ci.execute_code("print('x' in globals())").stdout == "False\n"
        templates, sandboxes = owned(emulator, owner)
        assert (len(templates), sandboxes) == (1, [])  # each sandbox deleted after its call
        with pytest.raises(InvalidArgumentError, match="ephemeral"):
            ci.create_context()
    assert owned(emulator, owner) == ([], [])


def test_callbacks_get_each_chunk_and_timeout_cap_is_checked(emulator: Config) -> None:
    out: list[str] = []
    err: list[str] = []
    with CodeInterpreter(emulator, owner=_owner()) as ci:
        execution = ci.execute_code(
            "import sys\nprint('a')\nprint('b', file=sys.stderr)",
            on_stdout=out.append,
            on_stderr=err.append,
        )
        assert "".join(out) == execution.stdout == "a\n"
        assert "".join(err) == "b\n"
        with pytest.raises(InvalidArgumentError, match="30"):
            ci.execute_code("1", execution_timeout=31)


def test_unknown_strategy_and_network_mode_are_rejected(emulator: Config) -> None:
    with pytest.raises(InvalidArgumentError, match="strategy"):
        CodeInterpreter(emulator, strategy="nope")  # type: ignore[arg-type]
    with (
        CodeInterpreter(emulator, owner=_owner()) as ci,
        pytest.raises(InvalidArgumentError, match="network_mode"),
    ):
        ci.create_interpreter(network_mode="SOMETIMES")


@pytest.mark.anyio
async def test_auto_backend_without_credentials_starts_the_local_emulator(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_backend, "_noticed", False)
    caplog.set_level(logging.WARNING, logger="agentrun_ci.interpreter")
    async with AsyncCodeInterpreter(Config(), owner=_owner()) as ci:
        assert ci.config is not None
        assert ci.config.control_url.startswith("http://127.0.0.1:")
        assert (await ci.execute_code("6 * 7")).text == "42"
        url = ci.config.control_url
    # the facade stopped the emulator it started
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(url, timeout=2)
    assert "running code on THIS machine" in caplog.text
    assert "backend='local'" in caplog.text


def test_a_create_that_never_gets_ready_deletes_the_half_made_template() -> None:
    from agentrun_ci import WaitTimeout
    from agentrun_ci.local import EmulatorSettings, LocalEmulator

    owner = _owner()
    with LocalEmulator(EmulatorSettings(provisioning_delay=30, spare_kernels=0)) as config:
        with CodeInterpreter(config, owner=owner) as ci:
            with pytest.raises(WaitTimeout, match="not READY"):
                ci.create_interpreter(name="slow", timeout=0.3)
            assert ci.code_interpreter_id is None
        assert owned(config, owner) == ([], [])


@pytest.mark.anyio
async def test_live_sandboxes_never_exceed_max_sessions(
    emulator: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = 0
    peak = 0
    start, delete = _lease.Runtime.start_sandbox, _lease.Runtime.delete_sandbox

    async def counting_start(self: _lease.Runtime) -> _strategies.HeldSession:
        nonlocal live, peak
        live += 1
        peak = max(peak, live)
        return await start(self)

    async def counting_delete(self: _lease.Runtime, sandbox_id: str) -> None:
        nonlocal live
        await delete(self, sandbox_id)
        live -= 1

    monkeypatch.setattr(_lease.Runtime, "start_sandbox", counting_start)
    monkeypatch.setattr(_lease.Runtime, "delete_sandbox", counting_delete)
    async with AsyncCodeInterpreter(
        emulator, owner=_owner(), strategy="ephemeral", max_sessions=2
    ) as ci:
        results = await asyncio.gather(*(ci.execute_code(f"{i} * 2") for i in range(6)))
    assert [r.text for r in results] == [str(i * 2) for i in range(6)]
    assert peak <= 2
    assert live == 0


def test_sync_leases_from_threads_on_a_pool(emulator: Config) -> None:
    from concurrent.futures import ThreadPoolExecutor

    owner = _owner()
    with CodeInterpreter(emulator, owner=owner, strategy="pool", pool_size=(2, 2)) as ci:

        def caller(i: int) -> str:
            with ci.lease(f"thread-{i}") as lease:
                lease.execute_code(f"v = {i}")
                return lease.execute_code("v").text or ""

        with ThreadPoolExecutor(4) as executor:
            assert list(executor.map(caller, range(4))) == ["0", "1", "2", "3"]
    assert owned(emulator, owner) == ([], [])
