"""The emulator's state: templates, sandboxes, contexts, processes, and their lifecycles.

Everything here runs on the server's one event loop; routes in `_app.py` only
translate HTTP to these methods and back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import attrs

from ._errors import ApiError, bad_request, not_found
from ._fs import HOME, SandboxFS
from ._kernels import Kernel, KernelError, Launch, NodeKernel, SparePool, sockets_fit_in
from ._limits import (
    PidsCgroup,
    chown_tree,
    instance_name,
    kill_group,
    pid_namespace_works,
    scrubbed_env,
    sweep_stale,
    usable_uid,
)
from ._settings import EmulatorSettings
from ._threads import blocking
from ._tree import remove_tree
from ._usage import Meter, process_usage

__all__ = ["Core"]

log = logging.getLogger("agentrun_ci.local")

_SHORT_TMP = "/tmp"  # noqa: S108 -- kernels' sockets when $TMPDIR is too deep for them
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
LANGUAGES = ("python", "javascript")
REGION = "cn-hangzhou"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_ulid() -> str:
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def _number(body: dict[str, Any], key: str, default: float) -> float:
    value = body.get(key, default)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ApiError(400, "ERR_VALIDATION_FAILED", f"{key} must be a number") from None


@attrs.define
class Template:
    name: str
    body: dict[str, Any]
    template_id: str
    status: str
    created_at: str
    updated_at: str
    ready_at: float

    def refresh(self) -> None:
        if self.status in ("CREATING", "UPDATING") and time.monotonic() >= self.ready_at:
            self.status = "READY"

    def wire(self) -> dict[str, Any]:
        self.refresh()
        b = self.body
        out = dict(b)
        out.update(
            templateName=self.name,
            templateId=self.template_id,
            templateArn=f"acs:agentrun:{REGION}:local:templates/{self.name}",
            templateType=b.get("templateType", "CodeInterpreter"),
            resourceName=self.name,
            templateVersion="1",
            status=self.status,
            statusReason="",
            cpu=b.get("cpu", 2.0),
            memory=b.get("memory", 4096),
            diskSize=b.get("diskSize", 512),
            networkConfiguration=b.get("networkConfiguration", {"networkMode": "PUBLIC"}),
            # typed as strings in the official response model (agentrun-api.md §2.3)
            sandboxIdleTimeoutInSeconds=str(b.get("sandboxIdleTimeoutInSeconds", 1800)),
            sandboxTTLInSeconds=str(b.get("sandboxTTLInSeconds", 21600)),
            environmentVariables=b.get("environmentVariables") or {},
            createdAt=self.created_at,
            lastUpdatedAt=self.updated_at,
        )
        return out


@attrs.define
class Context:
    id: str
    language: str
    cwd: str
    kernel: Kernel
    lock: asyncio.Lock = attrs.field(factory=asyncio.Lock)

    def wire(self) -> dict[str, Any]:
        return {"id": self.id, "language": self.language, "cwd": self.cwd}


@attrs.define
class Process:
    pid: int
    command: str
    cwd: str
    tag: str
    created_at: str
    status: str = "running"
    exit_code: int | None = None
    proc: asyncio.subprocess.Process | None = None

    def wire(self) -> dict[str, Any]:
        return {
            "processId": self.pid,
            "pid": self.pid,
            "status": self.status,
            "command": self.command,
            "tag": self.tag,
            "createdAt": self.created_at,
        }


@attrs.define
class Sandbox:
    id: str
    template: Template
    root: Path
    fs: SandboxFS
    idle_timeout: float
    status: str
    created_at: str
    updated_at: str
    ready_at: float
    born: float
    last_active: float
    env: dict[str, str]
    ended_at: str | None = None
    contexts: dict[str, Context] = attrs.field(factory=dict)
    defaults: dict[str, str] = attrs.field(factory=dict)
    processes: dict[int, Process] = attrs.field(factory=dict)
    lock: asyncio.Lock = attrs.field(factory=asyncio.Lock)
    launch: Launch | None = None
    stopping: bool = False

    def refresh(self) -> None:
        if self.status == "CREATING" and time.monotonic() >= self.ready_at:
            self.status = "READY"

    def wire(self) -> dict[str, Any]:
        self.refresh()
        return {
            "sandboxId": self.id,
            "templateId": self.template.template_id,
            "templateName": self.template.name,
            "status": self.status,
            "createdAt": self.created_at,
            "lastUpdatedAt": self.updated_at,
            "endedAt": self.ended_at,
            "sandboxIdleTimeoutSeconds": int(self.idle_timeout),
            "sandboxArn": f"acs:agentrun:{REGION}:local:sandboxes/{self.id}",
            "metadata": {"emulator": "agentrun-ci-local"},
        }


class Core:
    """All state of one emulator instance. `start()` and `close()` on the server's loop."""

    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self.templates: dict[str, Template] = {}
        self.sandboxes: dict[str, Sandbox] = {}
        self.started = time.monotonic()
        exe = settings.python_executable or sys.executable
        self.uid = usable_uid(settings, exe)
        self.pid_namespace = settings.pid_namespace and pid_namespace_works(exe)
        for tmp in dict.fromkeys((tempfile.gettempdir(), _SHORT_TMP)):
            sweep_stale(tmp)
        name = instance_name()
        self.cgroups = PidsCgroup.create_root(f"{name}-{secrets.token_hex(4)}")
        self._base = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        os.chmod(self._base, 0o711)  # noqa: S103 - the sandbox uid must traverse it, not list it
        self.runtime = self._base / "runtime"
        self.runtime.mkdir(mode=0o700)
        for sub in ("ipython", "matplotlib", "spare"):
            (self.runtime / sub).mkdir(mode=0o700)
            chown_tree(str(self.runtime / sub), self.uid)
        chown_tree(str(self.runtime), self.uid)
        # Kernels' Unix sockets need a short path (at most 107 bytes); under a deep $TMPDIR
        # they get a private directory in /tmp, named like the base so the sweep finds it.
        self._sockets: Path | None = None
        if not sockets_fit_in(self.runtime):
            with contextlib.suppress(OSError):
                self._sockets = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=_SHORT_TMP))
                chown_tree(str(self._sockets), self.uid)
        self.launch = Launch(settings, self.uid, None, self.pid_namespace, self._sockets)
        self._sandbox_dir = self._base / "sandboxes"
        self._sandbox_dir.mkdir(mode=0o711)
        self.pool = SparePool(self.launch, self.runtime, str(self.runtime / "spare"), self.cgroups)
        self._reaper: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.pool.fill()
        self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await asyncio.gather(
            *(self._terminate(s) for s in list(self.sandboxes.values())), return_exceptions=True
        )
        await self.pool.close()
        if self.cgroups is not None:
            await blocking(self.cgroups.remove)
        await blocking(remove_tree, self._base)
        if self._sockets is not None:
            await blocking(remove_tree, self._sockets)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reaper_interval)
            now = time.monotonic()
            for sandbox in list(self.sandboxes.values()):
                sandbox.refresh()
                if sandbox.status not in ("READY", "CREATING") or sandbox.stopping:
                    continue
                idle = now - sandbox.last_active > sandbox.idle_timeout
                old = now - sandbox.born > self.settings.ttl
                if idle or old:
                    log.info("sandbox %s: %s, stopping", sandbox.id, "idle" if idle else "TTL")
                    try:
                        await self._terminate(sandbox)
                    except Exception:
                        log.exception("could not stop sandbox %s", sandbox.id)

    # ------------------------------------------------------------ templates

    def template(self, name: str) -> Template:
        template = self.templates.get(name)
        if template is None:
            raise not_found(f"template {name!r}")
        return template

    def create_template(self, body: dict[str, Any]) -> Template:
        name = body.get("templateName")
        if not isinstance(name, str) or not _ID.match(name):
            raise ApiError(
                400,
                "ERR_VALIDATION_FAILED",
                "templateName is required: 1-128 letters, digits, '-', '_' or '.'",
            )
        if name in self.templates:
            raise ApiError(409, "ERR_CONFLICT", f"template {name!r} already exists")
        for key in ("cpu", "memory"):
            if key in body and _number(body, key, 0) <= 0:
                raise ApiError(400, "ERR_VALIDATION_FAILED", f"{key} must be positive")
        stamp = now_iso()
        template = Template(
            name=name,
            body=dict(body),
            template_id=f"{uuid.uuid4()}.schema",
            status="CREATING",
            created_at=stamp,
            updated_at=stamp,
            ready_at=time.monotonic() + self.settings.provisioning_delay,
        )
        self.templates[name] = template
        return template

    def update_template(self, name: str, body: dict[str, Any]) -> Template:
        template = self.template(name)
        template.body.update({k: v for k, v in body.items() if k != "templateName"})
        template.status = "UPDATING"
        template.updated_at = now_iso()
        template.ready_at = time.monotonic() + self.settings.provisioning_delay
        return template

    def delete_template(self, name: str) -> Template:
        template = self.template(name)
        del self.templates[name]
        template.status = "DELETING"
        return template

    def list_templates(self, query: dict[str, str]) -> dict[str, Any]:
        items = [t.wire() for t in self.templates.values()]
        if query.get("templateName"):
            items = [t for t in items if query["templateName"] in t["templateName"]]
        if query.get("status"):
            items = [t for t in items if t["status"] == query["status"]]
        if query.get("templateType"):
            items = [t for t in items if t["templateType"] == query["templateType"]]
        page = max(1, int(query.get("pageNumber") or 1))
        size = max(1, min(100, int(query.get("pageSize") or 20)))
        return {
            "items": items[(page - 1) * size : page * size],
            "pageNumber": page,
            "pageSize": size,
            "total": len(items),
        }

    # ------------------------------------------------------------ sandboxes

    def sandbox(self, sandbox_id: str) -> Sandbox:
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is None:
            raise not_found(f"sandbox {sandbox_id!r}")
        sandbox.refresh()
        return sandbox

    def live(self, sandbox_id: str) -> Sandbox:
        """A sandbox that can run things now; touches its idle clock."""
        sandbox = self.sandbox(sandbox_id)
        if sandbox.status == "TERMINATED" or sandbox.stopping:
            raise ApiError(404, "ERR_NOT_FOUND", f"sandbox {sandbox_id!r} is TERMINATED")
        if sandbox.status != "READY":
            raise ApiError(
                409,
                "ERR_CONFLICT",
                f"sandbox {sandbox_id!r} is {sandbox.status}"
                + ("; resume it first" if sandbox.status == "PAUSED" else "; wait until READY"),
            )
        sandbox.last_active = time.monotonic()
        return sandbox

    def create_sandbox(self, body: dict[str, Any]) -> Sandbox:
        name = body.get("templateName")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "ERR_VALIDATION_FAILED", "templateName is required")
        template = self.template(name)
        template.refresh()
        if template.status != "READY":
            raise ApiError(
                409, "ERR_CONFLICT", f"template {name!r} is {template.status}, not READY yet"
            )
        sandbox_id = body.get("sandboxId") or new_ulid()
        if not isinstance(sandbox_id, str) or not _ID.match(sandbox_id):
            raise ApiError(
                400,
                "ERR_VALIDATION_FAILED",
                "sandboxId must be 1-128 letters, digits, '-', '_' or '.'",
            )
        if sandbox_id in self.sandboxes:
            raise ApiError(409, "ERR_CONFLICT", f"sandbox {sandbox_id!r} already exists")
        idle = body.get("sandboxIdleTimeoutSeconds") or body.get("sandboxIdleTimeoutInSeconds")
        if self.settings.idle_timeout is not None:
            idle_s = self.settings.idle_timeout
        elif idle is not None:
            idle_s = _number({"v": idle}, "v", 600)
        else:
            idle_s = float(template.body.get("sandboxIdleTimeoutInSeconds") or 600)
        root = self._sandbox_dir / sandbox_id
        root.mkdir(mode=0o700)
        chown_tree(str(root), self.uid)
        cgroup = None
        if self.cgroups is not None:
            cgroup = self.cgroups.child(f"sbx-{sandbox_id}", self.settings.max_processes)
        mono = time.monotonic()
        stamp = now_iso()
        env = {str(k): str(v) for k, v in (template.body.get("environmentVariables") or {}).items()}
        sandbox = Sandbox(
            id=sandbox_id,
            template=template,
            root=root,
            fs=SandboxFS(root),
            idle_timeout=idle_s,
            status="CREATING",
            created_at=stamp,
            updated_at=stamp,
            ready_at=mono + self.settings.provisioning_delay,
            born=mono,
            last_active=mono,
            env=env,
            launch=Launch(self.settings, self.uid, cgroup, self.pid_namespace, self._sockets),
        )
        self.sandboxes[sandbox_id] = sandbox
        return sandbox

    def list_sandboxes(self, query: dict[str, str]) -> dict[str, Any]:
        items = [s.wire() for s in self.sandboxes.values()]
        for key in ("sandboxId", "status", "templateName"):
            if query.get(key):
                items = [s for s in items if s[key] == query[key]]
        if query.get("templateType"):
            items = [
                s
                for s in items
                if self.sandboxes[s["sandboxId"]].template.body.get(
                    "templateType", "CodeInterpreter"
                )
                == query["templateType"]
            ]
        start = int(query.get("nextToken") or 0)
        size = max(1, min(1000, int(query.get("maxResults") or 100)))
        page = items[start : start + size]
        more = start + size < len(items)
        return {"items": page, "nextToken": str(start + size) if more else None}

    async def stop_sandbox(self, sandbox_id: str) -> Sandbox:
        sandbox = self.sandbox(sandbox_id)
        if sandbox.status != "TERMINATED":
            await self._terminate(sandbox)
        return sandbox

    async def delete_sandbox(self, sandbox_id: str) -> dict[str, Any]:
        sandbox = self.sandbox(sandbox_id)
        before = sandbox.wire()
        if sandbox.status != "TERMINATED":
            await self._terminate(sandbox)
        self.sandboxes.pop(sandbox_id, None)
        return before

    async def pause_sandbox(self, sandbox_id: str) -> Sandbox:
        sandbox = self.sandbox(sandbox_id)
        if sandbox.status == "PAUSED":
            return sandbox
        if sandbox.status != "READY":
            raise ApiError(409, "ERR_CONFLICT", f"sandbox {sandbox_id!r} is {sandbox.status}")
        await self._signal_all(sandbox, stop=True)
        sandbox.status = "PAUSED"
        sandbox.updated_at = now_iso()
        return sandbox

    async def resume_sandbox(self, sandbox_id: str) -> Sandbox:
        sandbox = self.sandbox(sandbox_id)
        if sandbox.status == "READY":
            return sandbox
        if sandbox.status != "PAUSED":
            raise ApiError(409, "ERR_CONFLICT", f"sandbox {sandbox_id!r} is {sandbox.status}")
        await self._signal_all(sandbox, stop=False)
        sandbox.status = "READY"
        sandbox.updated_at = now_iso()
        sandbox.last_active = time.monotonic()
        return sandbox

    async def _signal_all(self, sandbox: Sandbox, *, stop: bool) -> None:
        for ctx in sandbox.contexts.values():
            await ctx.kernel.pause(stop)
        for proc in sandbox.processes.values():
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, 19 if stop else 18)

    async def _terminate(self, sandbox: Sandbox) -> None:
        # Refuse new work at once; say TERMINATED only when everything is gone.
        if sandbox.stopping:
            return
        sandbox.stopping = True
        contexts, sandbox.contexts = list(sandbox.contexts.values()), {}
        sandbox.defaults.clear()
        await asyncio.gather(*(c.kernel.shutdown() for c in contexts), return_exceptions=True)
        for proc in sandbox.processes.values():
            await blocking(kill_group, proc.pid)
            if proc.status == "running":
                proc.status = "killed"
            await _reap(proc)
        if sandbox.launch is not None and sandbox.launch.cgroup is not None:
            await blocking(sandbox.launch.cgroup.remove)
        await blocking(remove_tree, sandbox.root)
        sandbox.status = "TERMINATED"
        sandbox.ended_at = sandbox.updated_at = now_iso()

    # ------------------------------------------------------------ contexts

    async def create_context(self, sandbox: Sandbox, language: str, cwd: str) -> Context:
        if language not in LANGUAGES:
            raise bad_request(f"unsupported language {language!r}: use one of {LANGUAGES}")
        real = sandbox.fs.resolve(cwd)
        if not real.is_dir():
            raise bad_request(f"cwd {cwd!r} is not an existing directory")
        kernel: Kernel
        try:
            if language == "python":
                kernel = await self.pool.take(self._launch(sandbox), str(real), sandbox.env)
            else:
                if not NodeKernel.available():
                    raise bad_request(
                        "javascript contexts need `node` on PATH and it is not there; "
                        "install Node.js"
                    )
                kernel = await NodeKernel.start(self._launch(sandbox), str(real), sandbox.env)
        except KernelError as exc:
            # Nothing existed yet, so no state was lost, whatever the kernel said.
            raise ApiError(
                500,
                "ERR_INTERNAL_SERVER_ERROR",
                f"could not start a {language} kernel for a new context ({exc}); "
                "no code ran: retry",
            ) from exc
        if sandbox.status == "TERMINATED" or sandbox.stopping:  # stopped meanwhile
            await kernel.shutdown()
            raise ApiError(404, "ERR_NOT_FOUND", f"sandbox {sandbox.id!r} is TERMINATED")
        ctx = Context(id=str(uuid.uuid4()), language=language, cwd=cwd or HOME, kernel=kernel)
        sandbox.contexts[ctx.id] = ctx
        return ctx

    def _launch(self, sandbox: Sandbox) -> Launch:
        return sandbox.launch or self.launch

    def context(self, sandbox: Sandbox, context_id: str) -> Context:
        ctx = sandbox.contexts.get(context_id)
        if ctx is None:
            raise not_found(f"context {context_id!r}")
        return ctx

    async def delete_context(self, sandbox: Sandbox, context_id: str) -> None:
        ctx = self.context(sandbox, context_id)
        del sandbox.contexts[context_id]
        for lang, cid in list(sandbox.defaults.items()):
            if cid == context_id:
                del sandbox.defaults[lang]
        await ctx.kernel.shutdown()

    async def execute(self, sandbox: Sandbox, body: dict[str, Any]) -> dict[str, Any]:
        code = body.get("code")
        if not isinstance(code, str):
            raise bad_request("code is required (a string)")
        timeout = _number(body, "timeout", 30)
        cap = self.settings.max_exec_timeout
        if timeout <= 0 or timeout > cap:
            raise bad_request(
                f"timeout must be > 0 and at most {cap:g} seconds (got {timeout:g}); "
                "split longer work into several executions"
            )
        context_id = body.get("contextId")
        if context_id:
            ctx = self.context(sandbox, str(context_id))
        else:
            language = body.get("language") or "python"
            async with sandbox.lock:
                cid = sandbox.defaults.get(language)
                if cid is None or cid not in sandbox.contexts:
                    ctx = await self.create_context(sandbox, language, HOME)
                    sandbox.defaults[language] = ctx.id
                else:
                    ctx = sandbox.contexts[cid]
        async with ctx.lock:
            meter = Meter.start(_members(sandbox, ctx.kernel))
            try:
                events, status, count = await ctx.kernel.execute(code, timeout)
            except KernelError as exc:
                sandbox.contexts.pop(ctx.id, None)
                await ctx.kernel.shutdown()
                raise ApiError(
                    500, "ERR_CONTEXT_LOST", f"context {ctx.id} was lost: {exc}"
                ) from exc
            finally:
                sandbox.last_active = time.monotonic()
            usage = meter.finish()
        end: dict[str, Any] = {"type": "endOfExecution", "status": status}
        if count is not None:
            end["executionCount"] = count
        # `usage` is ours: the cloud reports no per-execution usage that we know of
        return {"results": [*events, end], "contextId": ctx.id, "usage": usage}

    # ------------------------------------------------------------ processes

    async def run_command(self, sandbox: Sandbox, body: dict[str, Any]) -> dict[str, Any]:
        command = body.get("command")
        if not isinstance(command, str) or not command.strip():
            raise bad_request("command is required (a non-empty string)")
        timeout = _number(body, "timeout", 30)
        cap = self.settings.max_exec_timeout
        if timeout <= 0 or timeout > cap:
            raise bad_request(f"timeout must be > 0 and at most {cap:g} seconds (got {timeout:g})")
        cwd_api = body.get("cwd") or HOME
        cwd = sandbox.fs.resolve(cwd_api)
        if not cwd.is_dir():
            raise bad_request(f"cwd {cwd_api!r} is not an existing directory")
        shell = shutil.which("bash") or "/bin/sh"
        started = time.monotonic()
        launch = self._launch(sandbox)
        # In a PID namespace the command's init outlives the shell while background jobs
        # (`nohup job &`) run, so the shell's exit code comes back through a pipe.
        status_r, status_w = os.pipe() if launch.pid_namespace else (-1, -1)
        # Output goes to unlinked temporary files, not pipes: a background child
        # (`sleep 60 &`) keeps a pipe open and would hold the reply hostage.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *launch.argv([shell, "-c", command], status_fd=status_w, linger=True),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    cwd=str(cwd),
                    env=scrubbed_env(str(sandbox.root), sandbox.env),
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


def _close(fd: int) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)


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


def _members(sandbox: Sandbox, kernel: Kernel) -> Callable[[], list[int]]:
    """Whose resources a run is measured on (see _usage.py)."""
    cgroup = sandbox.launch.cgroup if sandbox.launch is not None else None
    if cgroup is not None:
        return cgroup.pids
    pgid = kernel.pgid
    return lambda: [pgid] if pgid else []
