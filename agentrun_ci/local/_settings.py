"""Emulator settings: one frozen record, every limit in one place."""

from __future__ import annotations

import os
import secrets

import attrs

from ._faults import FaultPlan
from ._mounts import mount_map

__all__ = ["EmulatorSettings", "random_key_pair"]


def random_key_pair() -> tuple[str, str]:
    """A fresh (access key id, secret) that only this process knows.

    Sandboxed code shares the machine's loopback with the emulator: requests signed
    with a key it cannot know keep it from listing, running in or deleting sandboxes."""
    return f"local-{secrets.token_hex(8)}", secrets.token_urlsafe(32)


def _default_uid() -> int | None:
    # As root, RLIMIT_NPROC is not enforced (CAP_SYS_RESOURCE), so a fork bomb would
    # not be stopped by it: sandboxed processes therefore drop to an unprivileged uid.
    return 23456 if hasattr(os, "geteuid") and os.geteuid() == 0 else None


@attrs.frozen(kw_only=True)
class EmulatorSettings:
    """How the local emulator behaves. Every field has a safe default.

    Limits apply to each kernel and each command process (setrlimit in the child):
    `memory_mb` (RLIMIT_AS; javascript kernels get a V8 heap cap instead), `cpu_seconds`
    (RLIMIT_CPU for commands; kernels get `kernel_cpu_seconds` because their CPU time
    accumulates over their whole life), `file_size_mb` (RLIMIT_FSIZE), `max_processes`
    (RLIMIT_NPROC: counted per uid, threads included; see `sandbox_uid`).
    """

    max_exec_timeout: float = 30.0
    provisioning_delay: float = 0.0
    memory_mb: int | None = 2048
    cpu_seconds: int | None = 60
    kernel_cpu_seconds: int | None = 3600
    file_size_mb: int | None = 1024
    max_processes: int | None = 512
    idle_timeout: float | None = None
    """Override every sandbox's idle timeout (seconds); None = the sandbox's own value."""
    ttl: float = 6 * 3600.0
    """Maximum sandbox life in seconds (the cloud's is 6 h)."""
    max_upload_bytes: int = 100 * 1024 * 1024
    spare_kernels: int = 1
    """Spare slots (sandboxes-to-be with a python kernel already started) kept while
    sandboxes are being created: at start, and again from each creation until
    `spare_idle_timeout`. 0 = none, ever (every sandbox's first context is a cold start)."""
    max_spare_kernels: int | None = None
    """The most spare slots kept when creations come in bursts (the count of creations in
    the last few seconds, see `_spares.SpareDemand`). None = what the machine can hold: four
    per kernel start slot, and no more than a quarter of its available memory at about
    64 MB per idle kernel."""
    spare_idle_timeout: float = 300.0
    """Seconds without a sandbox creation after which every spare is shut down (they cost
    memory: about 55 MB each); the next creation brings them back."""
    kernel_starts: int | None = None
    """How many python kernels may start at once (each costs about a CPU-second of imports);
    more wait their turn in order. None = the CPUs this process may run on: on a loaded
    machine, concurrent cold starts competing for the cores all finished late, or not at
    all, where queued ones finish one after another."""
    kernel_start_queue: int = 32
    """How many context creations may wait for a kernel start; past that the emulator
    answers 503 (ERR_SERVICE_UNAVAILABLE, with Retry-After) at once instead of queueing
    work it cannot start for minutes."""
    kernel_start_timeout: float = 120.0
    """Seconds a kernel (and its sandbox's namespace holder) may take to answer once its
    start has begun (time spent queued not counted). A quiet 2-core machine starts one in
    about a second; at load 15 on 2 cores a process gets about an eighth of a CPU, so ten
    times that, and 120 s leaves room for worse. Only a kernel that lives but never answers
    waits this long: one that dies fails at once, with its exit status and last words."""
    access_key_id: str | None = attrs.field(default=None, repr=False)
    access_key_secret: str | None = attrs.field(default=None, repr=False)
    api_key: str | None = attrs.field(default=None, repr=False)
    """Also accept data-plane requests that carry this key as `X-API-Key` (AgentRun's
    API-key mode; the control plane still takes only signatures). A request with another
    key gets 401 naming the API key."""
    sandbox_uid: int | None = attrs.field(factory=_default_uid)
    """As root: the first uid of the range sandboxes run as (with bubblewrap, one uid per
    sandbox, leased from here upwards; without it, this one uid, which must be able to run
    the interpreter, or sandboxes are refused). None = our own uid (root only in a user
    namespace, and never without bubblewrap)."""
    no_network: bool = False
    """Every sandbox gets loopback only (a network namespace of its own, no uplink), as if
    each template's networkMode were PRIVATE. Either way each jailed sandbox has its own
    network namespace, and PUBLIC ones get out through slirp4netns or pasta (`_network.py`);
    without the jail this needs root (`unshare -n`)."""
    pid_namespace: bool = True
    """Give each kernel and command its own PID namespace and /proc, so code cannot see the
    server (nor read its environment) where `unshare` allows it (root); False = never."""
    jail: bool = True
    """Run every kernel and command in a bubblewrap jail (`bwrap`) where the machine has
    one: the sandbox's own files at /home/user, nothing else of the host writable, no
    other sandbox visible (see docs/local-backend.md). Needs `pid_namespace`; False, or no
    bwrap, = process limits only, with one warning saying what is lost."""
    reaper_interval: float = 1.0
    tty_idle_timeout: float = 120.0
    """Close a `/processes/tty` connection after this many seconds without input or
    output (AgentRun closes idle ones after 2 minutes), and end a shell that has had no
    connection for as long."""
    tty_ping_interval: float = 30.0
    """Send a `ping` frame on each `/processes/tty` connection this often (AgentRun: 30 s)."""
    python_executable: str | None = None
    """The interpreter for python kernels (must have ipykernel); None = sys.executable."""
    mounts: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=mount_map)
    """Host directories that stand for OSS, NAS and PolarFS: `{"oss://BUCKET[/PATH]":
    "/host/dir", "nas://SERVER:/PATH": ..., "polarfs://INSTANCE[/PATH]": ...}` (or pairs).
    A template's or sandbox's mount of a mapped remote is bound at its mount directory in
    the sandbox (read-only where it says so; needs the jail); an unmapped one is kept but
    not mounted, with a warning (see `_mounts.py`)."""
    faults: FaultPlan | None = None
    """Inject faults (see `agentrun_ci.local.FaultPlan`); None = off, and no /_admin/faults
    route (give `FaultPlan()` to change the plan at run time through that route)."""

    def __attrs_post_init__(self) -> None:
        if bool(self.access_key_id) != bool(self.access_key_secret):
            raise ValueError("give both access_key_id and access_key_secret, or neither")
        if self.max_exec_timeout <= 0:
            raise ValueError("max_exec_timeout must be positive seconds")
        if self.kernel_starts is not None and self.kernel_starts < 1:
            raise ValueError("kernel_starts must be at least 1 (None = one per CPU)")
        if self.kernel_start_queue < 0:
            raise ValueError("kernel_start_queue must be >= 0 (0 = never wait for a start)")
        if self.spare_kernels < 0:
            raise ValueError("spare_kernels must be >= 0 (0 = no spare kernels)")
        if self.max_spare_kernels is not None and self.max_spare_kernels < 0:
            raise ValueError("max_spare_kernels must be >= 0 (None = what the machine holds)")
        if self.spare_idle_timeout <= 0:
            raise ValueError("spare_idle_timeout must be positive seconds")
        if self.kernel_start_timeout <= 0:
            raise ValueError("kernel_start_timeout must be positive seconds")

    @property
    def start_slots(self) -> int:
        """`kernel_starts`, or the CPUs this process may run on."""
        if self.kernel_starts is not None:
            return self.kernel_starts
        affinity = getattr(os, "sched_getaffinity", None)  # Linux: the CPUs we may use
        return max(1, len(affinity(0)) if affinity else os.cpu_count() or 1)

    @property
    def signed(self) -> bool:
        return bool(self.access_key_id and self.access_key_secret)
