"""The python kernel: one ipykernel per context, talked to with jupyter_client over IPC
sockets; its start (jailed or not), the output guard run in it, and the wait until it
answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import queue
import resource
import tempfile
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import zmq
import zmq.asyncio
from jupyter_client._version import protocol_version
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.session import DELIM

from .._models import strip_ansi
from ._jail import JAIL_PRIVATE
from ._kernel_base import (
    _INTERRUPT_GRACE,
    Event,
    KernelError,
    _kernel_name,
    _signal_group,
    _StreamCap,
    _timeout_event,
    socket_path_fits,
)
from ._launch import Launch
from ._limits import PidsCgroup, kill_group
from ._threads import blocking
from ._tree import remove_tree

__all__ = ["PythonKernel", "wait_until_ready"]

log = logging.getLogger("agentrun_ci.local")

# Run in every python kernel (by `adopt`). ipykernel keeps a cell's output in memory until
# its IO thread flushes it (every 0.2 s) as ONE message, JSON-encoded in one piece, and
# IPython 9 also keeps every cell's output for its (here disabled) history. 100 MB printed
# under a 1 GB memory limit made that flush fail with MemoryError in the IO thread: the
# output was gone and the execute said "ok". So: keep no output history, send big writes
# in 1 MB pieces, and count what each cell wrote, so that `PythonKernel` can compare it
# with what arrived and say when output was lost (`_LOST`). The counts travel in the
# execute reply's metadata (`finish_metadata`): a user expression would carry them too,
# but the kernel evaluates and display-formats it on every run, a tenth of a short run.
#: the key of the execute reply's metadata that holds what the cell wrote, per stream
_COUNTS = "agentrun_output"
_OUTPUT_GUARD = """
def _agentrun_guard():
    from ipykernel.iostream import OutStream
    if hasattr(OutStream, "_agentrun_guarded"):
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

    kernel = shell.kernel
    finish = kernel.finish_metadata

    def finish_metadata(parent, metadata, reply_content):
        metadata = finish(parent, metadata, reply_content)
        header = parent.get("header", {})
        if header.get("msg_type") == "execute_request":
            msg_id = header.get("msg_id")
            metadata[COUNTS] = {name: n for (mid, name), n in counts.items() if mid == msg_id}
            counts.clear()
        return metadata

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
    OutStream.write, OutStream._flush, OutStream._agentrun_guarded = Write(), guarded_flush, True
    kernel.finish_metadata = finish_metadata


_agentrun_guard()
del _agentrun_guard
""".replace("COUNTS", repr(_COUNTS))


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


def _lost_output(
    events: list[Event], metadata: dict[str, Any], dropped: dict[str, int] | None = None
) -> list[Event]:
    """A stderr note for output the kernel wrote that never arrived (never lose it silently).
    `metadata` is the execute reply's, where the output guard puts its counts."""
    written = metadata.get(_COUNTS)
    if not isinstance(written, dict):
        return [{"type": "stderr", "text": f"{_LOST} (the kernel did not count it)]\n"}]
    notes: list[Event] = []
    for stream in ("stdout", "stderr"):
        got = sum(len(e.get("text") or "") for e in events if e.get("type") == stream)
        got += (dropped or {}).get(stream, 0)
        count = written.get(stream, 0)
        lost = (count if isinstance(count, int) else 0) - got
        if lost > 0:
            text = f"{_LOST}: {lost} characters of {stream} never arrived]\n"
            notes.append({"type": "stderr", "text": text})
    return notes


_LOST = (
    "[output lost: the kernel probably ran out of memory sending it; raise the memory "
    "limit, print less, or write big output to a file"
)


_ZMQ_CONTEXT: zmq.asyncio.Context | None = None
_ZMQ_LOCK = threading.Lock()


def _zmq_context() -> zmq.asyncio.Context:
    """The zmq context of every kernel of this process, made at first use.

    jupyter_client gives each kernel manager and each client a context of its own: two
    I/O threads and their descriptors more per kernel, for nothing. One context, whose
    socket cap is raised from libzmq's 1023 (some 170 kernels at six sockets each) to
    what the process may open."""
    global _ZMQ_CONTEXT
    with _ZMQ_LOCK:
        if _ZMQ_CONTEXT is None or _ZMQ_CONTEXT.closed:
            context = zmq.asyncio.Context()
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            wanted = soft if 0 < soft < 65536 else 65536
            context.set(zmq.MAX_SOCKETS, max(1024, min(wanted, context.get(zmq.SOCKET_LIMIT))))
            _ZMQ_CONTEXT = context
        return _ZMQ_CONTEXT


