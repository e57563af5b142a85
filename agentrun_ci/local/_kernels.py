"""Kernels: Jupyter (python) over IPC sockets, and a small node process (javascript).

Both answer `execute(code, timeout)` with the wire events of docs/contract.md
("Wire events"), a final status and the execution count.

The rest of the emulator imports them from here; each job has its module:
`_kernel_base` (what they share: `Kernel`, `KernelError`, events, the output cap,
socket paths), `_launch` (`Launch`), `_python_kernel` (`PythonKernel`), `_node_kernel`
(`NodeKernel`) and `_spares` (`Slot`, `SparePool`, `start_python`, `discard`).
"""

from __future__ import annotations

from .._models import strip_ansi
from ._kernel_base import (
    MAX_STREAM_CHARS,
    Event,
    Kernel,
    KernelError,
    socket_path_fits,
    sockets_fit_in,
)
from ._launch import Launch
from ._node_kernel import NodeKernel
from ._python_kernel import PythonKernel, wait_until_ready
from ._spares import Slot, SparePool, discard, start_python

__all__ = [
    "MAX_STREAM_CHARS",
    "Event",
    "Kernel",
    "KernelError",
    "Launch",
    "NodeKernel",
    "PythonKernel",
    "Slot",
    "SparePool",
    "discard",
    "socket_path_fits",
    "sockets_fit_in",
    "start_python",
    "strip_ansi",
    "wait_until_ready",
]
