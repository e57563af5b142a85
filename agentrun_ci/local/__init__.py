"""A local emulator of the AgentRun control and data planes (extra `local`).

    from agentrun_ci.local import LocalEmulator, EmulatorSettings
    with LocalEmulator() as config:      # an agentrun_ci Config pointing at it
        ...                              # (async with works too)

or from a shell: `agentrun-ci local serve [--port 8080] ...`.

One starlette app serves both planes on one loopback port: the control plane under
`/2025-09-10/` (templates, sandboxes; `{code: "SUCCESS", requestId, data}` envelope)
and the data plane under `/sandboxes/{id}/...` (also under `/2025-09-10/sandboxes/...`).
With a key pair configured, data-plane requests must carry a valid
AGENTRUN4-HMAC-SHA256 signature and control-plane requests a valid ACS3-HMAC-SHA256
one (403 `ERR_FORBIDDEN` otherwise).

Code runs on THIS machine: each sandbox is a private temporary directory standing in
for /home/user; each python context is an ipykernel (IPC sockets, one pre-started
spare), each javascript context a small persistent node process; commands run under
bash. All of them get a scrubbed environment and the limits of `EmulatorSettings`;
`_limits.py` describes the containment model (process groups, rlimits, a pids cgroup
per sandbox where /sys/fs/cgroup is writable, an unprivileged uid where possible, and
as root a PID namespace with its own /proc per kernel and command).
It is a development and CI tool, not a security boundary for hostile code.
"""

from ._faults import FAULT_KINDS, TRANSIENT_KINDS, FaultPlan
from ._server import LocalEmulator
from ._settings import EmulatorSettings

__all__ = ["FAULT_KINDS", "TRANSIENT_KINDS", "EmulatorSettings", "FaultPlan", "LocalEmulator"]