class _KernelManager(AsyncKernelManager):
    """Hands the connection file to the sandbox uid, which must read it to start; jailed,
    writes the kernel its own copy instead (`jail_copy`, in its private directory, with
    the socket path as the jail sees it): the server's file stays out of every jail.
    Made with the process's one zmq context (`_zmq_context`), which its client shares and
    neither destroys at shutdown."""

    sandbox_uid: int | None = None
    jail_copy: Path | None = None

    def client(self, **kwargs: Any) -> Any:
        kwargs.setdefault("context", self.context)
        return super().client(**kwargs)

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
        self._shutting: asyncio.Future[None] | None = None
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
        self._inboxes: dict[str, _Inbox] = {}

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
            context=_zmq_context(),
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
            context=_zmq_context(),
            transport="ipc",
            connection_file=str(runtime_dir / f"{private.name}.json"),
            ip=ip,
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
            # No heartbeat: liveness is the kernel's process (km.is_alive), and the
            # heartbeat would cost every kernel a thread, an event loop and a socket.
            kc.start_channels(hb=False)
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

    async def execute(
        self, code: str, timeout: float, sent: Callable[[], None] | None = None
    ) -> tuple[list[Event], str, int | None]:
        return await self._run(code, timeout, silent=False, sent=sent)

    async def _run(
        self, code: str, timeout: float, *, silent: bool, sent: Callable[[], None] | None = None
    ) -> tuple[list[Event], str, int | None]:
        if not await self._km.is_alive():
            raise KernelError("the kernel has died (state lost)")
        msg_id = self._inbox("shell").send(
            "execute_request",
            {
                "code": code,
                "silent": silent,
                "store_history": not silent,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
        )
        if sent is not None:
            sent()
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
                msg = await self._inbox("iopub").get(min(remaining, 1.0))
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
            events += _lost_output(events, reply["metadata"], streams.dropped)
        return events + streams.notes(), status, count

    async def _drain_shell(self, msg_id: str) -> dict[str, Any] | None:
        # The shell reply only adds what our output guard counted (its metadata); read
        # it so the queue does not grow, without waiting long for it.
        with contextlib.suppress(queue.Empty):
            while True:
                reply = await self._inbox("shell").get(0.5)
                if reply.get("parent_header", {}).get("msg_id") == msg_id:
                    return reply
        return None

    def _inbox(self, name: str) -> _Inbox:
        channel = getattr(self._kc, f"{name}_channel")
        if channel.socket is None:  # closed (shutdown): the shadow must not outlive it
            raise self._ended()
        inbox = self._inboxes.get(name)
        if inbox is None or not inbox.reads(channel.socket):  # the channels were remade
            if inbox is not None:
                inbox.close()
            # only the shell's replies carry metadata a run reads (the output counts)
            inbox = self._inboxes[name] = _Inbox(
                channel.socket, self._kc.session, metadata=name == "shell"
            )
        return inbox

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
        """Kill the kernel and free what it holds; every caller returns once that is done.
        A caller cancelled meanwhile does not cut the shutdown short (its files and
        sockets would be left open)."""
        self._closing = True
        if self._shutting is None:
            self._shutting = asyncio.ensure_future(self._shutdown())
        await asyncio.shield(self._shutting)

    async def _shutdown(self) -> None:
        pgid = self.pgid
        for inbox in self._inboxes.values():
            inbox.close()
        self._inboxes.clear()
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


class _Inbox:
    """One channel's messages, taken straight off the socket.

    jupyter_client's `get_*_msg` awaits a poll and then a receive, each a zmq.asyncio
    future with its callbacks (and zmq's event flags, an enum, at every step), for every
    message. A run's messages come in bursts (busy, input; result, idle), so most are
    already queued: those are read without waiting, by a non-blocking receive on a
    synchronous shadow of the same socket. Only when none is there does a run wait, on
    the event loop's own watch of a copy of the socket's descriptor (`_watch`).
    """

    def __init__(self, socket: Any, session: Any, *, metadata: bool = False) -> None:
        self._socket = socket
        self._now: zmq.Socket[Any] = zmq.Socket.shadow(socket.underlying)
        self._session = session
        # read once: each is a traitlets attribute, a lookup through its descriptor
        self._auth: hmac.HMAC | None = session.auth  # the connection key's HMAC (None: unsigned)
        self._unpack: Callable[[bytes], Any] = session.unpack
        self._pack: Callable[[Any], bytes] = session.pack
        self._metadata = metadata
        #: our copy of the socket's descriptor, watched by `_loop` (-1: not yet, or closed)
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def reads(self, socket: Any) -> bool:
        return socket is self._socket

    def send(self, msg_type: str, content: dict[str, Any]) -> str:
        """Send a request on this (shell) channel at once; its message id.

        What `Session.send` sends, made directly: a header, empty parent and metadata, the
        content, signed. `Session.msg` carries the date as a datetime that `serialize`
        turns back into text through a `default` hook, and the asyncio socket's send
        goes through a future; this is about a third of that, and the kernel gets the
        request that much sooner."""
        session = self._session
        msg_id: str = session.msg_id
        header = {
            "msg_id": msg_id,
            "msg_type": msg_type,
            "username": session.username,
            "session": session.session,
            "date": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
            "version": protocol_version,
        }
        parts = [self._pack(header), b"{}", b"{}", self._pack(content)]
        try:
            self._now.send_multipart([DELIM, self._sign(parts), *parts], _NOBLOCK)
        except zmq.Again:  # its queue is full or it has no peer: never block the loop
            raise KernelError("the kernel is not taking requests (state lost)") from None
        return msg_id

    def _take(self) -> dict[str, Any] | None:
        # asking first is cheaper than the zmq.Again a receive raises when none is there
        if self._closed or not cast(int, self._now.get(zmq.EVENTS)) & _POLLIN:
            return None
        try:
            parts = self._now.recv_multipart(_NOBLOCK)
        except zmq.Again:
            return None
        return self._decode(parts)

    def _decode(self, parts: list[bytes]) -> dict[str, Any]:
        """The parts of a message a run reads (msg_type, parent_header, content, and
        metadata where this inbox was made to read it), its signature checked:
        `Session.deserialize` also turns every date in both headers into a datetime
        (dateutil, some 40 % of a message's cost), which nothing here reads."""
        try:
            parts = parts[parts.index(DELIM) + 1 :]  # after the routing identities
        except ValueError:
            raise ValueError("malformed kernel message: no delimiter") from None
        if len(parts) < 5:
            raise ValueError(f"malformed kernel message: {len(parts)} parts, at least 5 expected")
        if self._auth is not None and not hmac.compare_digest(parts[0], self._sign(parts[1:5])):
            raise ValueError("kernel message with an invalid signature")
        unpack = self._unpack
        header = unpack(parts[1])
        message = {
            "header": header,
            "msg_type": header.get("msg_type"),
            "parent_header": unpack(parts[2]),
            "content": unpack(parts[4]),
        }
        if self._metadata:
            message["metadata"] = unpack(parts[3])
        return message

    def _sign(self, parts: list[bytes]) -> bytes:
        """`Session.sign`: the HMAC of the parts, in hex (b"" unsigned)."""
        if self._auth is None:
            return b""
        digest = self._auth.copy()
        for part in parts:
            digest.update(part)
        return digest.hexdigest().encode()

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch a copy of the socket's descriptor with the loop, for as long as this inbox
        lives: zmq.asyncio watches the original for its own futures; the copy is ours.
        The descriptor says only that the socket's state changed (it is edge-triggered),
        so a wait asks the socket itself before and after it."""
        self._fd = os.dup(cast(int, self._now.get(zmq.FD)))
        self._loop = loop
        loop.add_reader(self._fd, self._ready)

    def _ready(self) -> None:
        try:
            self._now.get(zmq.EVENTS)  # take the signal, or the descriptor stays readable
        except zmq.ZMQError:  # the socket was closed under us (the kernel's shutdown)
            self.close()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self, timeout: float) -> dict[str, Any]:
        """The next message; `queue.Empty` after `timeout` seconds without one."""
        message = self._take()
        if message is not None:
            return message
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._watch(loop)
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0 or self._closed:
                raise queue.Empty
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(left, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
            message = self._take()
            if message is not None:
                return message

    def close(self) -> None:
        """Stop watching (on the loop's thread); a run waiting here wakes and finds none."""
        self._closed = True
        if self._fd >= 0:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


# plain ints: zmq's flags are enums, slow to combine (a multipart receive does per part)
_POLLIN = int(zmq.POLLIN)
_NOBLOCK = int(zmq.NOBLOCK)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


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
