"""Resource usage: `Execution.usage` from the emulator's measurement, tolerant parsing of
what the cloud reports, the MCP result's `usage`, and `agentrun-ci sessions list`."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentrun_ci import (
    Config,
    ControlPlane,
    DataPlane,
    Execution,
    ProcessInfo,
    Usage,
)

pytest.importorskip("jupyter_client")

# Busy until the kernel's own CPU clock moved 0.3 s: a CPU amount, not a duration.
BURN = "import time\n_t = time.process_time()\nwhile time.process_time() - _t < 0.3:\n    pass\n"


def test_usage_from_wire_is_tolerant() -> None:
    assert Usage.from_wire(None) == Usage()
    assert not Usage.from_wire("1 GB").known
    usage = Usage.from_wire({"wallTime": 1.5, "cpu_time": "0.25", "peakMemoryMb": 300})
    assert (usage.wall_time, usage.cpu_time, usage.peak_memory_mb) == (1.5, 0.25, 300.0)
    assert usage.memory_mb is None
    assert usage.as_dict() == {"wall_time": 1.5, "cpu_time": 0.25, "peak_memory_mb": 300.0}
    assert Usage.from_wire({"memoryMb": True, "cpuPercent": "n/a"}) == Usage()


def test_cloud_shapes_without_usage_leave_every_field_none() -> None:
    execution = Execution.from_wire(
        {"results": [{"type": "stdout", "text": "hi\n"}, {"type": "endOfExecution"}]}
    )
    assert execution.usage == Usage()
    assert not execution.usage.known
    # the process shape the cloud documents: current use
    process = ProcessInfo.from_wire(
        {"processId": 7, "resourceUsage": {"cpuPercent": 12.5, "memoryMb": 256}}
    )
    assert (process.usage.cpu_percent, process.usage.memory_mb) == (12.5, 256.0)
    assert ProcessInfo.from_wire({"pid": 7}).usage == Usage()
    # (inferred) usage on the endOfExecution event is read too
    inferred = Execution.from_wire(
        {"results": [{"type": "endOfExecution", "resourceUsage": {"memoryMb": 64}}]}
    )
    assert inferred.usage.memory_mb == 64.0


@pytest.fixture
def session(emulator: Config) -> Iterator[tuple[DataPlane, str]]:
    name = "usage" + uuid.uuid4().hex[:6]
    with ControlPlane(emulator) as control, DataPlane(emulator) as data:
        control.create_template(name, memory=2048)
        sandbox_id = data.create_sandbox(name).sandbox_id
        try:
            data.wait_until_healthy(sandbox_id)
            yield data, sandbox_id
        finally:
            data.delete_sandbox(sandbox_id)
            control.delete_template(name)


def test_the_emulator_measures_each_run(session: tuple[DataPlane, str]) -> None:
    data, sandbox_id = session
    heavy = data.execute(sandbox_id, "block = bytearray(200 * 1024 * 1024)\n" + BURN)
    assert heavy.ok, heavy.error
    usage = heavy.usage
    assert usage.wall_time is not None
    assert usage.wall_time > 0
    assert usage.cpu_time is not None
    assert usage.cpu_time >= 0.25
    assert usage.peak_memory_mb is not None
    assert usage.peak_memory_mb >= 200
    assert heavy.request_id  # the data plane's id, for the log line and support
    # the peak is the run's, not the context's: after the block is freed it is lower
    data.execute(sandbox_id, "del block", context_id=heavy.context_id)
    light = data.execute(sandbox_id, "1 + 1", context_id=heavy.context_id)
    assert light.usage.peak_memory_mb is not None
    assert light.usage.peak_memory_mb < usage.peak_memory_mb - 100
    # the kernel as a process: its current use, as the cloud reports it
    kernels = [p for p in data.list_processes(sandbox_id) if (p.tag or "").startswith("context:")]
    assert kernels
    current = data.get_process(sandbox_id, kernels[0].pid).usage
    assert current.memory_mb is not None
    assert current.memory_mb > 0
    assert current.cpu_percent is not None
    assert current.cpu_percent >= 0


def test_sessions_list_shows_current_use(
    session: tuple[DataPlane, str], emulator: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentrun_ci.cli import main

    data, sandbox_id = session
    data.execute(sandbox_id, "x = 1")  # a context: one kernel process
    assert emulator.control_endpoint
    assert emulator.data_endpoint
    monkeypatch.setenv("AGENTRUN_CONTROL_ENDPOINT", emulator.control_endpoint)
    monkeypatch.setenv("AGENTRUN_DATA_ENDPOINT", emulator.data_endpoint)
    monkeypatch.setenv("AGENTRUN_ACCOUNT_ID", "local")
    out = io.StringIO()
    assert main(["sessions", "list"], out=out, err=io.StringIO()) == 0
    rows = {line.split("\t")[0]: line.split("\t") for line in out.getvalue().splitlines()}
    use = rows[sandbox_id][3]
    assert re.fullmatch(r"memory=[0-9.]+MiB cpu=[0-9]+%", use), use
    memory = float(use.split()[0].removeprefix("memory=").removesuffix("MiB"))
    assert memory > 0


@pytest.mark.anyio
async def test_the_mcp_result_carries_usage(emulator: Config) -> None:
    pytest.importorskip("mcp")
    from mcp import Client

    from agentrun_ci_mcp.server import ServerOptions, build_server

    options = ServerOptions(config=emulator, backend="cloud", owner="use" + uuid.uuid4().hex[:4])
    mcp, _state = build_server(options)
    async with Client(mcp) as client:
        result = await client.call_tool("run_code", {"code": BURN})
    assert not result.is_error, result.content
    usage = result.structured_content["usage"]
    assert set(usage) == {"wall_time_s", "cpu_time_s", "peak_memory_mb"}
    assert usage["cpu_time_s"] >= 0.25
    assert usage["peak_memory_mb"] > 0


def test_the_observability_doc_python_blocks_run_as_written() -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    doc = Path(__file__).resolve().parent.parent / "docs" / "observability.md"
    blocks = re.findall(r"^```python\n(.*?)^```", doc.read_text(encoding="utf-8"), re.M | re.S)
    assert blocks
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AGENTRUN_", "ALIBABA_CLOUD_", "FC_"))  # the local default
    }
    for code in blocks:
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        wall, cpu, peak = (float(v) for v in done.stdout.split())  # all measured locally
        assert wall > 0
        assert cpu >= 0
        assert peak > 0


# --------------------------------------------------------------- the gauges, process by process

_CHILD = """
import sys
held = []
for line in sys.stdin:
    if line.startswith("grow"):
        held.append(bytearray(int(line.split()[1]) * 1024 * 1024))
        for i in range(0, len(held[-1]), 4096):  # resident, page by page
            held[-1][i] = 1
    elif line.startswith("free"):
        held.clear()
    print("ok", flush=True)
