"""`agentrun_ci.e2b.AsyncSandbox` against the local emulator, from E2B's documented behaviour."""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import Iterator

import pytest

from agentrun_ci import AsyncCodeInterpreter, Config, InvalidArgumentError, NotFoundError, e2b
from agentrun_ci.e2b import (
    AsyncSandbox,
    CommandExitException,
    InvalidArgumentException,
    OutputMessage,
    SandboxException,
    TimeoutException,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module", autouse=True)
def _shared(emulator: Config) -> Iterator[None]:
    yield
    e2b.close_shared()


async def test_create_run_and_kill(emulator: Config) -> None:
    sbx = await AsyncSandbox.create(config=emulator, metadata={"k": "v"}, timeout=90)
    try:
        execution = await sbx.run_code("x = 20\nx * 2 + 2")
        assert execution.text == "42"
        assert execution.execution_count == 1
        info = await sbx.get_info()
        assert info.metadata == {"k": "v"}
        assert (await AsyncSandbox.get_info(sbx.sandbox_id)).sandbox_id == sbx.sandbox_id
        assert await sbx.is_running()
        listed = await AsyncSandbox.list(query={"metadata": {"k": "v"}}).next_items()
        assert [i.sandbox_id for i in listed] == [sbx.sandbox_id]
    finally:
        assert await sbx.kill() is True
    assert not await sbx.is_running()
    with pytest.raises(SandboxException, match="killed"):
        await sbx.run_code("1")


async def test_the_sandbox_runs_on_the_async_facade(emulator: Config) -> None:
    async with await AsyncSandbox.create(config=emulator) as sbx:
        assert isinstance(sbx._ci, AsyncCodeInterpreter)
        assert sbx._lease is not None  # a lease of the facade's `dedicated` strategy
        assert sbx._ci.data_plane._client is not None


async def test_connect_and_class_kill(emulator: Config) -> None:
    sbx = await AsyncSandbox.create(config=emulator)
    await sbx.run_code("shared = 'yes'")
    other = await AsyncSandbox.connect(sbx.sandbox_id)
    assert (await other.run_code("shared")).text == "yes"
    assert await AsyncSandbox.kill(sbx.sandbox_id) is True
    assert not await sbx.is_running()
    with pytest.raises(NotFoundError):
        await AsyncSandbox.connect(sbx.sandbox_id)


async def test_kill_stops_a_run_in_another_task_at_once(emulator: Config) -> None:
    sbx = await AsyncSandbox.create(config=emulator)
    run = asyncio.create_task(sbx.run_code("import time; time.sleep(25)", timeout=30))
    deadline = time.monotonic() + 10
    while not sbx._inflight:
        assert time.monotonic() < deadline, "the run did not start"
        await asyncio.sleep(0.02)
    began = time.monotonic()
    assert await sbx.kill() is True
    with pytest.raises(TimeoutException, match="killed while the request was in progress"):
        await run
    assert time.monotonic() - began < 5


async def test_async_callbacks_are_awaited(emulator: Config) -> None:
    async with await AsyncSandbox.create(config=emulator) as sbx:
        seen: list[str] = []

        async def on_stdout(message: OutputMessage) -> None:
            await asyncio.sleep(0)
            seen.append(f"out:{message.line}")

        async def on_result(result: e2b.Result) -> None:
            seen.append(f"result:{result.text}")

        def on_error(error: e2b.ExecutionError) -> None:
            seen.append(f"error:{error.name}")

        await sbx.run_code("print('hi')\n1 + 1", on_stdout=on_stdout, on_result=on_result)
        await sbx.run_code("nope", on_error=on_error)
        assert seen == ["out:hi\n", "result:2", "error:NameError"]


async def test_contexts_envs_and_timeout(emulator: Config) -> None:
    async with await AsyncSandbox.create(config=emulator, envs={"WHO": "sandbox"}) as sbx:
        languages = [c.language for c in await sbx.list_code_contexts()]
        assert languages == ["python", "javascript"]
        ctx = await sbx.create_code_context(language="js")
        assert (await sbx.run_code("process.env.WHO", context=ctx)).text == "sandbox"
        once = await sbx.run_code("process.env.WHO", context=ctx, envs={"WHO": "run"})
        assert once.text == "run"
        assert (await sbx.run_code("process.env.WHO", context=ctx)).text == "sandbox"
        with pytest.raises(InvalidArgumentException):
            await sbx.run_code("1", context=ctx, language="python")
        await sbx.run_code("y = 5")
        with pytest.raises(TimeoutException):
            await sbx.run_code("import time; time.sleep(20)", timeout=1)
        assert (await sbx.run_code("y")).text == "5"
        await sbx.restart_code_context(ctx)
        assert (await sbx.run_code("typeof answer", context=ctx)).text == "undefined"
        await sbx.remove_code_context(ctx)
        assert ctx.id not in [c.id for c in await sbx.list_code_contexts()]


async def test_files_and_commands(emulator: Config) -> None:
    async with await AsyncSandbox.create(config=emulator) as sbx:
        await sbx.files.write("/home/user/a.txt", "A")
        assert await sbx.files.read("/home/user/a.txt") == "A"
        assert await sbx.files.exists("/home/user/a.txt")
        assert not await sbx.files.exists("/home/user/none.txt")
        result = await sbx.commands.run("cat a.txt", envs={"X": "1"})
        assert (result.stdout, result.exit_code) == ("A", 0)
        handle = await sbx.commands.run("sleep 100", background=True)
        assert handle.pid in [p.pid for p in await sbx.commands.list()]
        assert await handle.kill()
        with pytest.raises(CommandExitException):
            await handle.wait()


async def test_refusals(emulator: Config) -> None:
    with pytest.raises(InvalidArgumentError, match="allow_internet_access"):
        await AsyncSandbox.create(config=emulator, allow_internet_access=False)
    with pytest.raises(InvalidArgumentError, match="proxy"):
        await AsyncSandbox.create(config=emulator, proxy="http://p")
    with pytest.raises(InvalidArgumentError, match="create"):
        AsyncSandbox()


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("bwrap") is None,
    reason="/home/user is real only in the jail (Linux, bwrap)",
)
async def test_paths_agree_on_home_user_and_contexts_start_anywhere(emulator: Config) -> None:
    async with await AsyncSandbox.create(config=emulator) as sbx:
        assert (await sbx.run_code("import os; os.getcwd()")).text == "/home/user"
        assert (await sbx.run_code("process.cwd()", language="js")).text == "/home/user"
        assert (await sbx.run_code("pwd", language="bash")).logs.stdout == ["/home/user\n"]
        assert (await sbx.commands.run("pwd")).stdout == "/home/user\n"
        await sbx.files.write("/home/user/agree.txt", "same file")
        assert (await sbx.run_code("open('agree.txt').read()")).text == "same file"
        context = await sbx.create_code_context(language="python", cwd="/tmp")
        assert (await sbx.run_code("import os; os.getcwd()", context=context)).text == "/tmp"
        assert context.id in [c.id for c in await sbx.list_code_contexts()]
