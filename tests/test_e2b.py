"""The E2B shim: the seed's E2B snippet runs with only the import line changed."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from agentrun_ci import Config, ControlPlane, e2b


@pytest.fixture(autouse=True)
def _fresh_shared_interpreter() -> Iterator[None]:
    e2b.close_shared()
    yield
    e2b.close_shared()


def test_seed_e2b_snippet_unchanged_but_for_the_import(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "AGENTRUN_ACCESS_KEY_ID",
        "AGENTRUN_ACCESS_KEY_SECRET",
        "ALIBABA_CLOUD_ACCESS_KEY_ID",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        "AGENTRUN_CONTROL_ENDPOINT",
        "AGENTRUN_DATA_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    code = "import sys\nprint('to out')\nprint('to err', file=sys.stderr)"

    from agentrun_ci.e2b import Sandbox  # was: from e2b_code_interpreter import Sandbox

    sbx = Sandbox()
    execution = sbx.run_code(code)
    result = {
        "stdout": execution.logs.stdout,
        "stderr": execution.logs.stderr,
    }
    assert json.loads(json.dumps(result, indent=2)) == {
        "stdout": ["to out\n"],
        "stderr": ["to err\n"],
    }
    sbx.kill()


def test_execution_shape_files_commands_contexts(emulator: Config) -> None:
    with e2b.Sandbox(config=emulator) as sbx:
        execution = sbx.run_code("x = 20\nx * 2 + 2")
        assert execution.text == "42"
        assert [r.text for r in execution.results] == ["42"]
        assert execution.error is None
        failed = sbx.run_code("1/0")
        assert failed.error is not None
        assert failed.error.name == "ZeroDivisionError"
        assert "division by zero" in failed.error.traceback

        sbx.files.write("/home/user/data.txt", "hello")
        assert sbx.files.read("/home/user/data.txt") == "hello"
        assert sbx.files.read("/home/user/data.txt", format="bytes") == b"hello"
        assert "data.txt" in [entry.name for entry in sbx.files.list("/home/user")]
        assert sbx.commands.run("cat data.txt").stdout == "hello"
        with pytest.raises(e2b.CommandExitException) as failed_command:  # E2B: exit != 0 raises
            sbx.commands.run("cat data.txt; exit 3")
        assert (failed_command.value.stdout, failed_command.value.exit_code) == ("hello", 3)

        context = sbx.create_code_context()
        sbx.run_code("y = 'ctx'", context=context)
        # E2B's Result.text drops the quotes IPython puts around a string
        assert sbx.run_code("y", context=context).text == "ctx"
        assert sbx.run_code("print('y' in globals())").stdout == "False\n"
        assert sbx.run_code("x").text == "20"  # state persists between calls
        sandbox_id = sbx.sandbox_id
    assert sandbox_id is not None
    with ControlPlane(emulator) as cp:
        assert sandbox_id not in {s.sandbox_id for s in cp.list_sandboxes()}


def test_each_sandbox_is_its_own_sandbox(emulator: Config) -> None:
    first = e2b.Sandbox.create(config=emulator)
    second = e2b.Sandbox.create(config=emulator)
    try:
        first.run_code("mine = 1")
        assert first.sandbox_id != second.sandbox_id
        assert second.run_code("print('mine' in globals())").stdout == "False\n"
        first.files.write("/home/user/only-first.txt", "1")
        assert "only-first.txt" not in [e.name for e in second.files.list("/home/user")]
    finally:
        first.kill()
        second.kill()
        first.kill()  # idempotent
    assert not first.is_running()
    with pytest.raises(RuntimeError, match="killed"):
        first.run_code("1")


@pytest.mark.anyio
async def test_async_sandbox(emulator: Config) -> None:
    sbx = await e2b.AsyncSandbox.create(config=emulator)
    async with sbx:
        execution = await sbx.run_code("print('async')")
        assert execution.logs.stdout == ["async\n"]
        await sbx.files.write("/home/user/a.txt", "A")
        assert await sbx.files.read("/home/user/a.txt") == "A"
