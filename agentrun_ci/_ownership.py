"""Owner tags, crash-safe cleanup and the orphan reaper.

Every template and sandbox agentrun-ci creates is named
`arci-<owner>-<pid32>x<start32>-<random>[-<name>]`:

* `owner` is stable per host and user (a hash of hostname and uid), or what the
  caller passes / `AGENTRUN_CI_OWNER` says, so one user's reaper never touches
  another user's resources;
* `pid32` and `start32` are the creating process's pid and start time in base 32
  (digits 0-9a-v, so the separator `x` is never a digit),
  so the reaper can tell a crashed (SIGKILLed) process's orphans from the
  resources of a process that is still running, even after pid reuse.

Templates also carry the same facts as JSON in their description.

`Tracker` records what a live facade created, so that `atexit` and SIGTERM /
SIGINT handlers can delete it with fresh synchronous clients even when the
facade's event loop is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import signal
import socket
import threading
import time
import weakref
from collections.abc import Callable
from datetime import datetime, timezone
from types import FrameType
from typing import TYPE_CHECKING, Any

import attrs

from . import _telemetry
from ._config import Config
from ._errors import AgentRunError, NotFoundError
from ._procfs import start_time, stat_fields

if TYPE_CHECKING:
    from ._async.control_plane import AsyncControlPlane

__all__ = ["PREFIX", "OwnerTag", "Tracker", "default_owner", "reap", "reap_orphans"]

log = logging.getLogger("agentrun_ci.ownership")

PREFIX = "arci-"
_DIGITS = "0123456789abcdefghijklmnopqrstuv"  # base 32: never "x", the separator
_TAG = re.compile(r"^arci-([0-9a-z]{1,16})-([0-9a-v]+)x([0-9a-v]+)-")
_SLUG = re.compile(r"[^a-zA-Z0-9-]+")


def _b32(number: int) -> str:
    if number <= 0:
        return "0"
    out = ""
    while number:
        number, digit = divmod(number, 32)
        out = _DIGITS[digit] + out
    return out


def default_owner() -> str:
    """A stable id for this host and user (8 base-32 chars), or $AGENTRUN_CI_OWNER."""
    explicit = os.environ.get("AGENTRUN_CI_OWNER")
    if explicit:
        return normalize_owner(explicit)
    uid = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "")
    digest = hashlib.sha256(f"{socket.gethostname()}\0{uid}".encode()).digest()
    return _b32(int.from_bytes(digest[:6], "big")).rjust(8, "0")[:8]


def normalize_owner(owner: str) -> str:
    cleaned = re.sub(r"[^0-9a-z]", "", owner.lower())[:16]
    if not cleaned:
        raise ValueError("owner must contain letters or digits")
    return cleaned


def process_start(pid: int) -> int:
    """The process's start time in clock ticks since boot (Linux), else 0 (unknown)."""
    return start_time(pid) or 0


def process_alive(pid: int, start: int) -> bool:
    """Is the process that wrote a tag (pid + start time) still running?"""
    if pid == os.getpid():
        return start in (0, process_start(pid))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, belongs to someone else
    except OSError:
        return False
    fields = stat_fields(pid)
    if fields and fields[0] in ("Z", "X"):
        return False  # a zombie: killed, not yet waited for
    actual = process_start(pid)
    return start == 0 or actual == 0 or actual == start


