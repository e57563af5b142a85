"""The processes job of `Core`: commands (`run_command`), interactive shells on a
pseudo-terminal (`open_tty`, `tty`), and listing and killing a sandbox's processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
import uuid
from typing import TYPE_CHECKING, Any

from ._errors import ApiError, bad_request, not_found
from ._fs import HOME
from ._kernels import KernelError, Launch
from ._limits import kill_group
from ._probe import _close
from ._records import CommandRequest
from ._settings import EmulatorSettings
from ._state import Process, Sandbox, now_iso
from ._threads import blocking
from ._tty import TtySession, controlling_tty, set_size, shell_argv
from ._usage import process_usage

__all__ = ["ProcessesMixin"]

log = logging.getLogger("agentrun_ci.local")


class ProcessesMixin:
    """Commands, terminals and the process list, for `Core`, which inherits them; what
    they use of `Core` is declared here."""

    settings: EmulatorSettings

    if TYPE_CHECKING:

        def _launch(self, sandbox: Sandbox) -> Launch: ...

        @staticmethod
        def _directory(sandbox: Sandbox, launch: Launch, cwd: str | None) -> str: ...

        async def delete_context(self, sandbox: Sandbox, context_id: str) -> None: ...

        def _check_halted(self) -> None: ...

    # ------------------------------------------------------------ processes

    async def run_command(self, sandbox: Sandbox, order: CommandRequest) -> dict[str, Any]:
        command, timeout = order.command, order.timeout
        cap = self.settings.max_exec_timeout
        if timeout <= 0 or timeout > cap:
            raise bad_request(f"timeout must be > 0 and at most {cap:g} seconds (got {timeout:g})")
        cwd_api = order.cwd
        launch = self._launch(sandbox)
        cwd = self._directory(sandbox, launch, cwd_api)
        shell = shutil.which("bash") or "/bin/sh"
        started = time.monotonic()
        try:
            await launch.prepare()
        except KernelError as exc:
            raise ApiError(
                500, "ERR_INTERNAL_SERVER_ERROR", f"sandbox {sandbox.id}: {exc}"
            ) from exc
        # In a PID namespace the command's init outlives the shell while background jobs
        # (`nohup job &`) run, so the shell's exit code comes back through a pipe.
        status_r, status_w = os.pipe() if launch.pid_namespace else (-1, -1)
        # Output goes to unlinked temporary files, not pipes: a background child
        # (`sleep 60 &`) keeps a pipe open and would hold the reply hostage.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                self._check_halted()
                proc = await asyncio.create_subprocess_exec(
                    *launch.argv([shell, "-c", command], cwd=cwd, status_fd=status_w, linger=True),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    cwd=launch.host_cwd(cwd),
                    env=launch.env(launch.inside_home, sandbox.env),
                    start_new_session=True,
                    pass_fds=(status_w,) if status_w >= 0 else (),
                    preexec_fn=launch.preexec(self.settings.cpu_seconds),
                )
            except BaseException:
                _close(status_r)
                raise
            finally:
                _close(status_w)
            record = Process(
                pid=proc.pid,
                command=command,
                cwd=str(cwd_api),
                tag="cmd",
                created_at=now_iso(),
                proc=proc,
            )
            sandbox.processes[proc.pid] = record
            status = "completed"
            pipe = os.fdopen(status_r, "rb", buffering=0) if status_r >= 0 else None
            try:
                code = await asyncio.wait_for(_exit_code(proc, pipe), timeout)
            except asyncio.TimeoutError:
                await blocking(kill_group, proc.pid)
                code = await proc.wait()
                status = "timeout"
            finally:
                if pipe is not None:
                    pipe.close()
            stdout, dropped_out = _read_back(out)
            stderr, dropped_err = _read_back(err)
        for stream, dropped in (("stdout", dropped_out), ("stderr", dropped_err)):
            if dropped:  # never lose output silently
                stderr += (
                    f"\n[output truncated: {dropped} bytes of {stream} dropped; the emulator "
                    f"keeps {_MAX_OUTPUT // 2**20} MB per stream: write big output to a file]\n"
                ).encode()
        if status == "timeout":
            stderr += f"\ncommand exceeded {timeout:g} s and was killed\n".encode()
        record.status = "killed" if status == "timeout" else "completed"
        record.exit_code = code
        if proc.returncode is not None:
            record.proc = None  # else background jobs still run under it: reaped at stop
        sandbox.last_active = time.monotonic()
        elapsed = int((time.monotonic() - started) * 1000)
        return {
            "executionId": str(uuid.uuid4()),
            "status": status,
            "result": {
                "exitCode": 124 if status == "timeout" else code,
                "stdout": stdout.decode("utf-8", "replace"),
                "stderr": stderr.decode("utf-8", "replace"),
                "cwd": str(cwd_api),
                "executionTimeMs": elapsed,
            },
            "executionTimeMs": elapsed,
        }

    async def open_tty(
        self,
        sandbox: Sandbox,
        *,
        cwd: str | None,
        rows: int,
        cols: int,
        envs: dict[str, str],
    ) -> TtySession:
        """Start an interactive shell on a new pseudo-terminal of `rows` x `cols`, in the
        sandbox's jail and registered as one of its processes (tag "tty")."""
        launch = self._launch(sandbox)
        try:
            await launch.prepare()  # the sandbox's namespace holder, which the shell joins
        except KernelError as exc:
            raise ApiError(
                500, "ERR_INTERNAL_SERVER_ERROR", f"sandbox {sandbox.id}: {exc}"
            ) from exc
        inside = self._directory(sandbox, launch, cwd)
        env = launch.env(launch.inside_home, sandbox.env)
        env.update(TERM="xterm-256color", LANG="C.UTF-8", LC_ALL="C.UTF-8")
        env.update(envs)
        master, slave = os.openpty()
        status_r, status_w = os.pipe() if launch.pid_namespace else (-1, -1)
        try:
            set_size(slave, rows, cols)
            # The shell's CPU time adds up over its whole life, like a kernel's.
            preexec = launch.preexec(self.settings.kernel_cpu_seconds)
            self._check_halted()
            proc = await asyncio.create_subprocess_exec(
                *launch.argv(shell_argv(), cwd=inside, status_fd=status_w),
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=launch.host_cwd(inside),
                env=env,
                start_new_session=True,
                pass_fds=(status_w,) if status_w >= 0 else (),
                preexec_fn=controlling_tty(preexec),
            )
        except BaseException:
            _close(master)
            _close(status_r)
            raise
        finally:
            _close(slave)  # else the master never reads EOF when the shell ends
            _close(status_w)
        pipe = os.fdopen(status_r, "rb", buffering=0) if status_r >= 0 else None
        session = TtySession(proc, master, pipe)
        record = Process(
            pid=proc.pid,
            command=" ".join(shell_argv()),
            cwd=cwd or HOME,
            tag="tty",
            created_at=now_iso(),
            proc=proc,
            tty=session,
        )
        sandbox.processes[proc.pid] = record

        def ended(task: asyncio.Task[None]) -> None:
            if record.status == "running":  # a signal's end counts as killed
                code = session.exit_code
                record.status = "killed" if code is not None and code < 0 else "completed"
            record.exit_code = session.exit_code
            record.proc = None

        session.waiter.add_done_callback(ended)
        if sandbox.stopping:  # stopped meanwhile: nothing may outlive it
            await blocking(kill_group, proc.pid)
        sandbox.last_active = time.monotonic()
        return session

    def tty(self, sandbox: Sandbox, pid: int) -> TtySession:
        """The running shell of a `/processes/tty` connection, by its pid (404 if none)."""
        record = sandbox.processes.get(pid)
        if record is None or record.tty is None or record.tty.ended.is_set():
            raise not_found(f"terminal {pid}")
        return record.tty

    def _end_forgotten_ttys(self, sandbox: Sandbox, now: float) -> None:
        """End shells no connection has been attached to for the tty idle time."""
        for record in sandbox.processes.values():
            session = record.tty
            if session is None or session.ended.is_set() or session.last_detached is None:
                continue
            if now - session.last_detached > self.settings.tty_idle_timeout:
                log.info(
                    "sandbox %s: terminal %s left unattached, ending it", sandbox.id, record.pid
                )
                session.last_detached = None
                with contextlib.suppress(OSError):
                    os.killpg(record.pid, 9)

    def processes(self, sandbox: Sandbox) -> list[dict[str, Any]]:
        items = [p.wire() for p in sandbox.processes.values()]
        for ctx in sandbox.contexts.values():
            pid = ctx.kernel.pgid
            if pid:
                items.append(
                    {
                        "processId": pid,
                        "pid": pid,
                        "status": "running",
                        "command": f"{ctx.language} kernel",
                        "tag": f"context:{ctx.id}",
                        "createdAt": None,
                    }
                )
        return items

    def process(self, sandbox: Sandbox, pid: int) -> dict[str, Any]:
        for item in self.processes(sandbox):
            if item["processId"] == pid:
                record = sandbox.processes.get(pid)
                item = dict(item)
                item.update(
                    working_dir=record.cwd if record else HOME,
                    environment={},  # never echo an environment back
                    resourceUsage=process_usage(pid),
                    exitCode=record.exit_code if record else None,
                )
                return item
        raise not_found(f"process {pid}")

    async def kill_process(self, sandbox: Sandbox, pid: int) -> dict[str, Any]:
        self.process(sandbox, pid)  # 404 unless it is one of ours
        with contextlib.suppress(OSError):
            os.killpg(pid, 15)
        await asyncio.sleep(0.2)
        await blocking(kill_group, pid)
        record = sandbox.processes.get(pid)
        if record is not None and record.status == "running":
            record.status = "killed"
        if record is not None:
            await _reap(record)
        for ctx in list(sandbox.contexts.values()):
            if ctx.kernel.pgid == pid:  # killing a kernel ends its context
                await self.delete_context(sandbox, ctx.id)
        return {"pid": pid, "stopped": True, "stopped_at": now_iso(), "message": "killed"}


_MAX_OUTPUT = 16 * 1024 * 1024


def _read_back(fh: Any) -> tuple[bytes, int]:
    """A command's captured stream, at most _MAX_OUTPUT bytes, and how many were dropped."""
    size = os.fstat(fh.fileno()).st_size
    fh.seek(0)
    data: bytes = fh.read(_MAX_OUTPUT)
    return data, max(0, size - len(data))


async def _exit_code(proc: asyncio.subprocess.Process, pipe: Any) -> int:
    """The command's exit code: from its namespace init's status pipe, else its own exit."""
    if pipe is None:
        return await proc.wait()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        line = await reader.readline()
    finally:
        transport.close()
    try:
        return int(line)
    except ValueError:  # the init died without a word (killed): fall back to its exit
        return await proc.wait()


async def _reap(proc: Process) -> None:
    """Collect a command whose init lingered for background jobs (just killed)."""
    if proc.proc is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.proc.wait(), 5)
        proc.proc = None
