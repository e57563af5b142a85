"""Kernels: Jupyter (python) over IPC sockets, and a small node process (javascript).

Both answer `execute(code, timeout)` with the wire events of docs/contract.md
("Wire events"), a final status and the execution count.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import itertools
import json
import logging
import os
import queue
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import attrs
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager

from .._models import strip_ansi
from ._admission import StartGate
from ._disk import home_of
from ._holder import Holder, HolderError
from ._jail import JAIL_HOME, JAIL_PRIVATE, JAIL_TOOLS, PIP_PREFIX, Jail, interpreter_info
from ._limits import (
    PidsCgroup,
    child_preexec,
    init_argv,
    kill_group,
    sandbox_argv,
    scrubbed_env,
)
from ._settings import EmulatorSettings
from ._threads import blocking
from ._tree import remove_tree

__all__ = [
    "Kernel",
    "KernelError",
    "Launch",
    "NodeKernel",
    "PythonKernel",
    "Slot",
    "SparePool",
    "discard",
    "start_python",
    "strip_ansi",
]

log = logging.getLogger("agentrun_ci.local")

_INTERRUPT_GRACE = 5.0
_SUN_PATH_MAX = 107  # bytes in a Unix socket path (sockaddr_un.sun_path, NUL excluded)


def _kernel_name() -> str:
    return f"k-{uuid.uuid4().hex[:16]}"


def socket_path_fits(ip: str) -> bool:
    """Do a kernel's IPC sockets ("<ip>-<port>", ports up to 5 digits) fit a Unix path?"""
    return len(os.fsencode(ip)) + len("-65535") <= _SUN_PATH_MAX


def sockets_fit_in(directory: Path) -> bool:
    """Can kernels keep their IPC sockets in `directory`?"""
    return socket_path_fits(str(directory / _kernel_name()))


_NODE_REPL = Path(__file__).with_name("_node_repl.js")
_MARK = b"\x00AGENTRUN\x00"

Event = dict[str, Any]

# Run in every python kernel (by `adopt`). ipykernel keeps a cell's output in memory until
# its IO thread flushes it (every 0.2 s) as ONE message, JSON-encoded in one piece, and
# IPython 9 also keeps every cell's output for its (here disabled) history. 100 MB printed
# under a 1 GB memory limit made that flush fail with MemoryError in the IO thread: the
# output was gone and the execute said "ok". So: keep no output history, send big writes
# in 1 MB pieces, and count what each cell wrote, so that `PythonKernel` can compare it
# with what arrived and say when output was lost (`_LOST`).
_OUTPUT_GUARD = """
def _agentrun_guard():
    from ipykernel.iostream import OutStream
    if hasattr(OutStream, "_agentrun_take"):
        return

    class Forget(dict):
        def __contains__(self, key):
            return False

        def __missing__(self, key):
            return []

    shell = get_ipython()
    if hasattr(shell.history_manager, "outputs"):
        shell.history_manager.outputs = Forget()
    write, flush, chunk, counts, pending = OutStream.write, OutStream._flush, 1 << 20, {}, {}

    def guarded_write(self, text):
        if not isinstance(text, str):
            return write(self, text)
        key = (self.parent_header.get("msg_id"), self.name)
        for start in range(0, len(text), chunk):
            piece = text[start : start + chunk]
            write(self, piece)
            counts[key] = counts.get(key, 0) + len(piece)
            pending[self.name] = pending.get(self.name, 0) + len(piece)
            if pending[self.name] >= chunk:
                pending[self.name] = 0
                self.flush()
        return len(text)

    def guarded_flush(self):
        try:
            flush(self)
        except MemoryError:
            pass

    def take():
        msg_id = shell.kernel.get_parent()["header"]["msg_id"]
        found = {name: n for (mid, name), n in counts.items() if mid == msg_id}
        counts.clear()
        return found

    class Write:
        # IPython tees each cell's output by setting `stream.write` to a wrapper and
        # putting back what it found after the cell: a plain class patch would be
        # shadowed by that instance attribute, so this descriptor takes the sets.
        def __get__(self, stream, owner=None):
            if stream is None:
                return guarded_write
            return stream.__dict__.get("_agentrun_write") or guarded_write.__get__(stream)

        def __set__(self, stream, value):
            if getattr(value, "__func__", None) in (write, guarded_write):
                stream.__dict__.pop("_agentrun_write", None)
            else:
                stream.__dict__["_agentrun_write"] = value

    import sys

    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, OutStream):
            stream.__dict__.pop("write", None)
    OutStream.write, OutStream._flush, OutStream._agentrun_take = Write(), guarded_flush, take


_agentrun_guard()
del _agentrun_guard
"""
_COUNT = "__import__('ipykernel').iostream.OutStream._agentrun_take()"


_KERNEL_FLAGS = ("--HistoryManager.enabled=False", "--IPKernelApp.quiet=True")

