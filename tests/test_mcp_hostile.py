"""Hostile code and hostile requests through the MCP server (issue #7, item 4).

Every case ends in a clear tool error or a correct result, and the server keeps
serving: each hostile call is followed by a normal run_code that must work. Most
cases use the official `mcp` client in memory; the crashing and flooding ones run
once more against the real stdio subprocess, so the server *process* is shown to
survive them (and its memory to stay bounded). The SDK-level twins of these
cases are in test_hostile.py.

The emulator here has small limits: 64 processes per sandbox (a fork bomb hits
them at once) and a 2 MiB upload limit (an oversized write without 100 MB).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import select
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")
pytest.importorskip("jupyter_client")

from mcp import Client, StdioServerParameters
from support import (
    SCRIPT,
    cloud_env,
    initialize_request,
    needs_script,
    pids,
    proc_stat,
    running_emulator,
)

from agentrun_ci import Config
from agentrun_ci.local import EmulatorSettings, LocalEmulator
from agentrun_ci_mcp.server import ServerOptions, build_server

pytestmark = pytest.mark.anyio

UPLOAD_LIMIT = 2 * 1024 * 1024
MAX_CHARS = 2000


@pytest.fixture(scope="module")
def emu() -> Iterator[tuple[LocalEmulator, Config]]:
    settings = EmulatorSettings(max_processes=64, max_upload_bytes=UPLOAD_LIMIT, spare_kernels=1)
    with running_emulator(settings) as (emulator, config):
        yield emulator, config


def _options(config: Config, **kw: Any) -> ServerOptions:
    kw.setdefault("max_output_chars", MAX_CHARS)
    return ServerOptions(
        config=config,
        backend="cloud",
        owner="mcph" + secrets.token_hex(3),
        progress_interval=0.2,
        **kw,
    )


@pytest.fixture
async def client(
    emu: tuple[LocalEmulator, Config], request: pytest.FixtureRequest
) -> AsyncIterator[Client]:
    mcp, _ = build_server(_options(emu[1]))
    async with Client(mcp, mode=getattr(request, "param", "auto")) as c:
        yield c


def _s(result: Any) -> dict[str, Any]:
    assert result.structured_content is not None, result.content
    return result.structured_content  # type: ignore[no-any-return]


def _text(result: Any) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


async def _still_serving(client: Client) -> None:
    r = await client.call_tool("run_code", {"code": "print(6 * 7)"})
    assert not r.is_error, _text(r)
    assert _s(r)["stdout"] == "42\n"


def _contained(emulator: LocalEmulator) -> bool:
    core = emulator.core
    assert core is not None
    return core.cgroups is not None or core.uid is not None or os.geteuid() != 0


# ---------------------------------------------------------------- odd output, runaway processes


async def test_non_utf8_bytes_on_stdout_become_replacement_characters(client: Client) -> None:
    # ipykernel's sys.stdout has no .buffer: that attempt is a plain user-code error
    r = await client.call_tool(
        "run_code", {"code": "import sys\nsys.stdout.buffer.write(b'\\xff')"}
    )
    assert r.is_error
    assert _s(r)["error"]["name"] == "AttributeError"
    # raw bytes on fd 1 are captured asynchronously: they may land in the next call
    r1 = await client.call_tool(
        "run_code", {"code": "import os, time\nos.write(1, b'a\\xff\\xfeb\\n')\ntime.sleep(0.3)"}
    )
    r2 = await client.call_tool("run_code", {"code": "import time; time.sleep(0.3)"})
    assert not r1.is_error
    assert not r2.is_error
    assert "a\ufffd\ufffdb\n" in _s(r1)["stdout"] + _s(r2)["stdout"]
    cmd = await client.call_tool(
        "run_command", {"command": r"printf 'c\377\376d\n'; printf '\303' >&2"}
    )
    assert not cmd.is_error, _text(cmd)
    assert _s(cmd)["stdout"] == "c\ufffd\ufffdd\n"
    assert _s(cmd)["stderr"] == "\ufffd"
    await _still_serving(client)


async def test_fork_bomb_is_contained(emu: tuple[LocalEmulator, Config], client: Client) -> None:
    if not _contained(emu[0]):
        pytest.skip("root without a pids cgroup: RLIMIT_NPROC would not stop a fork bomb")
    # The kernel starts first: no new process can start in a sandbox the bomb fills, and
    # on a busy machine the sandbox's spare kernel may not be ready yet.
    warm = await client.call_tool("run_code", {"code": "1"})
    assert not warm.is_error, _text(warm)
    bomb = await client.call_tool(
        "run_command", {"command": "b() { b | b & }; b; sleep 1", "timeout": 3}
    )
    assert not bomb.is_error, _text(bomb)
    assert _s(bomb)["exit_code"] is not None
    r = await client.call_tool(
        "run_code",
        {
            "code": "import os, time\nn = 0\ntry:\n"
            "    while n < 5000:\n"
            "        if os.fork() == 0:\n            time.sleep(1); os._exit(0)\n"
            "        n += 1\n"
            "except OSError as e:\n    print('refused', type(e).__name__)\n",
            "timeout": 20,
        },
    )
    s = _s(r)
    assert s["stdout"].startswith("refused") or (s["error"] or {}).get("name") == "TimeoutError", s
    await _still_serving(client)


# ---------------------------------------------------------------- code that fails hard


async def test_memory_hog_is_a_memory_error_and_state_survives(client: Client) -> None:
    await client.call_tool("run_code", {"code": "keep = 'k'"})
    r = await client.call_tool("run_code", {"code": "hog = bytearray(8 * 1024 ** 3)"})
    assert r.is_error
    err = _s(r)["error"]
    assert err["name"] == "MemoryError"
    assert "bytearray" in err["traceback"]
    after = await client.call_tool("run_code", {"code": "keep"})
    assert _s(after)["results"][0]["text"] == "'k'"
    assert _s(after)["state_reset"] is False


async def test_infinite_loop_times_out_and_keeps_earlier_state(client: Client) -> None:
    await client.call_tool("run_code", {"code": "keep = 5"})
    r = await client.call_tool("run_code", {"code": "while True:\n    pass", "timeout": 1})
    assert r.is_error
    s = _s(r)
    assert s["error"]["name"] == "TimeoutError"
    assert s["state_reset"] is False
    assert any("timeout of 1 s" in n and "keeps earlier state" in n for n in s["notes"])
    after = await client.call_tool("run_code", {"code": "keep * 2"})
    assert _s(after)["results"][0]["text"] == "10"


async def test_os_exit_reports_the_context_dead_and_the_next_run_says_state_reset(
    client: Client,
) -> None:
    await client.call_tool("run_code", {"code": "x = 1"})
    dead = await client.call_tool("run_code", {"code": "import os; os._exit(1)"})
    assert dead.is_error
    text = _text(dead)
    assert "died" in text
    assert "variables" in text
    assert "state_reset: true" in text
    assert "Error executing tool" not in text  # not the SDK's opaque crash text
    after = await client.call_tool("run_code", {"code": "print('x' in globals())"})
    s = _s(after)
    assert not after.is_error
    assert s["stdout"] == "False\n"
    assert s["state_reset"] is True
    assert any("variables" in n for n in s["notes"])
    again = await client.call_tool("run_code", {"code": "1"})
    assert _s(again)["state_reset"] is False


async def test_deep_recursion_is_a_recursion_error(client: Client) -> None:
    await client.call_tool("run_code", {"code": "keep = 3"})
    r = await client.call_tool("run_code", {"code": "def f(n):\n    return f(n + 1)\nf(0)"})
    assert r.is_error
    s = _s(r)
    assert s["error"]["name"] == "RecursionError"
    assert len(s["error"]["traceback"]) < MAX_CHARS + 300  # thousands of frames, cut
    after = await client.call_tool("run_code", {"code": "keep"})
    assert _s(after)["results"][0]["text"] == "3"


async def test_a_raised_recursion_limit_that_overflows_the_c_stack_is_reported(
    client: Client,
) -> None:
    # repr() of a deeply nested list recurses in C; with the limit lifted, the kernel's C
    # stack overflows and the process dies: reported like os._exit, not a hang.
    code = (
        "import sys\nsys.setrecursionlimit(10 ** 6)\n"
        "nested = []\nfor _ in range(100_000):\n    nested = [nested]\nrepr(nested)"
    )
    r = await client.call_tool("run_code", {"code": code, "timeout": 20})
    assert r.is_error
    if r.structured_content is None or _s(r)["error"]["name"] == "DeadKernelError":
        assert "died" in _text(r)  # the SDK reports a dead kernel as the code's error
    else:  # a larger C stack: RecursionError after all
        assert _s(r)["error"]["name"] == "RecursionError"
    await _still_serving(client)


@pytest.mark.slow
async def test_a_timeout_that_needs_a_kernel_restart_says_state_is_lost(client: Client) -> None:
    # With the limit raised, IPython spends far longer than the timeout formatting 10**5
    # frames and ignores the interrupt; the emulator restarts the kernel after a grace.
    await client.call_tool("run_code", {"code": "keep = 1"})
    code = "import sys\nsys.setrecursionlimit(10 ** 6)\ndef f(n):\n    return f(n + 1)\nf(0)"
    r = await client.call_tool("run_code", {"code": code, "timeout": 2})
    assert r.is_error
    s = _s(r)
    assert s["error"]["name"] == "TimeoutError"
    if "kernel restarted" not in s["stderr"]:
        pytest.skip("the interrupt stopped the code: no restart to report")
    assert s["state_reset"] is True
    assert not any("keeps earlier state" in n for n in s["notes"])
    assert any("restarted" in n and "variables" in n for n in s["notes"])
    after = await client.call_tool("run_code", {"code": "print('keep' in globals())"})
    assert _s(after)["stdout"] == "False\n"


# ---------------------------------------------------------------- files


TRAVERSALS = [
    "/etc/passwd",
    "/home/user/../../etc/passwd",
    "../x",
    "a/../../b",
    "/proc/self/environ",
]


async def test_path_traversal_is_refused_by_every_file_tool(client: Client) -> None:
    for path in TRAVERSALS:
        read = await client.call_tool("read_file", {"path": path})
        assert read.is_error, path
        assert "root:" not in _text(read)
        write = await client.call_tool("write_file", {"path": path, "content": "x"})
        assert write.is_error, path
        assert path in _text(write) or "outside" in _text(write) or ".." in _text(write)
    for path in ("/", "/etc", "/home/user/.."):
        listing = await client.call_tool("list_files", {"path": path})
        assert listing.is_error, path
        assert "passwd" not in _text(listing)
    assert not await anyio.Path("/x").exists()
    await _still_serving(client)


async def test_symlink_escapes_are_refused(client: Client) -> None:
    marker = "mcp-hostile-" + secrets.token_hex(4)
    made = await client.call_tool(
        "run_code",
        {"code": "import os\nos.symlink('/etc', 'link')\nos.symlink('/etc/passwd', 'pw')"},
    )
    assert not made.is_error, _text(made)
    for path in ("link/passwd", "/home/user/pw", "pw"):
        r = await client.call_tool("read_file", {"path": path})
        assert r.is_error, path
        assert "root:" not in _text(r)
        assert "escapes" in _text(r) or "outside" in _text(r)
    w = await client.call_tool("write_file", {"path": f"link/{marker}", "content": "x"})
    assert w.is_error
    assert not await anyio.Path(f"/etc/{marker}").exists()
    listing = await client.call_tool("list_files", {"path": "link"})
    assert listing.is_error
    assert "passwd" not in _text(listing)
    await _still_serving(client)


async def test_a_write_over_the_upload_limit_is_a_clear_error(client: Client) -> None:
    big = await client.call_tool(
        "write_file", {"path": "/home/user/big.txt", "content": "a" * (UPLOAD_LIMIT + 1)}
    )
    assert big.is_error
    assert "413" in _text(big)
    assert "too large" in _text(big)
    assert f"limit of {UPLOAD_LIMIT} bytes" in _text(big)  # the emulator's, not the cloud's
    raw = base64.b64encode(b"\0" * (UPLOAD_LIMIT + 1)).decode()
    big64 = await client.call_tool(
        "write_file", {"path": "/home/user/big.bin", "content": raw, "encoding": "base64"}
    )
    assert big64.is_error
    assert "413" in _text(big64)
    listing = await client.call_tool("list_files", {"path": "/home/user"})
    assert {e["name"] for e in _s(listing)["entries"]}.isdisjoint({"big.txt", "big.bin"})
    await _still_serving(client)


# ---------------------------------------------------------------- malformed calls


@pytest.mark.parametrize("client", ["auto", "legacy"], indirect=True)
async def test_wrong_arguments_are_clear_errors_naming_the_argument(client: Client) -> None:
    cases: list[tuple[str, dict[str, Any], list[str]]] = [
        ("run_code", {"code": "1", "language": "ruby"}, ["language", "'python'", "'javascript'"]),
        ("run_code", {"code": "1", "language": None}, ["language", "'python'"]),
        ("run_code", {"code": 123}, ["code", "valid string"]),
        ("run_code", {"code": None}, ["code", "valid string"]),
        ("run_code", {}, ["code", "required"]),
        ("run_code", {"code": "1", "timeout": "x"}, ["timeout", "number"]),
        ("run_code", {"code": "1", "timeout": -1}, ["timeout", "greater than 0"]),
        ("run_code", {"code": "1", "timeout": 0}, ["timeout", "greater than 0"]),
        ("run_code", {"code": "1", "timeout": 1000}, ["timeout=1000", "30 s", "run_command"]),
        ("run_code", {"code": "1", "timeout": [1]}, ["timeout"]),
        ("run_code", {"code": ["print(1)"]}, ["code", "valid string"]),
        ("run_command", {"command": "true", "timeout": 1000}, ["timeout", "30"]),
        ("run_command", {"command": 5}, ["command", "valid string"]),
        ("read_file", {"path": 1}, ["path", "valid string"]),
        ("read_file", {}, ["path", "required"]),
        ("write_file", {"path": "a.txt"}, ["content", "required"]),
        ("write_file", {"path": "a.txt", "content": "x", "encoding": "latin-1"}, ["encoding"]),
        ("write_file", {"path": "a.txt", "content": "%%%", "encoding": "base64"}, ["base64"]),
        ("list_files", {"depth": 0}, ["depth"]),
        ("list_files", {"depth": "deep"}, ["depth"]),
        ("list_files", {"depth": 99}, ["depth"]),
        ("nope", {}, ["nope"]),
    ]
    for tool, args, needles in cases:
        r = await client.call_tool(tool, args)
        text = _text(r)
        assert r.is_error, (tool, args)
        for needle in needles:
            assert needle in text, (tool, args, text)
        assert text != f"Error executing tool {tool}", (tool, args)  # not the opaque crash text
    await _still_serving(client)


async def test_unknown_arguments_are_refused_by_name(client: Client) -> None:
    # The SDK would drop them silently: a misspelt `timout` would run with the default.
    r = await client.call_tool("run_code", {"code": "print('ok')", "timout": 5, "x": {"y": 1}})
    assert r.is_error
    text = _text(r)
    assert "timout" in text
    assert "Extra inputs are not permitted" in text
    assert "validation errors for run_codeArguments" in text
    w = await client.call_tool("write_file", {"path": "a.txt", "content": "x", "mode": "a"})
    assert w.is_error
    assert "mode" in _text(w)
    tools = (await client.list_tools()).tools
    assert all(t.input_schema.get("additionalProperties") is False for t in tools)
    await _still_serving(client)


async def test_empty_and_blank_code_are_empty_results(client: Client) -> None:
    for code in ("", "   \n\t\n", "# only a comment", "\n" * 1000):
        r = await client.call_tool("run_code", {"code": code})
        assert not r.is_error, code
        s = _s(r)
        assert (s["stdout"], s["stderr"], s["results"], s["error"]) == ("", "", [], None)
    await _still_serving(client)


async def test_javascript_crash_and_empty_code(client: Client) -> None:
    probe = await client.call_tool("run_code", {"code": "", "language": "javascript"})
    if probe.is_error and "node" in _text(probe).lower():
        pytest.skip("no node for javascript contexts here")
    assert not probe.is_error, _text(probe)
    dead = await client.call_tool("run_code", {"code": "process.exit(1)", "language": "javascript"})
    assert dead.is_error
    assert "died" in _text(dead)
    after = await client.call_tool(
        "run_code", {"code": "console.log(6*7)", "language": "javascript"}
    )
    assert _s(after)["stdout"] == "42\n"
    assert _s(after)["state_reset"] is True
    await _still_serving(client)


# ---------------------------------------------------------------- unicode


WEIRD = "héllo 🐍 \u202e עברית e\u0301 zero\u200bwidth 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \U0010ffff"


async def test_unusual_unicode_in_code_round_trips(client: Client) -> None:
    r = await client.call_tool("run_code", {"code": f"s = {WEIRD!r}\nprint(s)\ns"})
    assert not r.is_error, _text(r)
    assert _s(r)["stdout"] == WEIRD + "\n"
    assert _s(r)["results"][0]["text"] == repr(WEIRD)
    # a NUL in the source is the interpreter's SyntaxError, reported as the code's error
    nul = await client.call_tool("run_code", {"code": "x = 1\x00"})
    assert nul.is_error
    assert _s(nul)["error"]["name"] == "SyntaxError"
    # a lone surrogate cannot travel as UTF-8 JSON: a clear error, nothing sent
    lone = await client.call_tool("run_code", {"code": "'\udcff'"})
    assert lone.is_error
    assert "surrogate" in _text(lone)
    # escaped, the kernel builds it; its output is replaced, never a broken reply
    esc = await client.call_tool("run_code", {"code": "print('a\\udcffb')"})
    assert _s(esc)["stdout"] == "a\ufffdb\n"
    await _still_serving(client)


async def test_unusual_unicode_in_file_paths(client: Client) -> None:
    name = f"/home/user/ünï {WEIRD}.txt"
    w = await client.call_tool("write_file", {"path": name, "content": WEIRD + "\x00"})
    assert not w.is_error, _text(w)
    r = await client.call_tool("read_file", {"path": name})
    assert _s(r)["content"] == WEIRD + "\x00"
    assert _s(r)["encoding"] == "utf-8"
    listing = await client.call_tool("list_files", {"path": "/home/user"})
    assert f"ünï {WEIRD}.txt" in {e["name"] for e in _s(listing)["entries"]}
    for bad in ("/home/user/a\x00b.txt", "/home/user/\udcff.txt"):
        for tool, args in (
            ("read_file", {"path": bad}),
            ("write_file", {"path": bad, "content": "x"}),
            ("list_files", {"path": bad}),
        ):
            res = await client.call_tool(tool, args)
            assert res.is_error, (tool, bad)
            assert "NUL" in _text(res) or "surrogate" in _text(res), _text(res)
    content = await client.call_tool("write_file", {"path": "s.txt", "content": "\udcff"})
    assert content.is_error
    assert "surrogate" in _text(content)
    await _still_serving(client)


# ---------------------------------------------------------------- the real stdio process


def _env(config: Config) -> dict[str, str]:
    owner = "mcph" + secrets.token_hex(3)
    return cloud_env(config, owner, AGENTRUN_MCP_MAX_OUTPUT_CHARS=str(MAX_CHARS))


def _server_pid() -> int:
    """Our child running the console script (the stdio client does not expose it)."""
    found = []
    for pid in pids():
        fields = proc_stat(pid)
        if fields is None or int(fields[1]) != os.getpid():  # fields[1]: the parent's pid
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"agentrun-ci-mcp" in cmdline:
            found.append(pid)
    assert len(found) == 1, found
    return found[0]


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@needs_script
async def test_stdio_process_survives_crashes_and_floods(
    emu: tuple[LocalEmulator, Config],
) -> None:
    params = StdioServerParameters(command=SCRIPT, args=[], env=_env(emu[1]))
    async with Client(params) as c:

        async def run(code: str, **kw: Any) -> Any:
            return await c.call_tool("run_code", {"code": code, **kw})

        assert not (await run("keep = 1")).is_error
        pid = _server_pid()
        # the process dies: a clear error, then a fresh context that says so
        dead = await run("import os; os._exit(1)")
        assert dead.is_error
        assert "died" in _text(dead)
        after = await run("print('keep' in globals())")
        assert _s(after)["stdout"] == "False\n"
        assert _s(after)["state_reset"] is True
        segv = await run("import ctypes; ctypes.string_at(0)")
        assert segv.is_error
        assert "died" in _text(segv)
        assert _s(await run("keep = 2"))["state_reset"] is True
        # the code fails, the context stays
        hog = await run("hog = bytearray(8 * 1024 ** 3)")
        assert _s(hog)["error"]["name"] == "MemoryError"
        loop = await run("while True: pass", timeout=1)
        assert _s(loop)["error"]["name"] == "TimeoutError"
        assert _s(await run("print(keep)"))["stdout"] == "2\n"
        # 100 MB of output: cut to --max-output-chars, and the server's memory stays bounded
        flood = await run("import sys\nfor _ in range(100): sys.stdout.write('x' * 1_000_000)")
        assert not flood.is_error
        out = _s(flood)
        assert out["truncated"] is True
        assert out["stdout"].startswith("x" * (MAX_CHARS // 2))
        assert out["stdout"].endswith("x" * (MAX_CHARS // 2))
        assert "[... 99998000 characters of stdout truncated" in out["stdout"]
        assert len(out["stdout"]) < MAX_CHARS + 300
        assert any("stdout: 99998000 characters truncated" in n for n in out["notes"])
        # the legacy text block carries the same cut stream, not the 100 MB
        assert len(_text(flood)) < 2 * MAX_CHARS + 2000
        assert json.loads(_text(flood))["stdout"] == [out["stdout"]]
        peak = _peak_rss_mb(pid)
        # (about 4x the output here: body, text, parsed events; the bound leaves room)
        assert peak < 700, f"the server peaked at {peak:.0f} MB for 100 MB of output"
        # bytes that are not UTF-8, and output with escaped lone surrogates
        odd = await c.call_tool("run_command", {"command": r"printf 'c\377d'"})
        assert _s(odd)["stdout"] == "c\ufffdd", _s(odd)["stderr"]
        sur = await run("print('a\\udcffb')")
        assert _s(sur)["stdout"] == "a\ufffdb\n"
        bad = await c.call_tool("run_code", {"code": "1", "language": "ruby"})
        assert bad.is_error
        assert "'python'" in _text(bad)
        final = await run("print(6 * 7)")
        assert _s(final)["stdout"] == "42\n"
        assert await anyio.Path(f"/proc/{pid}").exists()


@needs_script
def test_stdio_process_survives_malformed_json_rpc(emu: tuple[LocalEmulator, Config]) -> None:
    """Lines no client library would send: the server answers or drops them, and serves on."""
    proc = subprocess.Popen(
        [SCRIPT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=_env(emu[1]),
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    def send(line: bytes) -> None:
        stdin.write(line + b"\n")
        stdin.flush()

    refused: list[dict[str, Any]] = []  # answers with "id": null (no id could be read)

    def replies(*ids: int, timeout: float = 120) -> dict[int, dict[str, Any]]:
        """The answers to `ids` (in any order), as far as they came."""
        got: dict[int, dict[str, Any]] = {}
        while not set(ids) <= set(got) and select.select([stdout], [], [], timeout)[0]:
            line = stdout.readline()
            if not line:
                break
            message = json.loads(line)  # anything but JSON on stdout fails here
            if message.get("id") in ids:
                got[message["id"]] = message
            elif message.get("id", "absent") is None:
                refused.append(message)
        return got

    def call(request_id: int, arguments: str) -> bytes:
        return (
            f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call",'
            f'"params":{{"name":"run_code","arguments":{arguments}}}}}'
        ).encode()

    try:
        send(json.dumps(initialize_request("hostile")).encode())
        assert 1 in replies(1)
        send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
        send(b"\xff\xfe not even UTF-8")
        send(b"not json at all")
        send(b'{"jsonrpc":"2.0","id":2,"method":')  # cut short
        send(b'{"jsonrpc":"2.0","id":8,"meth":"tools/list"}')  # JSON, but not a message
        # a lone surrogate escape: strict JSON parsers refuse it
        send(call(3, r'{"code":"\udcff"}'))
        # NaN is not JSON, but Python's parsers accept it: a NaN deadline never expires
        send(call(4, '{"code":"1","timeout":NaN}'))
        send(call(5, '"not an object"'))
        send(call(6, '{"code":"print(\'\xff\')"}'))  # invalid UTF-8 inside a string
        send(call(7, '{"code":"print(6 * 7)"}'))
        answers = replies(4, 5, 7, 8)
        assert set(answers) == {4, 5, 7, 8}, f"unanswered: {answers}"
        # JSON-RPC 2.0: a line that is not JSON gets a parse error with a null id (three
        # lines above, and the lone surrogate, which strict parsers refuse) ...
        codes = [m["error"]["code"] for m in refused]
        assert codes.count(-32700) >= 3, refused
        assert "one JSON-RPC message per line" in refused[0]["error"]["message"]
        # ... and JSON that is no message an invalid-request error, with its id if it had one
        assert answers[8]["error"]["code"] == -32600
        nan = answers[4]["result"]
        assert nan["isError"] is True
        assert "finite number" in nan["content"][0]["text"]
        assert "error" in answers[5] or answers[5]["result"]["isError"] is True
        assert answers[7]["result"]["structuredContent"]["stdout"] == "42\n"
        assert proc.poll() is None
        stdin.close()
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stdout.close()
        if not stdin.closed:
            stdin.close()