"""


def test_a_deleted_sandbox_leaves_no_proc_descriptor_open(emulator: Config) -> None:
    """The emulator (in this process) keeps each measured process's /proc files open
    between runs; the sandbox's end closes them."""
    name = "usage" + uuid.uuid4().hex[:6]
    with ControlPlane(emulator) as control, DataPlane(emulator) as data:
        control.create_template(name)
        try:
            sandbox_id = data.create_sandbox(name).sandbox_id
            try:
                first = data.execute(sandbox_id, "import os; os.getpid()")
                assert first.ok, first.error
                data.execute(sandbox_id, "1", context_id=first.context_id)
                # a context's process is its launcher; the kernel is in the launcher's group
                from agentrun_ci.local._limits import group_members

                kernels = [
                    pid
                    for p in data.list_processes(sandbox_id)
                    if (p.tag or "").startswith("context:")
                    for pid in group_members(int(p.pid))
                ]
                assert kernels
                assert any(_proc_fds(pid) for pid in kernels)  # kept between the runs
            finally:
                data.delete_sandbox(sandbox_id)
            assert all(_proc_fds(pid) == [] for pid in kernels)
        finally:
            control.delete_template(name)


def test_a_run_is_measured_on_the_kernel_not_on_its_launchers(
    session: tuple[DataPlane, str],
) -> None:
    """A context's kernel is launched through a chain (the jail's launcher, bubblewrap, our
    init) that only waits on it: a run reads the kernel's /proc files, not theirs."""
    from agentrun_ci.local._limits import group_members

    data, sandbox_id = session
    assert data.execute(sandbox_id, "x = 1").ok
    (launcher,) = [
        int(p.pid) for p in data.list_processes(sandbox_id) if (p.tag or "").startswith("context:")
    ]
    group = group_members(launcher)
    if len(group) == 1:
        pytest.skip("the kernel leads its own group here (no jail): it has no launcher")
    measured = [pid for pid in group if _proc_fds(pid)]
    assert len(measured) == 1, (group, measured)
    assert measured[0] != launcher
    assert b"kernelapp" in _cmdline(measured[0])  # the kernel itself


