"""The local emulator's kernel interpreter given as a path with `..` in it.

`../.venv/bin/python -m pytest` (or `python_executable="../venv/bin/python"`) is how
many projects run their tests; the jail mounts the interpreter's directories, so the
emulator must use the path made absolute, not the one it was given.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("jupyter_client")

from agentrun_ci.local import EmulatorSettings, LocalEmulator

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("bwrap") is None,
    reason="the jail needs Linux and bubblewrap",
)


def test_an_interpreter_path_with_dotdot_still_gets_the_jail() -> None:
    exe = Path(sys.executable)
    dotdot = os.path.join(exe.parent, "..", exe.parent.name, exe.name)
    assert ".." in dotdot
    assert os.path.samefile(dotdot, exe)
    emulator = LocalEmulator(EmulatorSettings(python_executable=dotdot, spare_kernels=0))
    with emulator:
        assert emulator.core is not None
        assert emulator.core.jail is not None, "a `..` in the interpreter path lost the jail"
        assert emulator.core.launch.python == os.path.abspath(dotdot)
