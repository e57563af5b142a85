"""Background jobs (`agentrun_ci._jobs`): the scripts, their parsing, and jobs in real sandboxes."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator

import pytest
from support import sandbox_on

from agentrun_ci import Config, DataPlane, InvalidArgumentError, NotFoundError, _jobs

# ------------------------------------------------------------------ pure


def _report(
    state: str, code: str, out: bytes, err: bytes, sizes: tuple[int, int] | None = None
) -> str:
    size1, size2 = sizes or (len(out), len(err))
    return (
        f"AGENTRUN-JOB {state} {code} {size1} {size2} {len(out)} {len(err)}\n"
        f"{base64.encodebytes(out).decode()}--\n{base64.encodebytes(err).decode()}"
    )


def test_a_report_parses_into_state_output_and_next_offsets() -> None:
    job = _jobs.parse_job(7, _report("running", "-", b"\xff\xfeabc", b"e"), stdout_offset=10)
    assert job is not None
    assert (job.pid, job.state, job.exit_code, job.running) == (7, "running", None, True)
    assert (job.stdout, job.stderr) == (b"\xff\xfeabc", b"e")
    assert (job.stdout_offset, job.stderr_offset) == (15, 1)


def test_an_empty_stream_and_an_exit_code_parse() -> None:
    job = _jobs.parse_job(3, _report("exited", "137", b"", b""))
    assert job is not None
    assert (job.state, job.exit_code, job.stdout, job.stderr) == ("exited", 137, b"", b"")
    assert job.error == "signal: killed"


def test_more_output_than_one_chunk_says_more() -> None:
    job = _jobs.parse_job(3, _report("exited", "0", b"ab", b"", sizes=(5, 0)))
    assert job is not None
    assert job.more
    assert job.stdout_offset == 2


def test_a_start_report_carries_the_pid() -> None:
    job = _jobs.parse_job(None, "AGENTRUN-PID 42\n" + _report("exited", "0", b"hi\n", b""))
    assert job is not None
    assert job.pid == 42


def test_no_such_job_and_a_failed_start_are_told_apart() -> None:
    assert _jobs.parse_job(5, "AGENTRUN-JOB none\n") is None
    with pytest.raises(_jobs.JobError, match="mkfifo failed"):
        _jobs.parse_job(None, "AGENTRUN-JOB error mkfifo failed\n")
    with pytest.raises(_jobs.JobError, match="no job report"):
        _jobs.parse_job(5, "bash: base64: command not found\n")


def test_output_cut_short_is_an_error_not_silently_less() -> None:
    text = _report("running", "-", b"abcdef", b"").replace("6 0\n", "9 0\n", 1)
    with pytest.raises(_jobs.JobError, match="cut short"):
        _jobs.parse_job(1, text)


def test_bad_arguments_are_refused_by_name() -> None:
    with pytest.raises(InvalidArgumentError, match="pid"):
        _jobs.poll_script("1; rm -rf /")
    with pytest.raises(InvalidArgumentError, match="pid"):
        _jobs.kill_script(0)
    with pytest.raises(InvalidArgumentError, match="wait"):
        _jobs.poll_script(1, wait=25)
    with pytest.raises(InvalidArgumentError, match="offset"):
        _jobs.poll_script(1, stdout_offset=-1)
    with pytest.raises(InvalidArgumentError, match="environment variable name"):
        _jobs.start_script("true", envs={"A B": "x"})
    with pytest.raises(InvalidArgumentError, match="non-empty"):
        _jobs.start_script("  ")


def test_list_output_parses_and_skips_noise() -> None:
    meta = base64.b64encode(b'{"command": "sleep 9", "cwd": "/home/user", "envs": {"A": "1"}}')
    text = f"AGENTRUN-JOB list\nAGENTRUN-JOB 12 {meta.decode()}\nnoise\n"
    [job] = _jobs.parse_list(text)
    assert (job.pid, job.command, job.cwd, job.envs) == (12, "sleep 9", "/home/user", {"A": "1"})


# ------------------------------------------------------------------ in a sandbox


@pytest.fixture
def sandbox(emulator: Config) -> Iterator[tuple[DataPlane, str]]:
    with sandbox_on(emulator) as (plane, sandbox_id):
        yield plane, sandbox_id


def _until_end(plane: DataPlane, sandbox_id: str, job: _jobs.Job) -> tuple[bytes, bytes, _jobs.Job]:
    out, err = job.stdout, job.stderr
    while job.running or job.more:
        job = plane.read_job(
            sandbox_id,
            job.pid,
            stdout_offset=job.stdout_offset,
            stderr_offset=job.stderr_offset,
            wait=0 if job.more else 5,
        )
        out, err = out + job.stdout, err + job.stderr
    return out, err, job


def test_a_quick_job_ends_within_its_start_call(sandbox: tuple[DataPlane, str]) -> None:
    plane, sid = sandbox
    job = plane.start_job(sid, "echo out; echo err >&2; exit 3", wait=10)
    assert (job.state, job.exit_code, job.stdout, job.stderr) == ("exited", 3, b"out\n", b"err\n")
    assert job.pid > 0


def test_output_arrives_in_order_across_polls_bytes_intact(sandbox: tuple[DataPlane, str]) -> None:
    plane, sid = sandbox
    job = plane.start_job(sid, "for i in 1 2 3; do echo $i; sleep 0.2; done; printf '\\377\\376'")
    out, _, end = _until_end(plane, sid, job)
    assert out == b"1\n2\n3\n\xff\xfe"
    assert end.exit_code == 0


def test_envs_and_cwd_apply_to_the_job(sandbox: tuple[DataPlane, str]) -> None:
    plane, sid = sandbox
    plane.mkdir(sid, "/home/user/work")
    job = plane.start_job(
        sid, 'echo "$GREETING" "$PWD"', envs={"GREETING": "a b'c"}, cwd="/home/user/work", wait=10
    )
    assert job.stdout == b"a b'c /home/user/work\n"


def test_stdin_is_written_then_closed(sandbox: tuple[DataPlane, str]) -> None:
    plane, sid = sandbox
    job = plane.start_job(sid, "cat; echo END", stdin=True)
    plane.send_job_stdin(sid, job.pid, "hello ")
    plane.send_job_stdin(sid, job.pid, b"\x00bytes")
    polled = plane.read_job(sid, job.pid, wait=10)
    assert polled.running
    plane.close_job_stdin(sid, job.pid)
    out, _, end = _until_end(plane, sid, polled)
    assert out == b"hello \x00bytesEND\n"
    assert end.exit_code == 0
    with pytest.raises(InvalidArgumentError, match="ended"):
        plane.send_job_stdin(sid, job.pid, "late")
    no_stdin = plane.start_job(sid, "sleep 30")
    with pytest.raises(InvalidArgumentError, match="stdin=True"):
        plane.send_job_stdin(sid, no_stdin.pid, "x")
    assert plane.kill_job(sid, no_stdin.pid)


def test_a_killed_job_is_gone_before_kill_returns(sandbox: tuple[DataPlane, str]) -> None:
    plane, sid = sandbox
    job = plane.start_job(sid, "sleep 300")
    assert job.pid in [j.pid for j in plane.list_jobs(sid)]
    assert plane.kill_job(sid, job.pid)
    assert plane.run_command(sid, f"kill -0 {job.pid}").exit_code != 0
    ended = plane.read_job(sid, job.pid)
    assert (ended.state, ended.exit_code, ended.error) == ("exited", 137, "signal: killed")
    assert job.pid not in [j.pid for j in plane.list_jobs(sid)]
    assert not plane.kill_job(sid, job.pid)
    assert not plane.kill_job(sid, 999_999)


def test_a_job_that_does_not_exist_is_not_found(sandbox: tuple[DataPlane, str]) -> None:
    plane, sid = sandbox
    with pytest.raises(NotFoundError, match="no background job 999999"):
        plane.read_job(sid, 999_999)


@pytest.mark.slow
def test_a_five_minute_job_polled_on_both_paths(emulator: Config) -> None:
    """A job of 5 minutes (ten 30 s caps), its output read while it runs, through the E2B
    shim on the local backend and through a Config that points at an emulator (the code
    path a cloud endpoint takes), side by side."""
    from agentrun_ci import e2b

    script = "for i in $(seq 1 30); do echo tick $i; sleep 10; done; echo done"
    seen: dict[str, list[str]] = {"local": [], "config": []}
    local = e2b.Sandbox.create(backend="local", timeout=900)  # E2B's default life is 300 s
    remote = e2b.Sandbox.create(config=emulator, timeout=900)
    try:
        handles = {
            "local": local.commands.run(script, background=True, timeout=0),
            "config": remote.commands.run(script, background=True, timeout=0),
        }
        started = time.monotonic()
        results = {name: h.wait(on_stdout=seen[name].append) for name, h in handles.items()}
        assert time.monotonic() - started > 290
        for name, result in results.items():
            assert result.exit_code == 0
            assert result.stdout.splitlines() == [*(f"tick {i}" for i in range(1, 31)), "done"]
            assert len(seen[name]) > 10  # delivered while it ran, not at the end
    finally:
        local.kill()
        remote.kill()
        e2b.close_shared()


def _host_pids_running(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if marker.encode() in fh.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_nothing_of_a_job_outlives_its_sandbox(emulator: Config) -> None:
    marker = "31415.926"
    with sandbox_on(emulator) as (plane, sid):
        job = plane.start_job(sid, f"sleep {marker}")
        assert job.running
        assert _host_pids_running(marker)
    deadline = time.monotonic() + 30
    while _host_pids_running(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _host_pids_running(marker)
