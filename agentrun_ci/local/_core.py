"""The emulator's state and its lifecycles: templates, sandboxes, contexts; processes by
`_processes.ProcessesMixin`, the records in `_state.py`, the jail probes in `_probe.py`.

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
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import attrs

from .._procfs import stat_fields
from ._admission import StartGate, StartQueueFull
from ._disk import DEFAULT_DISK_MB, disk_of, home_of, mount_disk, resize_disk, tmp_of
from ._errors import ApiError, bad_request, not_found
from ._fs import HOME, SandboxFS
from ._holder import Holder
from ._jail import (
    JAIL_INSIDE_UID,
    JAIL_TMP,
    PIP_PREFIX,
    Jail,
    find_jail,
    interpreter_info,
    write_tools,
)
from ._kernels import (
    Kernel,
    KernelError,
    Launch,
    NodeKernel,
    PythonKernel,
    Slot,
    SparePool,
    sockets_fit_in,
    start_python,
)
from ._limits import (
    PidsCgroup,
    chown_tree,
    group_members,
    instance_name,
    kill_group,
    pid_namespace_works,
    sweep_stale,
    usable_uid,
)
from ._mounts import requested_mounts, resolve
from ._network import UplinkTool, find_uplink, is_public, resolv_conf
from ._probe import _try_jail, _try_uplink, _warn_lost, _with_holder
from ._processes import ProcessesMixin, _reap
from ._records import (
    ExecuteAnswer,
    ExecuteRequest,
    check_template_fields,
    int_query,
    number_field,
)
from ._settings import EmulatorSettings
from ._spares import SpareDemand, spare_cap
from ._state import Context, Sandbox, Template, new_ulid, now_iso
from ._threads import blocking
from ._tree import remove_tree
from ._uids import UidLease, lease_uid
from ._usage import Meter, launch_chain

__all__ = ["Core", "Sandbox"]

log = logging.getLogger("agentrun_ci.local")

_SHORT_TMP = "/tmp"  # noqa: S108 -- kernels' sockets when $TMPDIR is too deep for them
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
#: what an UpdateTemplate does not change (UpdateTemplateInput has none of them)
_FIXED_FIELDS = frozenset({"templateName", "templateType", "diskSize"})
#: a CreateSandboxInput's storage mounts, kept on the sandbox and returned with it
_SANDBOX_MOUNTS = ("nasConfig", "ossMountConfig", "polarFsConfig")
LANGUAGES = ("python", "javascript")


#: about how many of a sandbox's processes (threads count) one idle python kernel holds
_KERNEL_TASKS = 16


class Core(ProcessesMixin):
    """All state of one emulator instance. `start()` and `close()` on the server's loop."""

    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self.templates: dict[str, Template] = {}
        self.sandboxes: dict[str, Sandbox] = {}
        self.started = time.monotonic()
        # absolute and without `..`: the jail mounts the interpreter's own directories
        exe = os.path.abspath(settings.python_executable or sys.executable)
        for tmp in dict.fromkeys((tempfile.gettempdir(), _SHORT_TMP)):
            sweep_stale(tmp)
        name = instance_name()
        self._base = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        os.chmod(self._base, 0o711)  # noqa: S103 - the sandbox uid must traverse it, not list it
        self.runtime = self._base / "runtime"
        self.runtime.mkdir(mode=0o700)
        self.tools = Path(write_tools(self.runtime / "tools"))  # `pip`; the node REPL
        self.jail = self._find_jail(exe)
        #: what gives PUBLIC sandboxes their outbound network (`_network.py`), if anything
        self.uplink = self._find_uplink(exe)
        if self.uplink is not None and self.jail is not None:
            self.jail = attrs.evolve(self.jail, resolv=resolv_conf(self.runtime))
        if self.jail is not None:
            self.uid = self.jail.uid if self.jail.privileged else None
            self.pid_namespace = True
        else:
            self.uid = usable_uid(settings, exe)
            self.pid_namespace = settings.pid_namespace and pid_namespace_works(exe)
        #: why sandboxes are refused here (sandbox code would run as root), else ""
        self.refusal = self._root_refusal(exe)
        self.cgroups = PidsCgroup.create_root(f"{name}-{secrets.token_hex(4)}")
        for sub in ("ipython", "matplotlib"):
            (self.runtime / sub).mkdir(mode=0o700)
            chown_tree(str(self.runtime / sub), self.uid)
        if self.jail is None:
            chown_tree(str(self.runtime), self.uid)
        # Kernels' Unix sockets need a short path (at most 107 bytes); under a deep $TMPDIR
        # they get a private directory in /tmp, named like the base so the sweep finds it.
        self._sockets: Path | None = None
        if not sockets_fit_in(self.runtime):
            with contextlib.suppress(OSError):
                self._sockets = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=_SHORT_TMP))
                if self.jail is None:
                    chown_tree(str(self._sockets), self.uid)
                else:
                    os.chmod(self._sockets, 0o711)  # noqa: S103 - traversed by the uid
        self.launch = Launch(
            settings,
            self.uid,
            None,
            self.pid_namespace,
            self._sockets,
            runtime=self.runtime,
            tools=self.tools,
        )
        self._sandbox_dir = self._base / "sandboxes"
        self._sandbox_dir.mkdir(mode=0o711)
        self._disks = self._disks_work()
        #: each sandbox's (and spare slot's) own uid, by its directory (privileged jail)
        self._uids: dict[Path, UidLease] = {}
        #: kernel starts, a few at a time (`_admission`): shared by requests and spares
        self.starts = StartGate(settings.start_slots, settings.kernel_start_queue)
        self.pool = SparePool(settings, self._make_slot, self.starts, others=self.spares_held)
        self._refills: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        #: set by kill_now(): the process is about to exit; nothing new may start
        self.halted = False

    def _find_jail(self, exe: str) -> Jail | None:
        """The bubblewrap jail, tried once on a scratch sandbox; None (and one warning
        saying what is lost) where there is none."""
        settings = self.settings
        if not settings.jail:
            return None
        if not settings.pid_namespace:  # asked for: said, not warned
            log.info("pid_namespace=False: sandboxes run without a jail or PID namespace")
            return None
        jail, why = find_jail(exe, settings.sandbox_uid)
        if jail is not None:
            jail = attrs.evolve(jail, tools=str(self.tools))
            why = _try_jail(jail, self._base, exe)
            if not why:
                return _with_holder(jail, self._base, exe)
            if jail.privileged:  # e.g. the sandbox uid may not read the interpreter
                userns = attrs.evolve(jail, privileged=False, uid=JAIL_INSIDE_UID)
                if not _try_jail(userns, self._base, exe):
                    _warn_lost(
                        f"uid {jail.uid} cannot run {exe} in the jail ({why}); sandboxes "
                        "run in a user namespace instead, with no capabilities but as root "
                        f"outside it. Fix: make {exe} readable by uid {jail.uid}, or set "
                        "sandbox_uid to a uid that can run it"
                    )
                    return userns
        _warn_lost(f"no jail for local sandboxes: {why}")
        return None

    def _find_uplink(self, exe: str) -> UplinkTool | None:
        """The uplink tool for PUBLIC sandboxes, tried once on a scratch holder; None (and
        one warning saying what is lost, and the fix) where there is none."""
        settings, jail = self.settings, self.jail
        if settings.no_network:  # no sandbox gets out: nothing to connect
            return None
        lost = (
            "PUBLIC sandboxes share this machine's network: their code reaches its "
            "loopback services (this emulator's API, local daemons, other sandboxes' "
            "servers); PRIVATE ones get loopback only"
        )
        if jail is None:
            why = "no jail" if os.geteuid() == 0 else "no jail, and `unshare -n` needs root"
            private = "get loopback only" if os.geteuid() == 0 else "too"
            said = (
                f"local sandboxes share this machine's network ({why}): their code reaches "
                f"its loopback services (this emulator's API, local daemons); PRIVATE ones "
                f"{private}"
            )
            if settings.jail and settings.pid_namespace:
                _warn_lost(f"{said}. Fix: install bubblewrap and slirp4netns")
            else:  # the jail is off on purpose: said, not warned
                log.info("%s", said)
            return None
        if not jail.shares_namespaces:
            _warn_lost(f"{lost} (a sandbox's uplink needs its namespace holder: see above)")
            return None
        tool, why = find_uplink()
        if tool is not None:
            why = _try_uplink(jail, tool, self._base, exe)
        if tool is None or why:
            _warn_lost(f"{lost} ({why})")
            return None
        return tool

    def _disks_work(self) -> bool:
        """Can each sandbox get a disk capped at its template's diskSize (`_disk.py`)?
        Tried once per emulator; where not, one warning says so and how to fix it."""
        probe = self._base / "probe-disk"
        probe.mkdir(mode=0o700)
        try:
            why = mount_disk(probe, 1)
        finally:
            remove_tree(probe)  # unmounts it first
        if why:
            log.warning(
                "local sandboxes' disks are not capped (%s): a sandbox can fill this "
                "machine's %s, whatever its template's diskSize. Fix: run the emulator as "
                "root (docs/local-backend.md)",
                why,
                tempfile.gettempdir(),
            )
        return not why

    def _root_refusal(self, exe: str) -> str:
        """Without a jail, sandboxed code runs as `self.uid`: as root that must be an
        unprivileged uid, else every sandbox is refused, with the fix (said at start)."""
        if self.jail is not None or not hasattr(os, "geteuid") or os.geteuid() != 0:
            return ""
        if self.uid is not None and self.uid != 0:
            return ""
        uid = self.settings.sandbox_uid
        who = (
            f"uid {uid} cannot run {exe}"
            if uid
            else "sandbox_uid is None, so sandboxed code would keep the emulator's uid"
        )
        why = (
            f"local sandboxes are refused: there is no jail and {who}, so sandboxed code "
            f"would run as root. Fix: install bubblewrap (`apt-get install bubblewrap`); or "
            f"make the interpreter readable by the sandbox uid: a virtualenv under /root is "
            f"not, so create one elsewhere (`uv venv /opt/agentrun-venv`, install "
            f"agentrun-ci[local] there) and pass it as python_executable; or set sandbox_uid "
            f"to an unprivileged uid that can run {exe}"
        )
        log.warning("%s", why)
        return why

    def _make_slot(self, name: str, public: bool | None = None) -> Slot:
        """A sandbox's directory: its disk (`_disk.py`) holding `home` (/home/user) and
        `tmp` (/tmp); its cgroup and launch. `public`: may its code reach out (None: a
        spare, whose sandbox is not known yet)."""
        base = self._sandbox_dir / name
        base.mkdir(mode=0o711)
        try:
            return self._fill_slot(base, public)
        except BaseException:
            remove_tree(base)
            self._release_uid(base)
            raise

    def _release_uid(self, base: Path) -> None:
        lease = self._uids.pop(base, None)
        if lease is not None:
            lease.release()

    def _public(self, public: bool) -> bool:
        """Will a sandbox of a PUBLIC (True) or PRIVATE template reach out, where it has
        no holder? (PRIVATE without the jail needs root: else it shares the host's.)"""
        if self.settings.no_network:
            return False
        return public or (self.jail is None and os.geteuid() != 0)

    def _fits(self, slot: Slot, public: bool) -> bool:
        """Can a sandbox whose code may reach out (`public`) take this spare slot?"""
        holder = slot.launch.holder
        if holder is not None and holder.own_net:  # loopback only until it connects
            return not public or holder.can_connect
        return slot.launch.public == self._public(public)

    def _fill_slot(self, base: Path, public: bool | None) -> Slot:
        disk_of(base).mkdir(mode=0o711)
        if self._disks:  # the template's size is set when a sandbox takes the slot
            why = mount_disk(disk_of(base), DEFAULT_DISK_MB)
            if why:
                raise OSError(f"could not mount the sandbox's disk: {why}")
        jail, uid = self.jail, self.uid
        if jail is not None and jail.privileged:  # a uid of its own (`_uids.py`)
            lease = self._uids[base] = lease_uid(jail.uid)
            jail, uid = attrs.evolve(jail, uid=lease.uid), lease.uid
        home, tmp = home_of(base), tmp_of(base)
        home.mkdir(mode=0o700)
        chown_tree(str(home), uid)
        # its /tmp in a jail; everywhere, where `pip install` puts packages (PIP_PREFIX):
        # the site-packages directory must exist before a kernel starts to be on its path
        # 0711: an interpreter bound below /tmp (a venv in a clone there) is exec'd by the
        # jail's capability-less root before our init becomes the sandbox's uid
        tmp.mkdir(mode=0o711)
        prefix = tmp / PIP_PREFIX.removeprefix(JAIL_TMP + "/")
        version = interpreter_info(self.launch.python).version
        site = prefix / "lib" / version / "site-packages"
        site.mkdir(parents=True)
        for path in (tmp, prefix, prefix / "lib", site.parent, site):
            chown_tree(str(path), uid)
        cgroup = None
        if self.cgroups is not None:
            cgroup = self.cgroups.child(f"sbx-{base.name.lstrip('.')}", self.settings.max_processes)
        holder = None
        no_network = self.settings.no_network
        if jail is not None and jail.shares_namespaces:
            # a network namespace of its own: loopback, and an uplink once PUBLIC
            own_net = no_network or self.uplink is not None or public is False
            holder = Holder(
                jail,
                home,
                python=self.launch.python,
                own_net=own_net,
                uplink=self.uplink,
                start_timeout=self.settings.kernel_start_timeout,
            )
            reach = not no_network and (not own_net if public is None else public)
        else:
            reach = self._public(True if public is None else public)
        launch = attrs.evolve(
            self.launch,
            uid=uid,
            cgroup=cgroup,
            jail=jail,
            home=home,
            tmp=tmp,
            holder=holder,
            public=reach,
        )
        return Slot(base, launch)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if not self.refusal:  # no spare kernel as root
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
        for task in list(self._refills):  # each shuts its kernel down: its sandbox stopped
            with contextlib.suppress(BaseException):
                await task
        await self.pool.close()
        if self.cgroups is not None:
            await blocking(self.cgroups.remove)
        await blocking(remove_tree, self._base)
        for lease in self._uids.values():
            lease.release()
        self._uids.clear()
        if self._sockets is not None:
            await blocking(remove_tree, self._sockets)

    def _check_halted(self) -> None:
        if self.halted:
            raise ApiError(503, "ERR_SERVICE_UNAVAILABLE", "the emulator is stopping")

    def kill_now(self) -> None:
        """SIGKILL every process of every sandbox and spare at once, without waiting for
        any to die, then remove the emulator's directories: the stop for a process about to
        exit that cannot wait for `close()` (which deletes sandbox by sandbox, waiting for
        each to be gone). Safe from any thread: it only reads what it kills."""
        self.halted = True  # nothing new is started from here on (see _check_halted)
        me = os.getpid()
        # below this process, what belongs to this emulator (another one may share it)
        places = [str(self._base)] + ([str(self._sockets)] if self._sockets is not None else [])
        # Rounds until one finds nothing: a start in flight in another thread when the first
        # round looked (forked, not yet exec'd into something that names our directories)
        # is caught by a later one.
        for sweep in range(20):
            groups: set[int] = set()
            for _ in range(100):  # the emulator's thread may change the dicts while we read
                try:
                    groups = self._process_groups()
                    break
                except RuntimeError:
                    continue
            targets = [pid for pid in _descendants(me) if _mentions(pid, places)]
            members: list[int] = []
            if self.cgroups is not None:
                with contextlib.suppress(OSError):
                    members = _cgroup_members(self.cgroups.path)
            if not targets and not members and sweep > 0:
                break
            for pgid in groups - {me, os.getpgid(0)}:
                with contextlib.suppress(OSError):
                    os.killpg(pgid, signal.SIGKILL)
            for pid in targets + members:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        remove_tree(self._base)
        if self._sockets is not None:
            remove_tree(self._sockets)
        if self.cgroups is not None:  # empty as soon as the killed have exited: moments
            roots = [self.cgroups.path, self.cgroups.memory, self.cgroups.freezer]
            _remove_cgroup_trees([r for r in dict.fromkeys(roots) if r], deadline=0.5)

    def _process_groups(self) -> set[int]:
        groups: set[int] = set()
        kernels: list[Any] = []
        launches: list[Launch | None] = []
        for sandbox in list(self.sandboxes.values()):
            kernels += [c.kernel for c in list(sandbox.contexts.values())]
            kernels += list(sandbox.spares)
            groups.update(list(sandbox.processes))
            launches.append(sandbox.launch)
        for slot in self.pool.slots():
            kernels.append(slot.kernel)
            launches.append(slot.launch)
        for kernel in kernels:
            pgid = kernel.pgid if kernel is not None else None
            if pgid:
                groups.add(pgid)
        for launch in launches:
            holder = launch.holder if launch is not None else None
            if holder is not None and holder.pid:
                groups.add(holder.pid)
        return groups

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reaper_interval)
            if not self.refusal and not self.halted:  # spares follow demand (`SpareDemand`)
                self.pool.adjust()
            now = time.monotonic()
            for sandbox in list(self.sandboxes.values()):
                sandbox.refresh()
                if sandbox.status not in ("READY", "CREATING", "PAUSED") or sandbox.stopping:
                    continue
                # A paused sandbox is idle by design: its idle clock stops (and restarts at
                # resume); its maximum life (TTL) still runs. (The service's rule here is
                # not documented: this is the emulator's choice.)
                paused = sandbox.status == "PAUSED"
                idle = not paused and now - sandbox.last_active > sandbox.idle_timeout
                old = now - sandbox.born > self.settings.ttl
                self._end_forgotten_ttys(sandbox, now)
                if not paused:  # a frozen kernel is shut down with its sandbox
                    self._trim_spares(sandbox)
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
        for key in ("cpu", "memory", "diskSize"):
            if key in body and number_field(body, key, 0) <= 0:
                raise ApiError(400, "ERR_VALIDATION_FAILED", f"{key} must be positive")
        check_template_fields(body)
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
        check_template_fields(body)
        # Fields given replace the template's (a whole object each); the rest stay. The
        # sandboxes started from it afterwards get the new values, running ones keep theirs.
        template.body.update({k: v for k, v in body.items() if k not in _FIXED_FIELDS})
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
        page = int_query(query, "pageNumber", 1, low=1, high=10**9)
        size = int_query(query, "pageSize", 20, low=1, high=100)
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
            # What the service answers a paused sandbox is not documented (agentrun-api.md
            # §2.3): 409 ERR_CONFLICT, naming the state and the way out, is inferred.
            raise ApiError(
                409,
                "ERR_CONFLICT",
                f"sandbox {sandbox_id!r} is {sandbox.status}"
                + ("; resume it first" if sandbox.status == "PAUSED" else "; wait until READY"),
            )
        sandbox.last_active = time.monotonic()
        return sandbox

    def create_sandbox(self, body: dict[str, Any]) -> Sandbox:
        if self.refusal:
            raise ApiError(500, "ERR_INTERNAL_SERVER_ERROR", self.refusal)
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
        keys = ("sandboxIdleTimeoutSeconds", "sandboxIdleTimeoutInSeconds")
        given = [k for k in keys if body.get(k)]
        # A finite number, checked even when the settings override it (NaN broke listing).
        idle_s = number_field(body, given[0], 600) if given else None
        if self.settings.idle_timeout is not None:
            idle_s = self.settings.idle_timeout
        elif idle_s is None:
            idle_s = number_field(template.body, "sandboxIdleTimeoutInSeconds", 600) or 600.0
        own_mounts = {k: body[k] for k in _SANDBOX_MOUNTS if body.get(k) is not None}
        for key, value in own_mounts.items():
            if not isinstance(value, dict):
                raise ApiError(400, "ERR_VALIDATION_FAILED", f"{key} must be an object")
        binds = resolve(
            requested_mounts(template.body, own_mounts), self.settings.mounts, sandbox_id
        )
        if binds and self.jail is None:
            raise ApiError(
                400,
                "ERR_VALIDATION_FAILED",
                "this sandbox's storage mounts need the bubblewrap jail, which this emulator "
                "runs without: install bubblewrap (and keep EmulatorSettings.jail on), or "
                "leave the mounts out",
            )
        public = is_public(template.body) and not self.settings.no_network
        # A spare's kernel started in a jail without the mounts: a sandbox with mounts
        # gets a new slot, whose kernels all start with them.
        slot = None if binds else self.pool.take(lambda spare: self._fits(spare, public))
        if slot is None:
            slot = self._make_slot(sandbox_id, public)
            slot.launch = attrs.evolve(slot.launch, mounts=tuple(binds))
        else:
            if slot.starting is None:  # the spare's directory takes the sandbox's name
                self._rename_spare(slot, sandbox_id)
            if slot.launch.holder is not None and slot.launch.holder.own_net:
                slot.launch = attrs.evolve(slot.launch, public=public)  # connected at first use
        disk_mb = int(number_field(template.body, "diskSize", DEFAULT_DISK_MB))
        if self._disks and not resize_disk(disk_of(slot.base), disk_mb):
            log.warning("sandbox %s: could not set its disk to %s MB", sandbox_id, disk_mb)
        if slot.launch.cgroup is not None:  # the template's memory, for the whole sandbox
            slot.launch.cgroup.limit_memory(int(number_field(template.body, "memory", 4096)))
        root = slot.home
        mono = time.monotonic()
        stamp = now_iso()
        env = {str(k): str(v) for k, v in (template.body.get("environmentVariables") or {}).items()}
        sandbox = Sandbox(
            id=sandbox_id,
            template=template,
            root=root,
            fs=SandboxFS(root, tmp_of(slot.base)),
            idle_timeout=idle_s,
            status="CREATING",
            created_at=stamp,
            updated_at=stamp,
            ready_at=mono + self.settings.provisioning_delay,
            born=mono,
            last_active=mono,
            env=env,
            launch=slot.launch,
            base=slot.base,
            spares=[slot.kernel] if slot.kernel is not None else [],
            pending=slot.starting,  # (its directory keeps the spare's name: _rename_spare)
            demand=SpareDemand(
                min(1, self.settings.spare_kernels), self.settings.spare_idle_timeout
            ),
            mounts=own_mounts,
        )
        self.sandboxes[sandbox_id] = sandbox
        return sandbox

    def _rename_spare(self, slot: Slot, sandbox_id: str) -> None:
        """A spare slot's directory renamed after the sandbox that took it (its kernel,
        already started, is unaffected). Not one whose kernel is still starting: a jail
        being built binds the directory by its path, which a rename pulls from under it."""
        spare_base, slot.base = slot.base, slot.base.rename(self._sandbox_dir / sandbox_id)
        if spare_base in self._uids:
            self._uids[slot.base] = self._uids.pop(spare_base)
        if slot.kernel is not None:  # but a restart of it must find the new paths
            slot.kernel.relocate(spare_base, slot.base)
        home, tmp = home_of(slot.base), tmp_of(slot.base)
        slot.launch = attrs.evolve(slot.launch, home=home, tmp=tmp)
        if slot.launch.holder is not None:
            slot.launch.holder.relocate(home)

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
        start = int_query(query, "nextToken", 0, low=0, high=10**9)
        size = int_query(query, "maxResults", 100, low=1, high=1000)
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
        """Freeze (stop=True) or thaw every process of the sandbox: its cgroup's freezer
        where it has one (every member, unseen by them), else SIGSTOP / SIGCONT to the
        process group of each kernel and command (a child that left its group runs on)."""
        cgroup = sandbox.launch.cgroup if sandbox.launch is not None else None
        if cgroup is not None and await blocking(cgroup.freeze, stop):
            return
        for ctx in sandbox.contexts.values():
            await ctx.kernel.pause(stop)
        for proc in sandbox.processes.values():
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGSTOP if stop else signal.SIGCONT)

    async def _terminate(self, sandbox: Sandbox) -> None:
        # Refuse new work at once; say TERMINATED only when everything is gone.
        if sandbox.stopping:
            return
        sandbox.stopping = True
        sandbox.gauges.close()  # first: nothing below may leave its descriptors open
        if sandbox.status == "PAUSED":  # thawed, so that every process dies of its SIGKILL
            await self._signal_all(sandbox, stop=False)
        contexts, sandbox.contexts = list(sandbox.contexts.values()), {}
        sandbox.defaults.clear()
        spares, sandbox.spares = sandbox.spares, []
        kernels = [c.kernel for c in contexts] + spares
        pending, sandbox.pending = sandbox.pending, None
        if pending is not None:  # a start cancelled kills what it launched
            pending.cancel()
            await asyncio.wait([pending])
            if not pending.cancelled() and pending.exception() is None:
                kernels.append(pending.result())  # it had started
        await asyncio.gather(*(k.shutdown() for k in kernels), return_exceptions=True)
        for proc in sandbox.processes.values():
            await blocking(kill_group, proc.pid)
            if proc.status == "running":
                proc.status = "killed"
            await _reap(proc)
        ttys = [p.tty.waiter for p in sandbox.processes.values() if p.tty is not None]
        await asyncio.gather(*ttys, return_exceptions=True)  # their terminals closed
        if sandbox.launch is not None and sandbox.launch.holder is not None:
            await sandbox.launch.holder.stop()  # and with it what still runs in the sandbox
        if sandbox.launch is not None and sandbox.launch.cgroup is not None:
            await blocking(sandbox.launch.cgroup.remove)
        await blocking(remove_tree, sandbox.base or sandbox.root)
        if sandbox.base is not None:  # its files and processes are gone: the uid is free
            self._release_uid(sandbox.base)
        sandbox.status = "TERMINATED"
        sandbox.ended_at = sandbox.updated_at = now_iso()

    # ------------------------------------------------------------ contexts

    async def create_context(self, sandbox: Sandbox, language: str, cwd: str) -> Context:
        if language not in LANGUAGES:
            raise bad_request(f"unsupported language {language!r}: use one of {LANGUAGES}")
        launch = self._launch(sandbox)
        inside = self._directory(sandbox, launch, cwd)
        kernel: Kernel
        try:
            if language == "python":
                kernel = await self._python_kernel(sandbox, launch, inside)
            else:
                if not NodeKernel.available():
                    raise bad_request(
                        "javascript contexts need `node` on PATH and it is not there; "
                        "install Node.js"
                    )
                kernel = await NodeKernel.start(launch, inside, sandbox.env)
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
        _know_launchers(sandbox, kernel)  # now, while no code of the context has run
        return ctx

    @staticmethod
    def _directory(sandbox: Sandbox, launch: Launch, cwd: str | None) -> str:
        """A context's or command's working directory as its code sees it (400 unless it
        is an existing directory: in a jail any, else one under /home/user or /tmp)."""
        if launch.jail is not None and launch.home is not None and launch.tmp is not None:
            path = cwd or HOME
            if not path.startswith("/"):
                path = f"{HOME}/{path}"
            try:
                found = "\x00" not in path and launch.jail.exists(path, launch.home, launch.tmp)
            except (OSError, RuntimeError):  # a symlink loop (RuntimeError before 3.13)
                found = False
            if not found:
                raise bad_request(f"cwd {cwd!r} is not an existing directory")
            return os.path.normpath(path)
        real = sandbox.fs.resolve(cwd)
        if not real.is_dir():
            raise bad_request(f"cwd {cwd!r} is not an existing directory")
        return str(real)

    async def _python_kernel(self, sandbox: Sandbox, launch: Launch, cwd: str) -> PythonKernel:
        """A spare kernel of the sandbox moved to `cwd`, else a cold start in its jail."""
        kernel: PythonKernel | None = None
        if not sandbox.spares and sandbox.pending is not None:
            await self._settle_pending(sandbox)
        spare = sandbox.spares.pop(0) if sandbox.spares else None
        if spare is not None:
            try:
                await launch.prepare()  # a PUBLIC sandbox's uplink, before its code runs
                # started in a spare's directory: its TMPDIR (no jail) named the old path
                await spare.adopt(cwd, {**launch.moved_env, **sandbox.env}, launch.inside_home)
                kernel = spare
            except KernelError:
                await spare.shutdown()
        if kernel is None:
            try:
                async with self.starts.turn():
                    self._check_halted()
                    kernel = await start_python(launch, cwd)
                    try:
                        await kernel.adopt(cwd, sandbox.env, launch.inside_home)
                    except BaseException:
                        await kernel.shutdown()  # not left running (it died, or we were cancelled)
                        raise
            except StartQueueFull as exc:
                raise ApiError(
                    503, "ERR_SERVICE_UNAVAILABLE", str(exc), retry_after=_QUEUE_RETRY_AFTER
                ) from exc
        sandbox.python_contexts += 1
        if sandbox.demand is not None:
            sandbox.demand.record()
        if sandbox.python_contexts >= 2:
            self._refill(sandbox, launch)
        return kernel

    @staticmethod
    async def _settle_pending(sandbox: Sandbox) -> None:
        """Wait for the kernel its spare slot was starting when the sandbox took the slot,
        and make it the sandbox's first spare; a start that failed leaves a cold one to do."""
        start = sandbox.pending
        if start is None:
            return
        await asyncio.wait([start])  # a request cancelled meanwhile leaves it to the next
        if sandbox.pending is not start:  # another request settled it, or the sandbox stopped
            return
        sandbox.pending = None
        error = None if start.cancelled() else start.exception()
        if start.cancelled() or error is not None:
            log.warning(
                "sandbox %s: its spare kernel did not start (%s); starting another",
                sandbox.id,
                error or "cancelled",
            )
            return
        sandbox.spares.insert(0, start.result())

    def spares_held(self, but: Sandbox | None = None) -> int:
        """Spare kernels kept or starting in sandboxes (all, or all but `but`)."""
        return sum(
            len(s.spares) + s.refilling + (s.pending is not None)
            for s in self.sandboxes.values()
            if s is not but
        )

    def _spare_target(self, sandbox: Sandbox, *, capped: bool = True) -> int:
        """How many spare kernels `sandbox` keeps now: its demand, within what the machine
        holds beside every other spare (the slots' and other sandboxes'). Uncapped: what
        the demand alone asks (kernels already kept are not shut down for the cap)."""
        if sandbox.demand is None:
            return 0
        if not capped:
            return sandbox.demand.target(len(sandbox.spares))
        room = spare_cap(self.settings) - self.pool.ready - self.pool.starting
        room = min(room - self.spares_held(but=sandbox), self._spares_per_sandbox())
        return sandbox.demand.target(max(0, room))

    def _spares_per_sandbox(self) -> int:
        """The most spare kernels one sandbox keeps: they run in its jail and count against
        its own process limit (a kernel holds some 16 tasks, its threads included), so
        together they take at most an eighth of `max_processes`, and one at least."""
        if self.settings.max_processes is None:  # no process limit: the machine's bound only
            return spare_cap(self.settings)
        return max(1, self.settings.max_processes // (8 * _KERNEL_TASKS))

    def _refill(self, sandbox: Sandbox, launch: Launch) -> None:
        """Keep spare kernels warm in a sandbox that makes several python contexts, as
        many as its demand asks (spares are per sandbox: a kernel jailed for one cannot
        serve another)."""
        missing = self._spare_target(sandbox) - len(sandbox.spares) - sandbox.refilling
        for _ in range(max(0, missing)):
            sandbox.refilling += 1
            task = asyncio.get_running_loop().create_task(self._refill_one(sandbox, launch))
            self._refills.add(task)
            task.add_done_callback(self._refills.discard)

    async def _refill_one(self, sandbox: Sandbox, launch: Launch) -> None:
        try:
            async with self.starts.turn(background=True):
                if sandbox.stopping:  # stopped while this waited its turn
                    return
                self._check_halted()
                kernel = await start_python(launch)
        except Exception:
            if not sandbox.stopping:
                log.exception("could not pre-start a spare kernel for %s", sandbox.id)
            return
        finally:
            sandbox.refilling -= 1
        if sandbox.stopping or len(sandbox.spares) >= self._spare_target(sandbox):
            await kernel.shutdown()  # stopped, or demand fell while it started
        else:
            sandbox.spares.append(kernel)

    def _trim_spares(self, sandbox: Sandbox) -> None:
        """Shut down the spare kernels of `sandbox` beyond its demand (none once idle)."""
        target = self._spare_target(sandbox, capped=False)
        while len(sandbox.spares) > target:
            task = asyncio.get_running_loop().create_task(sandbox.spares.pop().shutdown())
            self._refills.add(task)
            task.add_done_callback(self._refills.discard)

    def _launch(self, sandbox: Sandbox) -> Launch:
        return sandbox.launch or self.launch

    def uid_of(self, sandbox: Sandbox) -> int | None:
        """The uid the file API gives what it makes in `sandbox` (its code's uid)."""
        return self._launch(sandbox).uid

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

    async def kill_kernel(self, sandbox_id: str, context_id: str | None, language: str) -> None:
        """SIGKILL the kernel an execute would run in (fault injection: `kernel_death`)."""
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is None:
            return
        cid = context_id or sandbox.defaults.get(language)
        ctx = sandbox.contexts.get(cid) if cid else None
        pgid = ctx.kernel.pgid if ctx is not None else None
        if pgid:
            await blocking(kill_group, pgid)

    async def execute(self, sandbox: Sandbox, order: ExecuteRequest) -> dict[str, Any]:
        code, timeout = order.code, order.timeout
        cap = self.settings.max_exec_timeout
        if timeout <= 0 or timeout > cap:
            raise bad_request(
                f"timeout must be > 0 and at most {cap:g} seconds (got {timeout:g}); "
                "split longer work into several executions"
            )
        if order.context_id:
            ctx = self.context(sandbox, order.context_id)
        else:
            language = order.language
            async with sandbox.lock:
                cid = sandbox.defaults.get(language)
                if cid is None or cid not in sandbox.contexts:
                    ctx = await self.create_context(sandbox, language, HOME)
                    sandbox.defaults[language] = ctx.id
                else:
                    ctx = sandbox.contexts[cid]
        async with ctx.lock:
            before = ctx.kernel.restarts
            since = time.monotonic()
            meters: list[Meter] = []
            _know_launchers(sandbox, ctx.kernel)

            def measure() -> None:
                # Once the code is on its way: these /proc reads then overlap the kernel's
                # work instead of delaying it. The CPU counters they read move in clock
                # ticks (10 ms), so the baseline taken a few hundred µs into the run is
                # within their own resolution.
                meters.append(sandbox.gauges.start(_members(sandbox, ctx.kernel), since))

            try:
                events, status, count = await ctx.kernel.execute(code, timeout, sent=measure)
            except KernelError as exc:
                sandbox.contexts.pop(ctx.id, None)
                await ctx.kernel.shutdown()
                raise ApiError(
                    500, "ERR_CONTEXT_LOST", f"context {ctx.id} was lost: {exc}"
                ) from exc
            finally:
                sandbox.last_active = time.monotonic()
            if meters:
                usage = meters[0].finish()
            else:  # never sent (a silent kernel error path): wall time only
                usage = {"wallTime": round(time.monotonic() - since, 6)}
        restarted = ctx.kernel.restarts != before
        return ExecuteAnswer(
            events, status, count, ctx.id, kernel_restarted=restarted, usage=usage
        ).wire()


#: what a 503 for a full kernel-start queue tells clients to wait (s): about the time a
#: loaded machine takes to work through a few starts
_QUEUE_RETRY_AFTER = 5


def _members(sandbox: Sandbox, kernel: Kernel) -> list[int]:
    """Whose resources a run is measured on (see _usage.py): the sandbox's processes, or
    the kernel's group, less the holder and every kernel's chain but the running one."""
    pids = _candidates(sandbox, kernel)
    launch = sandbox.launch
    holder = launch.holder if launch is not None else None
    skip: set[int | None] = {holder.pid, holder.launcher_pid} if holder is not None else set()
    chains = sandbox.gauges.chains
    for spare in sandbox.spares:  # idle since they started: no code of anyone's has run
        pgid = spare.pgid
        if pgid and pgid not in chains:
            chains[pgid] = launch_chain(pgid, pids)
    for pgid, chain in chains.items():
        # its launchers always; the kernel too unless it is the one running this code
        skip.update(chain[:-1] if pgid == kernel.pgid else chain)
    return [pid for pid in pids if pid not in skip]


def _candidates(sandbox: Sandbox, kernel: Kernel) -> list[int]:
    launch = sandbox.launch
    if launch is not None and launch.cgroup is not None:  # the whole sandbox
        cgroup = launch.cgroup
        return sandbox.gauges.listing(os.path.join(cgroup.path, "pids.current"), cgroup.pids)
    pgid = kernel.pgid
    if not pgid:
        return []
    if launch is not None and (launch.jail is not None or launch.pid_namespace):
        # the group's leader is the jail's launcher, the kernel one of its children
        return group_members(pgid)
    return [pgid]  # the kernel leads its group (its reaped children count in its CPU)


def _know_launchers(sandbox: Sandbox, kernel: Kernel) -> None:
    """Find a kernel's chain once, before it runs code of its context's (as the context
    is made; a restarted kernel, a new group, before its next run), and forget those of
    kernels that are gone."""
    pgid = kernel.pgid
    chains = sandbox.gauges.chains
    if not pgid or pgid in chains:
        return
    launch = sandbox.launch
    if launch is None or not (launch.jail is not None or launch.pid_namespace):
        return  # the kernel leads its own group: it has no launcher
    live = {context.kernel.pgid for context in sandbox.contexts.values()}
    live |= {spare.pgid for spare in sandbox.spares}
    for gone in chains.keys() - live:
        del chains[gone]
    chains[pgid] = launch_chain(pgid, _candidates(sandbox, kernel))


def _descendants(root: int) -> list[int]:
    """Every live process below `root` (children first found, then theirs), from /proc."""
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = stat_fields(name)
        if fields and len(fields) > 1 and fields[0] not in ("Z", "X"):
            parents.setdefault(int(fields[1]), []).append(int(name))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _mentions(pid: int, places: list[str]) -> bool:
    """Does the process's command line, environment or working directory name one of
    `places`?"""
    needles = [os.fsencode(p) for p in places]
    for name in ("cmdline", "environ"):
        try:
            with open(f"/proc/{pid}/{name}", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        if any(n in data for n in needles):
            return True
    try:
        cwd = os.fsencode(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return False
    return any(n in cwd for n in needles)


def _remove_cgroup_trees(roots: list[str], *, deadline: float) -> None:
    """rmdir every cgroup below and at `roots`, deepest first, retrying while members are
    still exiting, for at most `deadline` seconds in all."""
    end = time.monotonic() + deadline
    for root in roots:
        dirs = [where for where, _, _ in os.walk(root, topdown=False)]
        for path in dirs:
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > end:
                        return
                    time.sleep(0.01)


def _cgroup_members(path: str) -> list[int]:
    """The pids in a cgroup and every cgroup below it."""
    found: list[int] = []
    for where, _dirs, files in os.walk(path):
        if "cgroup.procs" in files:
            with (
                contextlib.suppress(OSError, ValueError),
                open(os.path.join(where, "cgroup.procs")) as fh,
            ):
                found += [int(line) for line in fh if line.strip()]
    return found