def test_other_kernels_are_not_measured() -> None:
    """A run is measured on its own kernel, not another context's (whose runs are its
    own), nor the spare kernel a sandbox keeps warm from its second context on."""
    from support import running_emulator, wait_until

    from agentrun_ci.local._limits import group_members

    with running_emulator() as (local, config), DataPlane(config) as data:
        with ControlPlane(config) as control:
            control.create_template("spares")
        sandbox_id = data.create_sandbox("spares").sandbox_id
        first = data.create_context(sandbox_id)
        second = data.create_context(sandbox_id)
        assert local.core is not None
        sandbox = local.core.sandboxes[sandbox_id]
        if sandbox.launch is None or sandbox.launch.jail is None:
            pytest.skip("no jail here: a kernel leads its own group")
        spares = wait_until(lambda: list(sandbox.spares), "a spare kernel to be ready")
        assert data.execute(sandbox_id, "x = 1", context_id=first.id).ok
        kernel = sandbox.contexts[first.id].kernel
        assert kernel.pgid is not None
        assert any(_proc_fds(pid) for pid in group_members(kernel.pgid))  # measured
        others = [*spares, sandbox.contexts[second.id].kernel]
        for other in others:
            assert other.pgid is not None
            assert all(_proc_fds(pid) == [] for pid in group_members(other.pgid))
        data.delete_sandbox(sandbox_id)


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:  # it has exited
        return b""