@attrs.frozen
class OwnerTag:
    """Who created a resource: owner id, pid, process start time."""

    owner: str
    pid: int
    start: int

    @classmethod
    def current(cls, owner: str | None = None) -> OwnerTag:
        pid = os.getpid()
        return cls(
            owner=normalize_owner(owner) if owner else default_owner(),
            pid=pid,
            start=process_start(pid),
        )

    @classmethod
    def parse(cls, name: str) -> OwnerTag | None:
        match = _TAG.match(name)
        if not match:
            return None
        return cls(match.group(1), int(match.group(2), 32), int(match.group(3), 32))

    @property
    def owner_prefix(self) -> str:
        return f"{PREFIX}{self.owner}-"

    @property
    def prefix(self) -> str:
        return f"{PREFIX}{self.owner}-{_b32(self.pid)}x{_b32(self.start)}-"

    def new_name(self, name: str | None = None, *, max_length: int = 64) -> str:
        """A fresh tagged resource name, ending in a slug of `name` if given."""
        base = self.prefix + secrets.token_hex(3)
        if name:
            slug = _SLUG.sub("-", name).strip("-")
            if slug:
                base = f"{base}-{slug}"
        return base[:max_length].rstrip("-")

    def description(self, extra: dict[str, Any] | None = None) -> str:
        tag: dict[str, Any] = {
            "owner": self.owner,
            "pid": self.pid,
            "start": self.start,
            "host": socket.gethostname(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        tag.update(extra or {})
        return json.dumps({"agentrun-ci": tag}, separators=(",", ":"))

    def alive(self) -> bool:
        return process_alive(self.pid, self.start)


def _age(created: datetime | None) -> float | None:
    if created is None:
        return None
    if created.tzinfo is None:
        created = created.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - created).total_seconds()


def _orphan(name: str, owner: str, created: datetime | None, older_than: float) -> bool:
    tag = OwnerTag.parse(name)
    if tag is None or tag.owner != owner:
        return False
    if tag.alive():
        return False
    age = _age(created)
    return older_than <= 0 or age is None or age >= older_than


async def reap(control: AsyncControlPlane, owner: str, *, older_than: float = 0.0) -> int:
    """Delete this owner's orphans: sandboxes first, then templates. Returns how many.

    A resource is an orphan when its tag names `owner` and a process that is no
    longer running (a live process's resources, ours included, are skipped) and
    it is at least `older_than` seconds old. Sandboxes of an orphan template go
    too, whatever their id.
    """
    owner = normalize_owner(owner)
    # Filtered here, not by the service: whether its name filter is exact, prefix or
    # substring is not documented.
    templates = await control.list_templates()
    dead_templates = {t.name for t in templates if _orphan(t.name, owner, t.created_at, older_than)}
    count = 0
    for sandbox in await control.list_sandboxes():
        doomed = sandbox.template_name in dead_templates or _orphan(
            sandbox.sandbox_id, owner, sandbox.created_at, older_than
        )
        if doomed and await control.delete_sandbox(sandbox.sandbox_id) is not None:
            count += 1
    for name in sorted(dead_templates):
        await control.delete_template(name)
        count += 1
    if count:
        log.info("reaped %d orphaned resources of owner %s", count, owner)
    return count


async def reap_orphans(
    config: Config | None = None, owner: str | None = None, *, older_than: float = 0.0
) -> int:
    """Delete what crashed processes of `owner` (default: this host and user) left behind.

    The public form of `reap()`: it opens its own control plane (`config`, default
    `Config.from_env()`). Resources of processes still running are never touched.
    Returns how many sandboxes and templates were deleted.
    """
    from ._async.control_plane import AsyncControlPlane

    async with AsyncControlPlane(config or Config.from_env()) as control:
        return await reap(control, OwnerTag.current(owner).owner, older_than=older_than)


# ---------------------------------------------------------------- crash-safe cleanup


class Tracker:
    """What one facade created and has not deleted yet (thread-safe)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._lock = threading.Lock()
        self.sandboxes: set[str] = set()
        self.templates: set[str] = set()
        self.finalizers: list[Callable[[], None]] = []
        _TRACKERS.add(self)
        _telemetry.watch("tracker", self)
        install_hooks()

    def add_sandbox(self, sandbox_id: str) -> None:
        with self._lock:
            self.sandboxes.add(sandbox_id)

    def discard_sandbox(self, sandbox_id: str) -> None:
        with self._lock:
            self.sandboxes.discard(sandbox_id)

    def add_template(self, name: str) -> None:
        with self._lock:
            self.templates.add(name)

    def discard_template(self, name: str) -> None:
        with self._lock:
            self.templates.discard(name)

    def cleanup_sync(self) -> None:
        """Delete everything still recorded, with fresh sync clients; then run finalizers."""
        with self._lock:
            sandboxes, self.sandboxes = set(self.sandboxes), set()
            templates, self.templates = set(self.templates), set()
            finalizers, self.finalizers = list(self.finalizers), []
        if sandboxes or templates:
            from ._sync.control_plane import ControlPlane

            config = attrs.evolve(self.config, max_retries=0, read_timeout=10.0)
            control = ControlPlane(config)
            for sandbox_id in sandboxes:
                _quietly(lambda s=sandbox_id: control.delete_sandbox(s))  # type: ignore[misc]
            for name in templates:
                _quietly(lambda n=name: control.delete_template(n))  # type: ignore[misc]
        for finalize in finalizers:
            _quietly(finalize)


def _quietly(action: Callable[[], Any]) -> None:
    try:
        action()
    except NotFoundError:
        pass
    except (AgentRunError, OSError) as exc:
        log.warning("cleanup step failed: %s", exc)


_TRACKERS: weakref.WeakSet[Tracker] = weakref.WeakSet()
_HOOKED = False
_SIGNALS = False
_HOOK_LOCK = threading.Lock()


def cleanup_all() -> None:
    """Delete what every live tracker still holds (atexit, signal handlers)."""
    for tracker in list(_TRACKERS):
        tracker.cleanup_sync()


def install_hooks() -> None:
    """Register the atexit sweep, and the SIGTERM/SIGINT handlers when possible.

    Handlers can only be set from the main thread, so facades call this from
    their constructor (the caller's thread); a later call from the main thread
    installs them if an earlier one could not.
    """
    global _HOOKED, _SIGNALS
    with _HOOK_LOCK:
        if not _HOOKED:
            _HOOKED = True
            atexit.register(cleanup_all)
        if _SIGNALS or threading.current_thread() is not threading.main_thread():
            return
        _SIGNALS = True
    for signum, default in (
        (signal.SIGTERM, signal.SIG_DFL),
        (signal.SIGINT, signal.default_int_handler),
    ):
        previous = signal.getsignal(signum)
        # Only where nobody else chose a handler: a host app's own handler wins.
        if previous is default:
            signal.signal(signum, _make_handler(signum, previous))


def _make_handler(
    signum: int, previous: Callable[[int, FrameType | None], Any] | int | None
) -> Callable[[int, FrameType | None], Any]:
    def handler(received: int, frame: FrameType | None) -> None:
        log.info("signal %d: deleting the sandboxes and templates this process created", received)
        started = time.monotonic()
        cleanup_all()
        log.debug("cleanup took %.2fs", time.monotonic() - started)
        with contextlib.suppress(ValueError):
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        if callable(previous):
            previous(received, frame)  # SIGINT: raises KeyboardInterrupt as before
        else:
            # SIGTERM's default is to die; exit instead so `finally` blocks run too.
            raise SystemExit(128 + received)

    return handler