# The kernel's entry point: ipykernel_launcher's (the working directory off sys.path while
# ipykernel loads; IPython puts it back), less the debugger. ipykernel loads debugpy when
# it can, for Jupyter's debug protocol, which the AgentRun API has no call for: a quarter
# of a kernel's start-up CPU. Hidden while ipykernel decides, importable again after, for
# the user's code. (An ipykernel without a debugger module loads as it would.)
_LAUNCH = """\
import sys
from pathlib import Path
if sys.path[0] == "" or Path(sys.path[0]) == Path.cwd():
    del sys.path[0]
sys.modules["debugpy"] = None
try:
    import ipykernel.debugger
except ImportError:
    pass
finally:
    del sys.modules["debugpy"]
from ipykernel import kernelapp
kernelapp.launch_new_instance()
"""


class KernelError(RuntimeError):
    """A kernel could not be started or died; its state is gone."""


class Kernel(Protocol):
    language: str
    restarts: int
    """How many times an interrupt did not stop the code and the kernel was restarted."""

    @property
    def pgid(self) -> int | None: ...
    async def execute(self, code: str, timeout: float) -> tuple[list[Event], str, int | None]: ...
    async def shutdown(self) -> None: ...
    async def pause(self, stop: bool) -> None: ...


async def wait_until_ready(km: Any, kc: Any, timeout: float) -> None:
    """Return once the kernel answers: a kernel_info request's reply on shell, then its
    `idle` status on iopub, which proves our iopub subscription is connected (a SUB
    socket misses what is published before it joins: then ask again).

    jupyter_client's `wait_for_ready` does the same and then waits for 0.2 s of silence on
    iopub to flush it, which is half of a quiet kernel start. Not needed here: every reader
    of these channels matches replies to its own request id, so messages left from these
    requests are skipped, never taken for another's."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        msg_id = kc.kernel_info()
        with contextlib.suppress(queue.Empty):
            reply = await _reply_to(kc.get_shell_msg, msg_id, min(1.0, timeout))
            adapt = getattr(kc, "_handle_kernel_info_reply", None)
            if adapt is not None:  # the protocol version, as jupyter_client's wait does
                adapt(reply)
            while True:  # this request's status messages; none within 0.5 s: not subscribed yet
                status = await _reply_to(kc.get_iopub_msg, msg_id, 0.5)
                if (
                    status["msg_type"] == "status"
                    and status["content"].get("execution_state") == "idle"
                ):
                    return
        if not await km.is_alive():
            raise RuntimeError("the kernel died before it answered")
        if loop.time() > deadline:
            raise RuntimeError(
                f"the kernel did not answer in {timeout:g} s "
                "(EmulatorSettings.kernel_start_timeout, `local serve --kernel-start-timeout`: "
                "raise it on a very loaded machine)"
            )


async def _reply_to(get: Any, msg_id: str, timeout: float) -> dict[str, Any]:
    """The next message on a channel (`get`: the client's get_*_msg) that answers
    `msg_id`, skipping others; queue.Empty when none came within `timeout` seconds."""
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout
    while True:
        msg: dict[str, Any] = await get(timeout=max(0.0, until - loop.time()))
        if msg.get("parent_header", {}).get("msg_id") == msg_id:
            return msg


def _timeout_event(timeout: float) -> Event:
    value = f"execution exceeded {timeout:g} s and was interrupted"
    return {
        "type": "error",
        "name": "TimeoutError",
        "value": value,
        "traceback": f"TimeoutError: {value}",
        "text": f"TimeoutError: {value}",
    }


MAX_STREAM_CHARS = 128 * 1024 * 1024
"""Characters of stdout (and of stderr) one execution keeps; past it, a marker. Commands
keep 16 MB; a cell's output is meant to arrive whole (100 MB does), so its cap is
higher, but it bounds the server's memory all the same (read at each call: tests lower it)."""


class _StreamCap:
    """Keep at most `MAX_STREAM_CHARS` of each stream; count what is dropped past that."""

    def __init__(self) -> None:
        self.kept: dict[str, int] = {}
        self.dropped: dict[str, int] = {}

    def add(self, events: list[Event], name: str, text: str) -> None:
        room = MAX_STREAM_CHARS - self.kept.get(name, 0)
        if len(text) > room:
            self.dropped[name] = self.dropped.get(name, 0) + len(text) - max(room, 0)
            text = text[: max(room, 0)]
        if text:
            self.kept[name] = self.kept.get(name, 0) + len(text)
            events.append({"type": name, "text": text})

    def notes(self) -> list[Event]:
        return [
            {
                "type": name,
                "text": f"\n[output truncated: {n} characters of {name} dropped; the emulator "
                f"keeps {MAX_STREAM_CHARS // 2**20} Mi characters per stream: write big "
                "output to a file]\n",
            }
            for name, n in self.dropped.items()
        ]


def _lost_output(
    events: list[Event], reply: dict[str, Any], dropped: dict[str, int] | None = None
) -> list[Event]:
    """A stderr note for output the kernel wrote that never arrived (never lose it silently)."""
    counted = reply.get("user_expressions", {}).get("agentrun_output", {})
    if counted.get("status") != "ok":
        name = counted.get("ename", "no answer")
        return [{"type": "stderr", "text": f"{_LOST} (the kernel could not count it: {name})]\n"}]
    try:
        written = ast.literal_eval(counted["data"]["text/plain"])
    except (KeyError, ValueError, SyntaxError):
        return []
    notes: list[Event] = []
    for stream in ("stdout", "stderr"):
        got = sum(len(e.get("text") or "") for e in events if e.get("type") == stream)
        got += (dropped or {}).get(stream, 0)
        lost = int(written.get(stream, 0)) - got
        if lost > 0:
            text = f"{_LOST}: {lost} characters of {stream} never arrived]\n"
            notes.append({"type": "stderr", "text": text})
    return notes


_LOST = (
    "[output lost: the kernel probably ran out of memory sending it; raise the memory "
    "limit, print less, or write big output to a file"
)


def _signal_group(pgid: int | None, stop: bool) -> None:
    if pgid:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGSTOP if stop else signal.SIGCONT)


