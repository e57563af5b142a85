"""agentrun_ci_mcp.server through the official mcp client, in memory, against the emulator.

Both protocol eras: `auto` (2026-07-28, direct dispatch) and `legacy` (2025-11-25
handshake over in-memory streams).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")
pytest.importorskip("jupyter_client")

from mcp import Client, MCPError

from agentrun_ci import AsyncControlPlane, Config, __version__
from agentrun_ci_mcp.server import ALL_TOOLS, ServerOptions, build_server

pytestmark = pytest.mark.anyio
MODES = ["auto", "legacy"]


def _options(config: Config, **kw: Any) -> ServerOptions:
    return ServerOptions(
        config=config,
        backend="cloud",
        owner="mcpt" + secrets.token_hex(3),
        progress_interval=0.1,
        **kw,
    )


async def _leftovers(config: Config, owner: str) -> list[str]:
    prefix = f"arci-{owner}-"
    async with AsyncControlPlane(config) as control:
        names = [s.sandbox_id for s in await control.list_sandboxes()]
        names += [t.name for t in await control.list_templates()]
    return [n for n in names if n.startswith(prefix)]


@pytest.fixture
async def client(emulator: Config, request: pytest.FixtureRequest) -> AsyncIterator[Client]:
    mode = getattr(request, "param", "auto")
    options = _options(emulator)
    mcp, _state = build_server(options)
    async with Client(mcp, mode=mode) as c:
        yield c
    # the lifespan deleted everything this server created
    assert await _leftovers(emulator, options.owner or "") == []


def _s(result: Any) -> dict[str, Any]:
    assert result.structured_content is not None, result.content
    return result.structured_content  # type: ignore[no-any-return]


@pytest.mark.parametrize("mode", MODES)
async def test_tools_have_schemas_descriptions_and_annotations(emulator: Config, mode: str) -> None:
    mcp, state = build_server(_options(emulator))
    async with Client(mcp, mode=mode) as c:
        assert c.server_info is not None
        assert c.server_info.name == "agentrun-ci"
        assert c.server_info.version == __version__
        tools = {t.name: t for t in (await c.list_tools()).tools}
    assert set(tools) == set(ALL_TOOLS)
    for tool in tools.values():
        assert tool.description
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is not None
        assert tool.annotations.destructive_hint is not None
        assert tool.annotations.open_world_hint is not None
    run = tools["run_code"]
    assert run.input_schema["required"] == ["code"]
    assert set(run.input_schema["properties"]) == {"code", "language", "timeout", "session"}
    assert run.input_schema["properties"]["language"]["enum"] == ["python", "javascript"]
    out = run.output_schema or {}
    for key in ("stdout", "stderr", "results", "error", "execution_count", "duration_ms"):
        assert key in out["properties"]
    assert {"truncated", "state_reset"} <= set(out["properties"])
    # truthful: code and commands can do anything a shell can, the readers only read
    for name in ("run_code", "run_command"):
        hints = tools[name].annotations
        assert hints is not None
        assert (hints.read_only_hint, hints.destructive_hint, hints.open_world_hint) == (
            False,
            True,
            True,
        )
    for name in ("read_file", "list_files", "read_job"):
        hints = tools[name].annotations
        assert hints is not None
        assert (hints.read_only_hint, hints.destructive_hint) == (True, False), name
    # the handshake created nothing: the interpreter is lazy
    assert state.interpreter is None


async def test_tools_option_limits_the_tool_list(emulator: Config) -> None:
    mcp, _ = build_server(_options(emulator, tools=frozenset({"run_code"})))
    async with Client(mcp) as c:
        assert [t.name for t in (await c.list_tools()).tools] == ["run_code"]


@pytest.mark.parametrize("client", MODES, indirect=True)
async def test_old_code_only_call_state_and_legacy_text(client: Client) -> None:
    first = await client.call_tool("run_code", {"code": "x = 41\nprint('hi')\nx + 1"})
    assert not first.is_error
    s = _s(first)
    assert s["stdout"] == "hi\n"
    assert s["stderr"] == ""
    assert s["results"][0]["text"] == "42"
    assert s["results"][0]["is_main_result"] is True
    assert s["state_reset"] is False
    assert s["error"] is None
    # the old E2B server's text: JSON with stdout/stderr as lists of chunks
    legacy = json.loads(first.content[0].text)  # type: ignore[union-attr]
    assert legacy["stdout"] == ["hi\n"]
    assert legacy["stderr"] == []
    second = await client.call_tool("run_code", {"code": "print(x)"})
    assert _s(second)["stdout"] == "41\n"


@pytest.mark.parametrize("client", MODES, indirect=True)
async def test_exception_is_an_error_result_with_traceback(client: Client) -> None:
    result = await client.call_tool("run_code", {"code": "def f():\n    1/0\nf()"})
    assert result.is_error
    err = _s(result)["error"]
    assert err["name"] == "ZeroDivisionError"
    assert err["value"] == "division by zero"
    assert "f()" in err["traceback"]
    assert "\x1b[" not in err["traceback"]


async def test_stderr_and_javascript(client: Client) -> None:
    r = await client.call_tool("run_code", {"code": "import sys; print('e', file=sys.stderr)"})
    assert _s(r)["stderr"] == "e\n"
    js = await client.call_tool("run_code", {"code": "console.log(6*7)", "language": "javascript"})
    if js.is_error and "node" in json.dumps(_s(js)).lower():
        pytest.skip("no node for javascript contexts here")
    assert _s(js)["stdout"] == "42\n"


async def test_plot_arrives_as_an_image_within_budget(emulator: Config) -> None:
    budget = 40_000
    mcp, _ = build_server(_options(emulator, image_budget_bytes=budget))
    code = (
        "import matplotlib\nmatplotlib.use('module://matplotlib_inline.backend_inline')\n"
        "import matplotlib.pyplot as plt, numpy as np\n"
        "fig = plt.figure(figsize=(12, 9), dpi=150)\n"
        "plt.scatter(np.random.rand(3000), np.random.rand(3000), c=np.random.rand(3000))\n"
        "plt.show()"
    )
    async with Client(mcp) as c:
        r = await c.call_tool("run_code", {"code": code})
    assert not r.is_error, r.content
    images = [b for b in r.content if b.type == "image"]
    assert len(images) == 1
    data = base64.b64decode(images[0].data)
    assert 0 < len(data) <= budget
    summary = _s(r)["results"][0]["summary"]
    assert "image block #1" in summary
    assert "downscaled" in summary


async def test_huge_output_is_truncated_with_a_marker(emulator: Config) -> None:
    mcp, _ = build_server(_options(emulator, max_output_chars=1000))
    async with Client(mcp) as c:
        r = await c.call_tool("run_code", {"code": "print('y' * 500_000)"})
    s = _s(r)
    assert s["truncated"] is True
    assert len(s["stdout"]) < 1300
    assert "characters of stdout truncated" in s["stdout"]


async def test_timeout_interrupts_and_the_context_keeps_working(client: Client) -> None:
    await client.call_tool("run_code", {"code": "kept = 7"})
    r = await client.call_tool("run_code", {"code": "import time\ntime.sleep(30)", "timeout": 1})
    assert r.is_error
    s = _s(r)
    assert s["error"]["name"] in ("TimeoutError", "KeyboardInterrupt")
    assert any("30 s" in n and "run_command" in n for n in s["notes"])
    after = await client.call_tool("run_code", {"code": "print(kept)"})
    assert _s(after)["stdout"] == "7\n"
    assert _s(after)["state_reset"] is False


async def test_timeout_above_the_cap_is_explained(client: Client) -> None:
    r = await client.call_tool("run_code", {"code": "1", "timeout": 120})
    assert r.is_error
    text = r.content[0].text  # type: ignore[union-attr]
    assert "30 s" in text
    assert "run_command" in text


async def test_progress_is_reported_while_code_runs(client: Client) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    r = await client.call_tool(
        "run_code", {"code": "import time; time.sleep(0.6)"}, progress_callback=on_progress
    )
    assert not r.is_error
    assert seen
    assert seen == sorted(seen)


@pytest.mark.parametrize("client", MODES, indirect=True)
async def test_cancellation_stops_the_code_and_the_next_call_says_state_reset(
    client: Client,
) -> None:
    await client.call_tool("run_code", {"code": "before = 1"})
    with pytest.raises(MCPError):
        await client.call_tool(
            "run_code", {"code": "import time\ntime.sleep(25)"}, read_timeout_seconds=0.5
        )
    after = await client.call_tool("run_code", {"code": "print('alive')"})
    s = _s(after)
    assert s["stdout"] == "alive\n"
    assert s["state_reset"] is True
    assert any("cancelled" in n for n in s["notes"])


async def test_companion_tools_work_on_the_callers_sandbox(client: Client) -> None:
    w = await client.call_tool("write_file", {"path": "/home/user/d/a.txt", "content": "hello"})
    assert not w.is_error, w.content
    r = await client.call_tool("read_file", {"path": "/home/user/d/a.txt"})
    assert _s(r)["content"] == "hello"
    assert _s(r)["encoding"] == "utf-8"
    b = await client.call_tool(
        "write_file",
        {
            "path": "/home/user/d/b.bin",
            "content": base64.b64encode(b"\xff\x00").decode(),
            "encoding": "base64",
        },
    )
    assert not b.is_error
    rb = await client.call_tool("read_file", {"path": "/home/user/d/b.bin"})
    assert (_s(rb)["encoding"], _s(rb)["delivered_as"], _s(rb)["content"]) == (
        "base64",
        "resource",
        "",
    )
    assert str(len(b"\xff\x00")) in rb.content[0].text  # type: ignore[union-attr]
    blob = rb.content[1].resource  # type: ignore[union-attr]
    assert base64.b64decode(blob.blob) == b"\xff\x00"
    assert str(blob.uri) == "sandbox:///home/user/d/b.bin"
    listing = await client.call_tool("list_files", {"path": "/home/user/d"})
    assert {e["name"] for e in _s(listing)["entries"]} == {"a.txt", "b.bin"}
    code = await client.call_tool("run_code", {"code": "print(open('d/a.txt').read())"})
    assert _s(code)["stdout"] == "hello\n"
    cmd = await client.call_tool("run_command", {"command": "cat d/a.txt && exit 3"})
    assert _s(cmd)["stdout"] == "hello"
    assert _s(cmd)["exit_code"] == 3
    missing = await client.call_tool("read_file", {"path": "/home/user/nope.txt"})
    assert missing.is_error


async def test_reset_context_forgets_variables(client: Client) -> None:
    await client.call_tool("run_code", {"code": "gone = 1"})
    assert not (await client.call_tool("reset_context", {})).is_error
    r = await client.call_tool("run_code", {"code": "gone"})
    assert r.is_error
    assert _s(r)["error"]["name"] == "NameError"


async def test_a_foreign_session_handle_is_refused(client: Client) -> None:
    first = await client.call_tool("run_code", {"code": "1"})
    own = _s(first)["session"]
    assert own
    ok = await client.call_tool("run_code", {"code": "2", "session": own})
    assert not ok.is_error
    other = await client.call_tool("run_code", {"code": "2", "session": "not-yours"})
    assert other.is_error
    assert "session" in other.content[0].text


async def test_idle_clients_are_released(emulator: Config) -> None:
    options = _options(emulator, idle_timeout=0.01)
    mcp, state = build_server(options)
    async with Client(mcp) as c:
        await c.call_tool("run_code", {"code": "v = 1"})
        # released by reap_idle() here or by the background reaper (every 50 ms)
        with anyio.fail_after(10):
            while state.clients:
                await state.reap_idle()
                await anyio.sleep(0.01)
        r = await c.call_tool("run_code", {"code": "v"})
        # a new lease: the old context was released, so the variable is gone
        assert r.is_error
        assert _s(r)["error"]["name"] == "NameError"


@pytest.mark.parametrize("strategy", ["pool", "ephemeral"])
async def test_other_strategies(emulator: Config, strategy: str) -> None:
    options = _options(emulator, strategy=strategy, pool_size=1)
    mcp, _ = build_server(options)
    async with Client(mcp) as c:
        await c.call_tool("run_code", {"code": "z = 3"})
        r = await c.call_tool("run_code", {"code": "print(z)"})
        if strategy == "pool":
            assert _s(r)["stdout"] == "3\n"
        else:  # a new sandbox per call: no state, by design
            assert _s(r)["error"]["name"] == "NameError"
    assert await _leftovers(emulator, options.owner or "") == []


async def test_an_existing_interpreter_is_used_and_never_deleted(emulator: Config) -> None:
    name = "mcp-shared-" + secrets.token_hex(3)
    async with AsyncControlPlane(emulator) as control:
        await control.create_template(name)
        await control.wait_template_ready(name, timeout=30)
        try:
            mcp, state = build_server(_options(emulator, interpreter=name))
            async with Client(mcp) as c:
                r = await c.call_tool("run_code", {"code": "print('on shared')"})
                assert _s(r)["stdout"] == "on shared\n"
                assert state.interpreter is not None
                assert state.interpreter.code_interpreter_id == name
            assert (await control.get_template(name)).name == name
        finally:
            await control.delete_template(name)


async def test_client_states_are_bounded(emulator: Config) -> None:
    mcp, state = build_server(_options(emulator, max_clients=1))
    async with Client(mcp) as c:
        await c.call_tool("run_code", {"code": "1"})
        # a second state (as a handle-only HTTP client would make) evicts the idle first one
        other = state.client("handle:test")
        await state.evict_over_limit(other)
        assert list(state.clients) == ["handle:test"]


async def test_a_background_job_is_started_polled_and_killed(client: Client) -> None:
    started = await client.call_tool(
        "run_command",
        {
            "command": "for i in 1 2 3; do echo line $i; sleep 0.2; done; echo é >&2",
            "background": True,
        },
    )
    assert not started.is_error, started.content
    job = _s(started)["job"]
    assert job
    out, err = _s(started)["stdout"], _s(started)["stderr"]
    offset, stderr_offset = len(out.encode()), len(err.encode())
    status, more = _s(started)["status"], _s(started)["truncated"]
    while status == "running" or more:
        polled = _s(
            await client.call_tool(
                "read_job",
                {"job": job, "offset": offset, "stderr_offset": stderr_offset, "wait": 5},
            )
        )
        out, err = out + polled["stdout"], err + polled["stderr"]
        offset, stderr_offset = polled["offset"], polled["stderr_offset"]
        status, more = polled["status"], polled["more"]
    assert (out, err, polled["exit_code"]) == ("line 1\nline 2\nline 3\n", "é\n", 0)

    sleeper = _s(
        await client.call_tool("run_command", {"command": "sleep 300", "background": True})
    )
    assert sleeper["status"] == "running"
    killed = _s(await client.call_tool("kill_job", {"job": sleeper["job"]}))
    assert killed["killed"] is True
    after = _s(await client.call_tool("read_job", {"job": sleeper["job"]}))
    assert (after["status"], after["exit_code"]) == ("exited", 137)
    assert _s(await client.call_tool("kill_job", {"job": sleeper["job"]}))["killed"] is False


async def test_job_calls_refuse_bad_input_by_name(client: Client) -> None:
    both = await client.call_tool(
        "run_command", {"command": "true", "background": True, "timeout": 5}
    )
    assert both.is_error
    assert "background job" in both.content[0].text  # type: ignore[union-attr]
    bad = await client.call_tool("read_job", {"job": "abc"})
    assert bad.is_error
    assert "not a job id" in bad.content[0].text  # type: ignore[union-attr]
    missing = await client.call_tool("read_job", {"job": "999999"})
    assert missing.is_error
    assert "no job 999999" in missing.content[0].text  # type: ignore[union-attr]


async def test_read_file_shows_an_image_as_an_image(client: Client) -> None:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buf, format="PNG")
    png = buf.getvalue()
    wrote = await client.call_tool(
        "write_file",
        {
            "path": "/home/user/plot.png",
            "content": base64.b64encode(png).decode(),
            "encoding": "base64",
        },
    )
    assert not wrote.is_error
    read = await client.call_tool("read_file", {"path": "/home/user/plot.png"})
    assert not read.is_error
    assert _s(read)["delivered_as"] == "image"
    assert _s(read)["content"] == ""
    note, image = read.content
    assert note.type == "text"
    assert len(note.text) < 200  # a line about the file, not 20 KB of base64
    assert image.type == "image"
    assert image.mime_type == "image/png"
    assert base64.b64decode(image.data) == png
