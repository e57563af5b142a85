"""Hostile code and hostile requests, through the SDK (issue #7).

Each case ends in a clear, typed error or a correct result, and the emulator keeps
serving afterwards. The emulator's own raw-HTTP containment tests are in
test_local_isolation.py; these check what a caller of DataPlane / the facade sees.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentrun_ci import (
    BadRequestError,
    CodeInterpreter,
    Config,
    ControlPlane,
    DataPlane,
    InvalidArgumentError,
    NotFoundError,
    PayloadTooLargeError,
    ServerError,
)

pytest.importorskip("jupyter_client")

from support import running_emulator

from agentrun_ci.local import EmulatorSettings, LocalEmulator

UPLOAD_LIMIT = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def emu() -> Iterator[tuple[LocalEmulator, Config]]:
    # Default memory (2 GB): with 1 GB the kernel's own output buffering of 100 MB runs
    # out of memory (see test_100_mb...).
    settings = EmulatorSettings(max_processes=64, max_upload_bytes=UPLOAD_LIMIT, spare_kernels=1)
    with running_emulator(settings) as (emulator, config):
        with ControlPlane(config) as cp:
            cp.create_template("hostile")
        yield emulator, config


@pytest.fixture
def dp(emu: tuple[LocalEmulator, Config]) -> Iterator[DataPlane]:
    with DataPlane(emu[1]) as plane:
        yield plane


@pytest.fixture
def sid(dp: DataPlane) -> Iterator[str]:
    sandbox_id = dp.create_sandbox("hostile").sandbox_id
    dp.wait_until_healthy(sandbox_id)
    yield sandbox_id
    dp.delete_sandbox(sandbox_id)


def _still_serving(dp: DataPlane, sid: str) -> None:
    assert dp.health(sid).ok
    assert dp.execute(sid, "print(6 * 7)", timeout=10).stdout == "42\n"


def test_100_mb_of_output_arrives_intact_and_the_server_stays_up(dp: DataPlane, sid: str) -> None:
    # The emulator has no output cap (like the service, as far as documented): the whole
    # 100 MB travels in one JSON answer. It must arrive intact, not kill anything.
    ex = dp.execute(sid, "import sys\nfor _ in range(100): sys.stdout.write('x' * 1_000_000)")
    assert ex.ok
    assert len(ex.stdout) == 100_000_000
    assert set(ex.stdout) == {"x"}
    del ex
    _still_serving(dp, sid)


def test_100_mb_of_output_arrives_intact_under_a_1_gb_memory_limit() -> None:
    # ipykernel once sent a cell's whole output as one message (and IPython kept a copy):
    # under 1 GB that ran out of memory and the output vanished with status "ok".
    with (
        LocalEmulator(EmulatorSettings(memory_mb=1024, spare_kernels=0)) as config,
        ControlPlane(config) as cp,
        DataPlane(config) as plane,
    ):
        cp.create_template("small")
        sandbox = plane.create_sandbox("small").sandbox_id
        plane.wait_until_healthy(sandbox)
        code = "import sys\nfor _ in range(100): sys.stdout.write('x' * 1_000_000)"
        for _ in range(2):  # and again: no output is kept in the kernel between cells
            ex = plane.execute(sandbox, code)
            assert (ex.ok, len(ex.stdout), ex.stderr) == (True, 100_000_000, "")
            del ex
        _still_serving(plane, sandbox)


def test_output_the_kernel_could_not_send_is_reported_not_lost_silently(
    dp: DataPlane, sid: str
) -> None:
    # Make the kernel's send of stdout fail as it does when memory runs out.
    code = (
        "import sys\n"
        "session = sys.stdout.session\n"
        "send = session.send\n"
        "def failing(stream, msg, *a, **k):\n"
        "    if msg['msg_type'] == 'stream' and msg['content']['name'] == 'stdout':\n"
        "        raise MemoryError\n"
        "    return send(stream, msg, *a, **k)\n"
        "session.send = failing\n"
        "try:\n"
        "    print('x' * 5000)\n"
        "    sys.stdout.flush()\n"
        "finally:\n"
        "    session.send = send\n"
    )
    ex = dp.execute(sid, code)
    assert ex.stdout == ""
    assert "[output lost" in ex.stderr
    assert "5001 characters of stdout never arrived" in ex.stderr
    _still_serving(dp, sid)


def test_command_output_over_the_cap_is_truncated_with_a_note(dp: DataPlane, sid: str) -> None:
    done = dp.run_command(sid, "head -c 17000000 /dev/zero | tr '\\0' x")
    assert len(done.stdout) == 16 * 1024 * 1024
    assert f"output truncated: {17_000_000 - 16 * 1024 * 1024} bytes of stdout" in done.stderr


def test_non_utf8_bytes_on_stdout_are_replaced_not_fatal(dp: DataPlane, sid: str) -> None:
    ex = dp.execute(sid, "import os, time\nos.write(1, b'a\\xff\\xfeb\\n')\ntime.sleep(0.3)")
    assert ex.ok
    assert ex.stdout.startswith("a")
    assert ex.stdout.endswith("b\n")
    assert "\ufffd" in ex.stdout
    cmd = dp.run_command(sid, r"printf 'a\xff\xfeb\n'; printf '\xc3' >&2")
    assert cmd.exit_code == 0
    assert cmd.stdout.startswith("a")
    assert "\ufffd" in cmd.stdout
    assert cmd.stderr == "\ufffd"
    _still_serving(dp, sid)


def _contained(emulator: LocalEmulator) -> bool:
    core = emulator.core
    assert core is not None
    return core.cgroups is not None or core.uid is not None or os.geteuid() != 0


def test_fork_bomb_is_stopped_and_the_server_stays_up(
    emu: tuple[LocalEmulator, Config], dp: DataPlane, sid: str
) -> None:
    if not _contained(emu[0]):
        pytest.skip("root without a pids cgroup: RLIMIT_NPROC would not stop a fork bomb")
    # The kernel first: a new one cannot start in a sandbox whose processes a bomb fills
    # (the sandbox's spare kernel may not be ready yet on a busy machine).
    assert dp.execute(sid, "0").ok
    bomb = dp.run_command(sid, "b() { b | b & }; b; sleep 1", timeout=3)
    assert bomb.status in ("completed", "timeout")
    ex = dp.execute(
        sid,
        "import os, time\nn = 0\ntry:\n"
        "    while n < 5000:\n"
        "        if os.fork() == 0:\n            time.sleep(1); os._exit(0)\n"
        "        n += 1\n"
        "except OSError as e:\n    print('refused', type(e).__name__)\n",
        timeout=20,
    )
    assert ex.stdout.startswith("refused") or ex.status == "timeout", (ex.status, ex.stdout)
    dp.stop_sandbox(sid)  # kills every process of the sandbox
    other = dp.create_sandbox("hostile").sandbox_id
    try:
        dp.wait_until_healthy(other)
        _still_serving(dp, other)
    finally:
        dp.delete_sandbox(other)


def test_memory_hog_is_a_memory_error_and_state_survives(dp: DataPlane, sid: str) -> None:
    assert dp.execute(sid, "keep = 'k'").ok
    ex = dp.execute(sid, "hog = bytearray(8 * 1024 ** 3)")
    assert ex.status == "error"
    assert ex.error is not None
    assert ex.error.name == "MemoryError"
    assert dp.execute(sid, "keep").text == "'k'"


def test_infinite_loop_times_out_and_the_context_stays_usable(dp: DataPlane, sid: str) -> None:
    ctx = dp.create_context(sid)
    assert dp.execute(sid, "keep = 5", context_id=ctx.id).ok
    ex = dp.execute(sid, "while True:\n    pass", context_id=ctx.id, timeout=2)
    assert ex.status == "timeout"
    assert ex.error is not None
    assert ex.error.name == "TimeoutError"
    assert dp.execute(sid, "keep * 2", context_id=ctx.id).text == "10"


def test_os_exit_reports_the_context_dead(dp: DataPlane, sid: str) -> None:
    ctx = dp.create_context(sid)
    with pytest.raises(ServerError) as info:
        dp.execute(sid, "import os; os._exit(1)", context_id=ctx.id)
    assert info.value.code == "ERR_CONTEXT_LOST"
    assert "lost" in str(info.value)
    with pytest.raises(NotFoundError):
        dp.execute(sid, "1", context_id=ctx.id)
    _still_serving(dp, sid)


def test_os_exit_through_the_facade_sets_state_reset(emu: tuple[LocalEmulator, Config]) -> None:
    with CodeInterpreter(emu[1], owner="h" + uuid.uuid4().hex[:7]) as ci:
        assert ci.execute_code("x = 1").ok
        dead = ci.execute_code("import os; os._exit(1)")  # the code's error: data, not raised
        assert dead.error is not None
        assert dead.error.name == "DeadKernelError"
        assert dead.state_reset is True
        after = ci.execute_code("print('x' in globals())")
        assert after.stdout == "False\n"
        assert after.state_reset is True
        assert ci.execute_code("1").state_reset is False


def test_deep_recursion(dp: DataPlane, sid: str) -> None:
    ex = dp.execute(sid, "def f(n):\n    return f(n + 1)\nf(0)")
    assert ex.error is not None
    assert ex.error.name == "RecursionError"
    # (With the limit raised to 10**5 the execute times out instead: IPython spends the
    # whole timeout formatting 100,000 frames of traceback -- slow, but still an answer.)
    _still_serving(dp, sid)


def test_path_traversal_and_symlink_escapes_are_refused(
    dp: DataPlane, sid: str, tmp_path: Path
) -> None:
    for path in ("/etc/passwd", "/home/user/../../etc/passwd", "../x", "a/../../b"):
        with pytest.raises(BadRequestError):
            dp.read_file(sid, path)
        with pytest.raises(BadRequestError):
            dp.write_file(sid, path, "x")
        with pytest.raises(BadRequestError):
            dp.stat(sid, path)
    with pytest.raises(BadRequestError):
        dp.list_files(sid, "/")
    assert dp.execute(
        sid, "import os; os.symlink('/etc', 'link'); os.symlink('/etc/passwd', 'pw')"
    ).ok
    for path in ("link/passwd", "/home/user/pw"):
        with pytest.raises(BadRequestError):
            dp.read_file(sid, path)
        with pytest.raises(BadRequestError):
            dp.download(sid, path, tmp_path / "out")
    with pytest.raises(BadRequestError):
        dp.write_file(sid, "link/evil", "x")
    assert not os.path.exists("/etc/evil")
    local = tmp_path / "evil2"
    local.write_bytes(b"x")
    with pytest.raises(BadRequestError):
        dp.upload(sid, local, "link/evil2")
    assert not os.path.exists("/etc/evil2")
    with pytest.raises(BadRequestError):
        dp.move(sid, "pw", "/var/stolen")
    # the sandbox's own /tmp takes the link itself, never what it points at
    stolen = f"stolen-{os.getpid()}-{id(tmp_path)}"
    assert dp.move(sid, "pw", f"/tmp/{stolen}").type == "symlink"
    assert not os.path.lexists(f"/tmp/{stolen}")
    assert os.path.getsize("/etc/passwd") > 0
    with pytest.raises(BadRequestError):
        dp.mkdir(sid, "link/newdir")
    assert not os.path.exists("/etc/newdir")
    with pytest.raises(BadRequestError):
        dp.remove(sid, "link/hosts")
    assert os.path.exists("/etc/hosts")
    assert not (tmp_path / "out").exists()
    _still_serving(dp, sid)


def test_oversized_request_bodies_are_413(dp: DataPlane, sid: str, tmp_path: Path) -> None:
    with pytest.raises(PayloadTooLargeError):
        dp.write_file(sid, "/home/user/big.bin", os.urandom(UPLOAD_LIMIT + 1))
    big = tmp_path / "big.bin"
    with big.open("wb") as out:
        out.truncate(UPLOAD_LIMIT + 1024 * 1024)
    with pytest.raises(PayloadTooLargeError):
        dp.upload(sid, big, "/home/user/big.bin")
    with pytest.raises(NotFoundError):
        dp.stat(sid, "/home/user/big.bin")  # nothing half-written left behind
    # 20 MB of code is not refused by size; it runs (a comment) and the server is fine
    ex = dp.execute(sid, "x = 1  # " + "a" * 20_000_000 + "\nprint(x)")
    assert ex.stdout == "1\n"
    _still_serving(dp, sid)


def test_unknown_language_is_a_clear_error(dp: DataPlane, sid: str) -> None:
    with pytest.raises((InvalidArgumentError, BadRequestError)) as info:
        dp.execute(sid, "DISPLAY 'HI'", language="cobol")
    assert "cobol" in str(info.value)
    with pytest.raises((InvalidArgumentError, BadRequestError)) as info2:
        dp.create_context(sid, language="cobol")
    assert "cobol" in str(info2.value)
    _still_serving(dp, sid)


def test_empty_and_blank_code(dp: DataPlane, sid: str) -> None:
    for code in ("", "   \n\n", "# only a comment"):
        ex = dp.execute(sid, code)
        assert ex.ok, code
        assert ex.stdout == ""
        assert ex.results == []
        assert ex.error is None


def test_unusual_unicode_round_trips(dp: DataPlane, sid: str) -> None:
    text = "héllo 🐍 \u202e עברית \u0000 zero\u200bwidth 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \U0010ffff"
    ex = dp.execute(sid, f"s = {text!r}\nprint(s)\ns")
    assert ex.ok
    assert ex.stdout == text + "\n"
    assert ex.text == repr(text)
    name = "/home/user/ünïcødé 🐍 名前.txt"
    dp.write_file(sid, name, text)
    assert dp.read_file(sid, name).content == text.encode()
    assert any(e.name == "ünïcødé 🐍 名前.txt" for e in dp.list_files(sid, "/home/user"))
    # a lone surrogate cannot be UTF-8 JSON: a typed error naming the problem, sent nowhere
    with pytest.raises(InvalidArgumentError, match="surrogate"):
        dp.execute(sid, "'\udcff'")
    with pytest.raises(InvalidArgumentError):
        dp.write_file(sid, "/home/user/s.txt", "\udcff")
    # escaped in the source it is fine: the kernel builds it
    ex = dp.execute(sid, "print('\\udcff'.encode('utf-8', 'surrogatepass'))")
    assert ex.stdout == "b'\\xed\\xb3\\xbf'\n"
    _still_serving(dp, sid)