@attrs.frozen
class Launch:
    """How to start one sandbox's children: limits, the uid to drop to, the pids cgroup,
    and either the bubblewrap jail (`_jail.py`, with the sandbox's `home` and `tmp`) or,
    where there is none, a PID namespace per child (`_limits.sandbox_argv`)."""

    settings: EmulatorSettings
    uid: int | None = None
    cgroup: PidsCgroup | None = None
    pid_namespace: bool = False
    #: where kernels' IPC sockets go when the runtime dir is too deep for a socket path
    sockets: Path | None = None
    jail: Jail | None = None
    #: the sandbox's workspace (/home/user) and temporary directory (/tmp), on the host
    home: Path | None = None
    tmp: Path | None = None
    #: where the server keeps kernels' connection files (no jail mounts it)
    runtime: Path | None = None
    #: our `pip` command (`_jail.write_tools`), on the host: the jail's /opt/agentrun
    tools: Path | None = None
    #: jailed: the sandbox's namespaces, which its kernels and commands join (`_holder`)
    holder: Holder | None = None
    #: may the sandbox's code reach out (a PUBLIC template, no `no_network`)? False: its
    #: network namespace has loopback only, where it can have one (`_network.py`)
    public: bool = True

    async def prepare(self) -> None:
        """Before launching anything: start the sandbox's namespace holder if it has one,
        and give a PUBLIC sandbox's network namespace its uplink."""
        if self.holder is not None and self.jailed:
            try:
                await self.holder.start(
                    self.env(self.inside_home), self.preexec(None, memory=False)
                )
                if self.public:
                    await self.holder.connect()
            except HolderError as exc:
                raise KernelError(str(exc)) from exc

    @property
    def own_net(self) -> bool:
        """Do the sandbox's processes get a network namespace of their own (its holder's,
        else one each), not the host's?"""
        if self.holder is not None and self.jailed:
            return self.holder.own_net
        return not self.public

    @property
    def python(self) -> str:
        return os.path.abspath(self.settings.python_executable or sys.executable)

    @property
    def jailed(self) -> bool:
        return self.jail is not None and self.home is not None and self.tmp is not None

    @property
    def inside_home(self) -> str:
        """The sandbox's /home/user as its code sees it (the host directory without a jail)."""
        if self.jailed or self.home is None:
            return JAIL_HOME
        return str(self.home)

    @property
    def moved_env(self) -> dict[str, str]:
        """The variables naming the sandbox's directories on the host (no jail only): a
        kernel started before its directory was renamed (a spare) gets them anew."""
        if self.jailed or self.tmp is None:
            return {}
        return {"TMPDIR": str(self.tmp)}

    def argv(
        self,
        argv: list[str],
        *,
        cwd: str | None = None,
        status_fd: int = -1,
        linger: bool = False,
        private: Path | None = None,
    ) -> list[str]:
        """`argv` wrapped for its sandbox; `cwd` is the jail's path (jailed runs only)."""
        if self.jail is not None and self.home is not None and self.tmp is not None:
            uid = self.jail.uid
            init = init_argv(
                self.python, status_fd=status_fd, linger=linger, uid=uid, cwd=cwd or JAIL_HOME
            )
            holder = None
            if self.holder is not None:
                holder = self.holder.pid
                if holder is None:
                    raise KernelError("the sandbox's namespace holder is not running")
            return self.jail.argv(
                argv,
                init=init,
                home=self.home,
                tmp=self.tmp,
                own_net=self.own_net,
                private=private,
                holder=holder,
            )
        return sandbox_argv(
            self.settings,
            argv,
            python=self.python,
            pid_namespace=self.pid_namespace,
            uid=self.uid,
            status_fd=status_fd,
            linger=linger,
            own_net=self.own_net,
        )

    def host_cwd(self, cwd: str) -> str:
        """The working directory to start bubblewrap (or, without a jail, the child) in.

        bwrap itself starts in the workspace, so that the host sees which sandbox a
        process belongs to (`sweep_stale` finds a dead emulator's children that way)."""
        return str(self.home) if self.jailed else cwd

    def env(self, home: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The scrubbed environment, where `python`, `pip` and what `pip install` puts in
        place are the kernel's interpreter's: PATH starts with our `pip`, that interpreter's
        bin directory and PIP_PREFIX's; packages land in PIP_PREFIX, on PYTHONPATH (the
        interpreter itself is read-only in a jail, and shared with the server without)."""
        env = scrubbed_env(home)
        info = interpreter_info(self.python)
        if self.jail is not None and self.jailed:
            prefix, tools, rest = PIP_PREFIX, f"{JAIL_TOOLS}/bin", self.jail.path_env()
        elif self.tmp is not None and self.tools is not None:
            prefix, tools, rest = str(self.tmp / ".local"), str(self.tools / "bin"), env["PATH"]
        else:
            prefix = ""
        if prefix:
            env["PATH"] = os.pathsep.join([tools, info.bin_dir, f"{prefix}/bin", rest])
            env["PIP_PREFIX"] = prefix
            env["PYTHONPATH"] = info.pythonpath(prefix)
            env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
            env["PIP_ROOT_USER_ACTION"] = "ignore"
        # Without a jail the sandbox's own /tmp is $TMPDIR (the host's /tmp is shared): what
        # code puts in tempfile.gettempdir() is what the file API shows under /tmp.
        env.update(self.moved_env)
        env.update(extra or {})
        return env

    def preexec(self, cpu_seconds: int | None, *, memory: bool = True) -> Any:
        # In a PID namespace unshare (or, jailed, our init) drops the uid itself.
        uid = None if self.pid_namespace or self.jailed else self.uid
        return child_preexec(
            self.settings,
            cpu_seconds=cpu_seconds,
            cgroup=self.cgroup,
            uid=uid,
            memory=memory,
            jailed=self.jailed,
        )


class _KernelManager(AsyncKernelManager):
    """Hands the connection file to the sandbox uid, which must read it to start; jailed,
    writes the kernel its own copy instead (`jail_copy`, in its private directory, with
    the socket path as the jail sees it): the server's file stays out of every jail."""

    sandbox_uid: int | None = None
    jail_copy: Path | None = None

    def write_connection_file(self, **kwargs: Any) -> None:
        super().write_connection_file(**kwargs)
        if self.jail_copy is not None:
            with open(self.connection_file, encoding="utf-8") as fh:
                info = json.load(fh)
            info["ip"] = f"{JAIL_PRIVATE}/k"
            fd = os.open(self.jail_copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(info, fh)
            if self.sandbox_uid is not None:
                os.chown(self.jail_copy, self.sandbox_uid, self.sandbox_uid)
        elif self.sandbox_uid is not None:
            os.chown(self.connection_file, self.sandbox_uid, self.sandbox_uid)


class PythonKernel:
    """One ipykernel process, talked to with jupyter_client over IPC sockets."""

    language = "python"

    def __init__(
        self, km: Any, kc: Any, home: str, cgroup: PidsCgroup | None, start_timeout: float
    ) -> None:
        self._cgroup = cgroup
        #: how long a (re)start and the adoption's first run may take to answer
        self._start_timeout = start_timeout
        #: the kernel process's own stderr (not its code's: ipykernel sends that to iopub)
        self._stderr: Any = None
        self._km = km
        self._kc = kc
        self._home = home
        self._env: dict[str, str] = {}
        self._user_home: str | None = None
        #: jailed: the directory holding this kernel's sockets (its /run/agentrun)
        self._private: Path | None = None
        #: shutdown() has begun: a run still waiting on the kernel's sockets must end
        self._closing = False
        self.restarts = 0

    @property
    def pgid(self) -> int | None:
        pgid = getattr(self._km.provisioner, "pgid", None)
        return int(pgid) if pgid else None

    @classmethod
    async def start(cls, launch: Launch, runtime_dir: Path, home: str) -> PythonKernel:
        """A kernel whose working directory is `home` (as its code sees it)."""
        if launch.jailed:
            return await cls._start_jailed(launch, runtime_dir, home)
        exe = launch.python
        name = _kernel_name()
        # IPC sockets live at "<ip>-<n>": a Unix socket path has at most 107 bytes, which
        # a deep $TMPDIR exceeds; then they go to the short private dir the core made.
        ip = str((launch.sockets or runtime_dir) / name)
        ipc = socket_path_fits(ip)
        if not ipc:
            log.warning(
                "kernel sockets would not fit a Unix socket path (%s); using loopback TCP, "
                "where other local users can read kernel output: set TMPDIR to a short path",
                ip,
            )
        km = _KernelManager(
            transport="ipc" if ipc else "tcp",
            connection_file=str(runtime_dir / f"{name}.json"),
            **({"ip": ip} if ipc else {}),
        )
        km.sandbox_uid = launch.uid
        argv = launch.argv(
            [
                exe,
                "-c",
                _LAUNCH,
                "-f",
                "{connection_file}",
                *_KERNEL_FLAGS,
                # Under our namespace init the kernel's parent is PID 1, which ipykernel's
                # parent poller takes for "the server died": 1 turns the poller off.
                *(["--IPKernelApp.parent_handle=1"] if launch.pid_namespace else []),
            ]
        )
        env = launch.env(home)
        env.update(
            IPYTHONDIR=str(runtime_dir / "ipython"),
            MPLCONFIGDIR=str(runtime_dir / "matplotlib"),
            MPLBACKEND="module://matplotlib_inline.backend_inline",
        )
        return await cls._launch(km, argv, env, home, home, launch, None)

    @classmethod
    async def _start_jailed(cls, launch: Launch, runtime_dir: Path, home: str) -> PythonKernel:
        """A kernel in the sandbox's jail: its sockets and its copy of the connection file
        sit in a private directory (its /run/agentrun) that no other jail mounts."""
        await launch.prepare()
        parent = launch.sockets or runtime_dir
        private = Path(tempfile.mkdtemp(prefix="k-", dir=parent))
        if launch.jail is not None and launch.jail.privileged:
            os.chown(private, launch.jail.uid, launch.jail.uid)
        ip = str(private / "k")
        if not socket_path_fits(ip):
            remove_tree(private)
            raise KernelError(f"the kernel's socket path is too long ({ip}): set TMPDIR shorter")
        km = _KernelManager(
            transport="ipc", connection_file=str(runtime_dir / f"{private.name}.json"), ip=ip
        )
        km.jail_copy = private / "kernel.json"
        km.sandbox_uid = launch.jail.uid if launch.jail and launch.jail.privileged else None
        argv = launch.argv(
            [
                launch.python,
                "-c",
                _LAUNCH,
                "-f",
                f"{JAIL_PRIVATE}/kernel.json",
                f"--ip={JAIL_PRIVATE}/k",
                *_KERNEL_FLAGS,
                "--IPKernelApp.parent_handle=1",
            ],
            cwd=home,
            private=private,
        )
        env = launch.env(home)
        env.update(
            IPYTHONDIR=f"{JAIL_PRIVATE}/ipython",
            MPLCONFIGDIR=f"{JAIL_PRIVATE}/matplotlib",
            MPLBACKEND="module://matplotlib_inline.backend_inline",
        )
        return await cls._launch(km, argv, env, home, launch.host_cwd(home), launch, private)

    @classmethod
    async def _launch(
        cls,
        km: _KernelManager,
        argv: list[str],
        env: dict[str, str],
        home: str,
        cwd: str,
        launch: Launch,
        private: Path | None,
    ) -> PythonKernel:
        km._kernel_spec = KernelSpec(argv=argv, language="python", display_name="python")
        kc: Any = None
        timeout = launch.settings.kernel_start_timeout
        # Its own stderr goes to a file, so that a kernel that dies while starting (a bad
        # interpreter, no ipykernel, a jail that cannot be built) says why in the error.
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 -- the kernel's, closed at shutdown
        try:
            await km.start_kernel(
                env=env,
                cwd=cwd,
                stderr=stderr,
                preexec_fn=launch.preexec(launch.settings.kernel_cpu_seconds),
            )
            kc = km.client()
            kc.start_channels()
            await wait_until_ready(km, kc, timeout=timeout)
        except BaseException as exc:  # cancelled too: nothing may be left running
            said = _last_words(km, stderr)
            if kc is not None:
                with contextlib.suppress(Exception):
                    kc.stop_channels()
            with contextlib.suppress(Exception):
                await km.shutdown_kernel(now=True)
            stderr.close()
            if private is not None:
                remove_tree(private)
            if not isinstance(exc, Exception):
                raise
            raise KernelError(f"the python kernel did not start: {exc}{said}") from exc
        kernel = cls(km, kc, home, launch.cgroup, timeout)
        kernel._private = private
        kernel._stderr = stderr
        return kernel

    def relocate(self, old: Path, new: Path) -> None:
        """Its sandbox directory was renamed (a spare slot taken by a sandbox): a restart
        must launch with the new paths (bind mounts, working directory), not the old."""
        before, after = str(old), str(new)

        def moved(value: str) -> str:
            if value == before or value.startswith(before + "/"):
                return after + value[len(before) :]
            return value

        spec = getattr(self._km, "_kernel_spec", None)
        if spec is not None:
            spec.argv = [moved(arg) for arg in spec.argv]
        launch_args = getattr(self._km, "_launch_args", None)
        if isinstance(launch_args, dict) and isinstance(launch_args.get("cwd"), str):
            launch_args["cwd"] = moved(launch_args["cwd"])

    async def adopt(self, cwd: str, env: dict[str, str], home: str | None = None) -> None:
        """Ready a (possibly pre-started spare) kernel for its context: output guard, working
        directory `cwd`, HOME (`home`, default `cwd`) and the sandbox's variables."""
        self._home = cwd
        self._user_home = home or self._user_home or cwd
        self._env = dict(env)
        code = _OUTPUT_GUARD + (
            "import os as _o\n"
            f"_o.chdir({cwd!r}); _o.environ['PWD'] = {cwd!r}\n"
            f"_o.environ['HOME'] = {self._user_home!r}\n"
            f"_o.environ.update({self._env!r})\n"
            # tempfile keeps the directory it found first: a spare's TMPDIR may have moved
            "import tempfile as _t; _t.tempdir = None; del _t\n"
            "del _o\n"
        )
        try:
            # the kernel's first run: imports, on a loaded machine as slow as its start
            _, status, _ = await self._run(code, self._start_timeout, silent=True)
        except KernelError:
            raise KernelError("the kernel died as it was moved into the sandbox") from None
        if status != "ok":
            raise KernelError("could not move the kernel into the sandbox")

    async def execute(self, code: str, timeout: float) -> tuple[list[Event], str, int | None]:
        return await self._run(code, timeout, silent=False)

    async def _run(
        self, code: str, timeout: float, *, silent: bool
    ) -> tuple[list[Event], str, int | None]:
        if not await self._km.is_alive():
            raise KernelError("the kernel has died (state lost)")
        kc = self._kc
        msg_id = kc.execute(
            code,
            silent=silent,
            store_history=not silent,
            allow_stdin=False,
            user_expressions={} if silent else {"agentrun_output": _COUNT},
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        events: list[Event] = []
        count: int | None = None
        status = "ok"
        timed_out = False
        streams = _StreamCap()
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                if timed_out:  # SIGINT did not help (stuck in C code): restart, state is lost
                    await self._km.restart_kernel(now=True)
                    await wait_until_ready(self._km, self._kc, timeout=self._start_timeout)
                    await self.adopt(self._home, self._env)
                    self.restarts += 1
                    events.append({"type": "stderr", "text": "kernel restarted: state lost\n"})
                    break
                timed_out = True
                status = "timeout"
                await self._km.interrupt_kernel()
                deadline = loop.time() + _INTERRUPT_GRACE
                continue
            try:
                msg = await kc.get_iopub_msg(timeout=min(remaining, 1.0))
            except queue.Empty:
                if self._closing or not await self._km.is_alive():
                    raise self._ended() from None
                continue
            except (asyncio.CancelledError, Exception):
                # Closing the channels cancels (or breaks) the socket poll under us: the
                # context was deleted, or its sandbox stopped, while this ran. An answer,
                # not a crash.
                if self._closing:
                    raise self._ended() from None
                raise
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            content = msg["content"]
            if kind == "status" and content.get("execution_state") == "idle":
                break
            if kind == "execute_input":
                count = content.get("execution_count")
            elif kind == "stream":
                streams.add(events, str(content.get("name", "stdout")), str(content["text"]))
            elif kind in ("execute_result", "display_data"):
                data = content.get("data", {})
                events.append(
                    {
                        "type": "result",
                        "text": data.get("text/plain"),
                        "data": data,
                        "isMainResult": kind == "execute_result",
                        "executionCount": content.get("execution_count", count),
                    }
                )
            elif kind == "error":
                if timed_out and content.get("ename") == "KeyboardInterrupt":
                    events.append(_timeout_event(timeout))
                    continue
                if not timed_out:
                    status = "error"
                tb = strip_ansi("\n".join(content.get("traceback", [])))
                events.append(
                    {
                        "type": "error",
                        "name": content.get("ename", "Error"),
                        "value": content.get("evalue", ""),
                        "traceback": tb,
                        "text": tb,
                    }
                )
        if timed_out and not any(e.get("name") == "TimeoutError" for e in events):
            events.append(_timeout_event(timeout))
        reply = await self._drain_shell(msg_id)
        if reply is not None and not silent and status == "ok":
            events += _lost_output(events, reply, streams.dropped)
        return events + streams.notes(), status, count

    async def _drain_shell(self, msg_id: str) -> dict[str, Any] | None:
        # The shell reply only adds what our output guard counted (user_expressions);
        # read it so the queue does not grow, without waiting long for it.
        with contextlib.suppress(queue.Empty):
            while True:
                reply = await self._kc.get_shell_msg(timeout=0.5)
                if reply.get("parent_header", {}).get("msg_id") == msg_id:
                    content: dict[str, Any] = reply.get("content", {})
                    return content
        return None

    async def pause(self, stop: bool) -> None:
        _signal_group(self.pgid, stop)

    def _ended(self) -> KernelError:
        """Why a run stopped hearing from its kernel."""
        if self._closing:
            return KernelError(
                "the context was deleted, or its sandbox stopped, while the code ran"
            )
        return KernelError("the kernel died during execution (state lost)")

    async def shutdown(self) -> None:
        if self._closing:
            return
        self._closing = True
        pgid = self.pgid
        with contextlib.suppress(Exception):
            self._kc.stop_channels()
        if pgid:
            await blocking(kill_group, pgid)
        with contextlib.suppress(Exception):
            await self._km.shutdown_kernel(now=True)  # also removes the connection files
        if self._private is not None:
            await blocking(remove_tree, self._private)
        if self._stderr is not None:
            self._stderr.close()


def _last_words(km: Any, stderr: Any) -> str:
    """How a kernel that did not start ended: its exit status and the end of its stderr
    ("" while it still runs: it was too slow, or the start was cancelled)."""
    process = getattr(km.provisioner, "process", None)
    code = process.poll() if process is not None else None
    if code is None:
        return ""
    how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
    try:
        stderr.seek(0, os.SEEK_END)
        stderr.seek(max(0, stderr.tell() - 4096))
        lines = stderr.read().decode("utf-8", "replace").strip().splitlines()
    except (OSError, ValueError):
        lines = []
    tail = " | ".join(line.strip() for line in lines[-4:] if line.strip())
    return f"; {how}" + (f": {tail[-600:]}" if tail else " and no message")


class NodeKernel:
    """A persistent node process running our small vm-based REPL (`_node_repl.js`)."""

    language = "javascript"

    def __init__(self, launch: Launch, home: str, env: dict[str, str]) -> None:
        self._launch = launch
        self._settings = launch.settings
        self._home = home
        self._env = env
        self._proc: asyncio.subprocess.Process | None = None
        self._ids = itertools.count(1)
        self.restarts = 0

    @property
    def pgid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @staticmethod
    def available() -> bool:
        return shutil.which("node") is not None

    @classmethod
    async def start(cls, launch: Launch, home: str, env: dict[str, str]) -> NodeKernel:
        kernel = cls(launch, home, env)
        await kernel._spawn()
        return kernel

    async def _spawn(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise KernelError("javascript needs `node` on PATH; install Node.js")
        # V8 reserves far more address space than it uses, so RLIMIT_AS would stop node
        # from starting: javascript kernels get a V8 heap cap instead.
        heap = max(64, (self._settings.memory_mb or 4096) // 2)
        launch = self._launch
        await launch.prepare()
        repl = f"{JAIL_TOOLS}/node_repl.js" if launch.jailed else str(_NODE_REPL)
        self._proc = await asyncio.create_subprocess_exec(
            *launch.argv([node, f"--max-old-space-size={heap}", repl], cwd=self._home),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=launch.host_cwd(self._home),
            env=launch.env(self._home, self._env),
            start_new_session=True,
            limit=64 * 1024 * 1024,
            preexec_fn=self._launch.preexec(self._settings.kernel_cpu_seconds, memory=False),
        )

    async def execute(self, code: str, timeout: float) -> tuple[list[Event], str, int | None]:
        proc = self._proc
        if proc is None or proc.returncode is not None or proc.stdin is None or proc.stdout is None:
            raise KernelError("the javascript kernel has died (state lost)")
        req_id = next(self._ids)
        line = json.dumps({"id": req_id, "code": code, "timeoutMs": int(timeout * 1000)})
        proc.stdin.write(line.encode() + b"\n")
        await proc.stdin.drain()
        extra: list[Event] = []
        stdout = proc.stdout
        streams = _StreamCap()

        async def read_reply() -> dict[str, Any]:
            while True:
                raw = await stdout.readline()
                if not raw:
                    raise KernelError("the javascript kernel died during execution (state lost)")
                if raw.startswith(_MARK):
                    reply: dict[str, Any] = json.loads(raw[len(_MARK) :])
                    if reply.get("id") == req_id:
                        return reply
                else:  # process.stdout.write from user code
                    streams.add(extra, "stdout", raw.decode("utf-8", "replace"))

        try:
            reply = await asyncio.wait_for(read_reply(), timeout + _INTERRUPT_GRACE)
        except asyncio.TimeoutError:
            # Stuck outside vm's own timeout (e.g. a busy timer callback): restart.
            await self.shutdown()
            await self._spawn()
            self.restarts += 1
            extra.append(_timeout_event(timeout))
            extra.append({"type": "stderr", "text": "kernel restarted: state lost\n"})
            return extra, "timeout", None
        count = reply.get("executionCount")
        for event in reply["events"]:
            if event.get("type") in ("stdout", "stderr"):
                streams.add(extra, str(event["type"]), str(event.get("text") or ""))
            else:
                extra.append(event)
        return extra + streams.notes(), str(reply["status"]), count

    async def pause(self, stop: bool) -> None:
        _signal_group(self.pgid, stop)

    async def shutdown(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        await blocking(kill_group, proc.pid)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 5)


@attrs.define
class Slot:
    """A sandbox-to-be: its directory (`home` is /home/user, `tmp` its /tmp), its cgroup,
    how to launch in it, and a pre-started kernel already jailed there. A slot goes to one
    sandbox only: no sandbox can reach its kernel before, none but that one after."""

    base: Path
    launch: Launch
    kernel: PythonKernel | None = None

    @property
    def home(self) -> Path:
        return home_of(self.base)


class SparePool:
    """Slots with a warm python kernel, so that a new sandbox's first context skips the
    cold start. `make_slot(name)` makes the directories, cgroup and launch of one slot."""

    def __init__(self, settings: EmulatorSettings, make_slot: Any, gate: StartGate) -> None:
        self._settings = settings
        self._make_slot = make_slot
        self._gate = gate
        self._ready: list[Slot] = []
        self._starting: set[asyncio.Task[None]] = set()
        #: the kernel starts inside `_starting`: what close() cancels
        self._kernel_starts: set[asyncio.Future[PythonKernel]] = set()
        self._closed = False

    @property
    def ready(self) -> int:
        """How many slots have a started kernel waiting."""
        return len(self._ready)

    def fill(self) -> None:
        missing = self._settings.spare_kernels - len(self._ready) - len(self._starting)
        for _ in range(max(0, missing)):
            task = asyncio.get_running_loop().create_task(self._start_one())
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    async def _start_one(self) -> None:
        try:
            slot: Slot = await blocking(self._make_slot, f".spare-{uuid.uuid4().hex[:12]}")
        except Exception:
            log.exception("could not prepare a spare sandbox directory")
            return
        if self._closed:
            await discard(slot)
            return
        start = asyncio.ensure_future(self._start_in_turn(slot.launch))
        self._kernel_starts.add(start)
        try:
            slot.kernel = await start
        except asyncio.CancelledError:
            if not start.cancelled():
                raise  # this task was cancelled, not only the start
            await discard(slot)  # close() cancelled the start, which killed what it launched
            return
        except Exception:
            log.exception("could not pre-start a spare kernel")
            await discard(slot)
            return
        finally:
            self._kernel_starts.discard(start)
        if self._closed:
            await discard(slot)
        else:
            self._ready.append(slot)

    async def _start_in_turn(self, launch: Launch) -> PythonKernel:
        async with self._gate.turn(background=True):  # after the requests waiting
            return await start_python(launch)

    def take(self, accept: Callable[[Slot], bool] | None = None) -> Slot | None:
        """A slot whose kernel is ready (and that `accept`s), or None; the pool starts a
        replacement."""
        slot = None
        if self._ready and (accept is None or accept(self._ready[0])):
            slot = self._ready.pop(0)
        if not self._closed:
            self.fill()
        return slot

    def slots(self) -> list[Slot]:
        """The spare slots ready now (a copy: for `Core.kill_now`, from any thread)."""
        return list(self._ready)

    async def close(self) -> None:
        self._closed = True
        # A kernel still starting serves no one: cancel the start rather than wait
        # seconds (longer on a busy machine) for a kernel shut down at once. Only the
        # start: its slot's directory and cgroup are made in a thread, then discarded.
        for start in list(self._kernel_starts):
            start.cancel()
        for task in list(self._starting):
            with contextlib.suppress(BaseException):
                await task
        slots, self._ready = self._ready, []
        await asyncio.gather(*(discard(s) for s in slots), return_exceptions=True)


async def start_python(launch: Launch, cwd: str | None = None) -> PythonKernel:
    """A python kernel started for one sandbox, in `cwd` (its /home/user by default)."""
    return await PythonKernel.start(launch, _runtime(launch), cwd or launch.inside_home)


def _runtime(launch: Launch) -> Path:
    if launch.runtime is None:
        raise KernelError("no runtime directory for kernels")
    return launch.runtime


async def discard(slot: Slot) -> None:
    """Shut a slot's kernel down and remove its directory and cgroup."""
    if slot.kernel is not None:
        await slot.kernel.shutdown()
        slot.kernel = None
    if slot.launch.holder is not None:
        await slot.launch.holder.stop()
    if slot.launch.cgroup is not None:
        await blocking(slot.launch.cgroup.remove)
    await blocking(remove_tree, slot.base)