@pytest.fixture
def child() -> Iterator[subprocess.Popen[str]]:
    with subprocess.Popen(
        [sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:  # its pipes closed on the way out
        try:
            yield proc
        finally:
            proc.kill()


def _ask(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == "ok\n"


def _proc_fds(pid: int) -> list[str]:
    """This process's descriptors open on /proc/<pid>/..."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(f"/proc/{pid}/"):
                found.append(target)
    return found


needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")


@needs_proc
def test_gauges_measure_a_peak_and_keep_their_files_open_between_runs(
    child: subprocess.Popen[str],
) -> None:
    from agentrun_ci.local._usage import Gauges

    _ask(child, "warm")
    gauges = Gauges()
    meter = gauges.start([child.pid])
    opened = sorted(_proc_fds(child.pid))
    assert opened == sorted(f"/proc/{child.pid}/{n}" for n in ("stat", "status", "clear_refs"))
    _ask(child, "grow 64")
    grown = meter.finish()
    assert grown["peakMemoryMb"] >= 64
    # the block freed, the next run's peak is its own (the peak was reset as it started)
    _ask(child, "free")
    meter = gauges.start([child.pid])
    _ask(child, "ping")
    light = meter.finish()
    assert light["peakMemoryMb"] < grown["peakMemoryMb"] - 32
    assert sorted(_proc_fds(child.pid)) == opened  # read again, not opened again
    gauges.close()
    assert _proc_fds(child.pid) == []
    # a run that starts after the sandbox ended (it raced the delete) opens nothing
    late = gauges.start([child.pid])
    assert _proc_fds(child.pid) == []
    assert set(late.finish()) == {"wallTime"}


@needs_proc
def test_an_untouched_member_counts_with_its_resident_set(
    child: subprocess.Popen[str],
) -> None:
    """A member that took no page fault during the run (its stat said so) is counted with
    its resident set, which is its reset peak: the same sum `status` would give."""
    from agentrun_ci.local._usage import Gauges

    _ask(child, "grow 32")
    gauges = Gauges()
    try:
        meter = gauges.start([child.pid])
        idle = meter.finish()  # nothing ran in between
        meter = gauges.start([child.pid])
        _ask(child, "ping")  # it ran (and faulted, if only its stack): status is read
        ran = meter.finish()
    finally:
        gauges.close()
    assert idle["peakMemoryMb"] >= 32
    assert abs(idle["peakMemoryMb"] - ran["peakMemoryMb"]) < 8
    assert idle["cpuTime"] == 0


@needs_proc
def test_a_member_that_exits_is_dropped_and_its_files_closed(
    child: subprocess.Popen[str],
) -> None:
    from agentrun_ci.local._usage import Gauges

    _ask(child, "warm")
    gauges = Gauges()
    try:
        mine = os.getpid()
        meter = gauges.start([child.pid, mine])
        before = len(_proc_fds(child.pid))
        assert before == 3
        fd_count = len(os.listdir("/proc/self/fd"))
        child.kill()
        child.wait()
        usage = meter.finish()  # its files now fail to read: the run counts the others
        assert "cpuTime" in usage
        assert usage["peakMemoryMb"] > 0
        gauges.start([mine]).finish()  # the next run closes what it cannot read any more
        assert len(os.listdir("/proc/self/fd")) == fd_count - 3
    finally:
        gauges.close()


@needs_proc
def test_launch_chain_is_the_group_from_its_launcher_down() -> None:
    from agentrun_ci.local._limits import group_members
    from agentrun_ci.local._usage import launch_chain

    def started(script: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            ["sh", "-c", script], start_new_session=True, stdout=subprocess.PIPE
        )

    # sh -> sh -> sleep, one group: the two shells launch the sleep
    chain = started("sh -c 'sleep 60; :'; :")
    other = started("sleep 60 & sleep 60 & wait")  # sh with two children: no chain
    try:
        deadline = time.monotonic() + 60
        while len(group_members(other.pid)) < 3 or not any(
            _cmdline(pid).startswith(b"sleep") for pid in group_members(chain.pid)
        ):
            assert time.monotonic() < deadline, "the shells did not start their sleeps"
            time.sleep(0.01)
        members = group_members(chain.pid)
        found = launch_chain(chain.pid, [*members, os.getpid()])  # others are ignored
        assert sorted(found) == sorted(members)
        assert found[0] == chain.pid  # the launcher first, its child, the last one last
        assert _cmdline(found[1]).startswith(b"sh")
        assert _cmdline(found[2]).startswith(b"sleep")
        assert launch_chain(other.pid, group_members(other.pid)) == ()
        assert launch_chain(chain.pid, [chain.pid]) == ()  # nothing launched
    finally:
        for proc in (chain, other):
            os.killpg(proc.pid, 9)
            proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()


def test_gauges_list_the_sandbox_anew_only_when_its_task_count_moves(tmp_path: Path) -> None:
    from agentrun_ci.local._usage import Gauges

    count = tmp_path / "pids.current"
    count.write_text("3\n")
    reads: list[list[int]] = []
    listed = [[11, 12, 13]]

    def read() -> list[int]:
        reads.append(list(listed[-1]))
        return list(listed[-1])

    gauges = Gauges()
    try:
        assert gauges.listing(str(count), read) == [11, 12, 13]
        assert gauges.listing(str(count), read) == [11, 12, 13]
        assert len(reads) == 1  # the count did not move: the same listing
        listed.append([11, 12, 13, 14])
        count.write_text("4\n")  # read again through the descriptor kept open
        assert gauges.listing(str(count), read) == [11, 12, 13, 14]
        assert len(reads) == 2
        # a listed process has gone (its files cannot be opened): listed anew next time
        gauges.start([2**22 + 12345])  # no such pid
        assert gauges.listing(str(count), read) == [11, 12, 13, 14]
        assert len(reads) == 3
        count.write_text("unreadable\n")  # no count: always anew
        gauges.listing(str(count), read)
        gauges.listing(str(count), read)
        assert len(reads) == 5
    finally:
        gauges.close()
    gauges.listing(str(count), read)  # closed: reads anew, keeps nothing open
    assert len(reads) == 6
