"""A local emulator of the AgentRun control and data planes (extra `local`).

    from agentrun_ci.local import LocalEmulator, EmulatorSettings
    with LocalEmulator() as config:      # an agentrun_ci Config pointing at it
        ...                              # (async with works too)

or from a shell: `agentrun-ci local serve [--port 8080] ...`.

One starlette app serves both planes on one loopback port: the control plane under
`/2025-09-10/` (templates, sandboxes; `{code: "SUCCESS", requestId, data}` envelope)
and the data plane under `/sandboxes/{id}/...` (also under `/2025-09-10/sandboxes/...`).
With a key pair configured, data-plane requests must carry a valid AGENTRUN4-HMAC-SHA256
signature and control-plane requests a valid ACS3-HMAC-SHA256 one (403 `ERR_FORBIDDEN`
otherwise). `agentrun-ci local serve` and the SDK's and MCP server's in-process emulators
always configure one (random unless given), since code in the sandboxes may share the
loopback (no jail, or no uplink tool); only `local serve --insecure` and a bare
`LocalEmulator()` answer unsigned requests.

Code runs on THIS machine: each sandbox is a private temporary directory, which its code
sees at /home/user; each python context is an ipykernel (IPC sockets; spare kernels pre-
started per sandbox-to-be), each javascript context a small persistent node process;
commands run under bash. On Linux with bubblewrap every kernel and command runs in its
sandbox's jail (`_jail.py`: own mount, PID, IPC and network namespaces, read-only system,
no other sandbox, no server state, no capabilities; a PUBLIC template's sandbox gets out
through slirp4netns or pasta, never to the host's loopback: `_network.py`); everywhere
they get a scrubbed environment and the limits of `EmulatorSettings` (`_limits.py`:
process groups, rlimits, pids and memory cgroups per sandbox where /sys/fs/cgroup is
writable). docs/local-backend.md says which guarantee holds on which platform. It is a
development and CI tool, not a VM.
"""

from ._faults import FAULT_KINDS, TRANSIENT_KINDS, FaultPlan
from ._server import LocalEmulator
from ._settings import EmulatorSettings

__all__ = ["FAULT_KINDS", "TRANSIENT_KINDS", "EmulatorSettings", "FaultPlan", "LocalEmulator"]
