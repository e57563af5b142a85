"""Checked by mypy --strict in tests/test_typing.py, never run: the public surface is typed
as it behaves (the E2B shim's class-and-instance methods, `commands.run`'s `background`
overloads, the facade, a lease, the planes' jobs)."""

from __future__ import annotations

from typing_extensions import assert_type

from agentrun_ci import (
    AsyncCodeInterpreter,
    AsyncLease,
    CodeInterpreter,
    CommandResult,
    DataPlane,
    Execution,
    Job,
    JobInfo,
    Lease,
    Sandbox,
    e2b,
)


def shim_sync(sbx: e2b.Sandbox) -> None:
    # a method that is both a class method (by id) and an instance method
    assert_type(e2b.Sandbox.kill("sandbox-id"), bool)
    assert_type(sbx.kill(), bool)
    assert_type(e2b.Sandbox.get_info("sandbox-id"), e2b.SandboxInfo)
    assert_type(sbx.get_info(), e2b.SandboxInfo)
    assert_type(e2b.Sandbox.connect("sandbox-id"), e2b.Sandbox)
    assert_type(sbx.connect(), e2b.Sandbox)
    assert_type(e2b.Sandbox.pause("sandbox-id"), bool)
    assert_type(sbx.set_timeout(60), None)
    assert_type(sbx.get_metrics(), list[e2b.SandboxMetrics])
    # commands: the return type follows `background`
    assert_type(sbx.commands.run("ls"), CommandResult)
    assert_type(sbx.commands.run("sleep 9", background=True), e2b.CommandHandle)
    handle = sbx.commands.run("sleep 9", background=True)
    assert_type(handle.pid, int)
    assert_type(handle.wait(), CommandResult)
    assert_type(sbx.commands.list(), list[e2b.ProcessInfo])
    assert_type(sbx.commands.kill(1), bool)
    assert_type(sbx.run_code("1"), e2b.Execution)
    assert_type(sbx.git.status("/home/user/repo"), e2b.GitStatus)


async def shim_async(sbx: e2b.AsyncSandbox) -> None:
    assert_type(await e2b.AsyncSandbox.kill("sandbox-id"), bool)
    assert_type(await sbx.kill(), bool)
    assert_type(await e2b.AsyncSandbox.get_info("sandbox-id"), e2b.SandboxInfo)
    assert_type(await sbx.get_info(), e2b.SandboxInfo)
    assert_type(await e2b.AsyncSandbox.connect("sandbox-id"), e2b.AsyncSandbox)
    assert_type(await sbx.connect(), e2b.AsyncSandbox)
    assert_type(await sbx.commands.run("ls"), CommandResult)
    handle = await sbx.commands.run("sleep 9", background=True)
    assert_type(handle, e2b.AsyncCommandHandle)
    assert_type(await handle.wait(), CommandResult)
    assert_type(await sbx.run_code("1"), e2b.Execution)
    assert_type(await sbx.git.branches("/home/user/repo"), e2b.GitBranches)


def facade(ci: CodeInterpreter, lease: Lease, plane: DataPlane) -> None:
    assert_type(ci.execute_code("1"), Execution)
    assert_type(ci.run_command("ls"), CommandResult)
    assert_type(lease.execute_code("1"), Execution)
    assert_type(lease.start_job("sleep 9"), Job)
    assert_type(lease.read_job(1, stdout_offset=0, wait=1.0), Job)
    assert_type(lease.kill_job(1), bool)
    assert_type(lease.list_jobs(), list[JobInfo])
    assert_type(plane.start_job("sandbox-id", "sleep 9"), Job)
    assert_type(ci.pause_session(), Sandbox)
    assert_type(lease.resume_session(timeout=5), Sandbox)


async def facade_async(ci: AsyncCodeInterpreter, lease: AsyncLease) -> None:
    assert_type(await ci.execute_code("1"), Execution)
    assert_type(await lease.execute_code("1"), Execution)
    assert_type(await lease.start_job("sleep 9"), Job)
    assert_type(await lease.list_jobs(), list[JobInfo])
    assert_type(await ci.pause_session(), Sandbox)
    assert_type(await lease.resume_session(), Sandbox)
