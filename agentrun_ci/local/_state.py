"""The emulator's records: templates, sandboxes, contexts and processes, as `Core` keeps
them and the API shows them (`wire`).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import attrs

from ._disk import DEFAULT_DISK_MB
from ._fs import SandboxFS
from ._kernels import Kernel, Launch, PythonKernel
from ._spares import SpareDemand
from ._tty import TtySession
from ._usage import Gauges

__all__ = ["REGION", "Context", "Process", "Sandbox", "Template", "new_ulid", "now_iso"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
REGION = "cn-hangzhou"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_ulid() -> str:
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


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
            diskSize=b.get("diskSize", DEFAULT_DISK_MB),
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
    #: the shell's terminal, for a process started by a `/processes/tty` connection
    tty: TtySession | None = None

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
    #: the sandbox's directory: `root` (its /home/user) and, jailed, its /tmp
    base: Path | None = None
    #: python kernels started in this sandbox's jail, waiting for its next contexts (the
    #: spare slot's, then as many as `demand` asks for)
    spares: list[PythonKernel] = attrs.field(factory=list)
    #: the spare slot's kernel, still starting when this sandbox took the slot: its first
    #: python context waits for it (`Core._settle_pending`)
    pending: asyncio.Future[PythonKernel] | None = None
    #: python contexts created so far (from the second on, spares are kept warm)
    python_contexts: int = 0
    #: spare kernel starts in flight
    refilling: int = 0
    #: when this sandbox's python contexts were created: how many spares it keeps
    demand: SpareDemand | None = None
    #: its own storage mounts as created (`nasConfig`, `ossMountConfig`, `polarFsConfig`)
    mounts: dict[str, Any] = attrs.field(factory=dict)
    #: the /proc files its runs are measured on (closed when it ends)
    gauges: Gauges = attrs.field(factory=Gauges)

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
            # not in the official Sandbox model (its client drops them): returned as given
            **self.mounts,
        }
