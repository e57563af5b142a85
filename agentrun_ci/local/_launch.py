"""`Launch`: how one sandbox's children start (limits, uid, pids cgroup, and the jail
with its namespace holder, or a PID namespace per child where there is no jail).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import attrs

from ._holder import Holder, HolderError
from ._jail import JAIL_HOME, JAIL_TOOLS, PIP_PREFIX, Jail, interpreter_info
from ._kernel_base import KernelError
from ._limits import (
    PidsCgroup,
    child_preexec,
    init_argv,
    sandbox_argv,
    scrubbed_env,
)
from ._mounts import BindMount
from ._settings import EmulatorSettings

__all__ = ["Launch"]


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
    #: host directories bound into the jail: the sandbox's storage mounts (`_mounts.py`)
    mounts: tuple[BindMount, ...] = ()

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
                mounts=self.mounts,
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
