"""`python` and `pip` inside a local sandbox are the kernel's interpreter, in the jail
(bubblewrap) and without it: a command's `python` is the kernel's `sys.executable`,
`pip` and `python -m pip` are that interpreter's pip (where it has none, as in uv venvs
and under uvx, the pip wheel its ensurepip bundles), and what `pip install` puts in place
the running kernel imports at once.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import sys
import zipfile
from collections.abc import Iterator

import httpx
import pytest

pytest.importorskip("jupyter_client")

from agentrun_ci.local import EmulatorSettings, LocalEmulator

_HAS_JAIL = sys.platform.startswith("linux") and shutil.which("bwrap") is not None


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(True, id="jail", marks=pytest.mark.skipif(not _HAS_JAIL, reason="no bwrap")),
        pytest.param(False, id="no-jail"),
    ],
)
def sandbox(request: pytest.FixtureRequest) -> Iterator[tuple[httpx.Client, str]]:
    jail: bool = request.param
    emulator = LocalEmulator(EmulatorSettings(spare_kernels=0, jail=jail))
    with emulator as config, httpx.Client(base_url=str(config.data_endpoint), timeout=60) as http:
        assert emulator.core is not None
        assert (emulator.core.jail is not None) == jail
        if emulator.core.refusal:  # as root, where the sandbox uid cannot run the interpreter
            pytest.skip(emulator.core.refusal)
        http.post("/2025-09-10/templates", json={"templateName": "py"})
        made = http.post("/sandboxes", json={"templateName": "py"})
        assert made.status_code == 200, made.text
        sid = str(made.json()["data"]["sandboxId"])
        yield http, sid
        http.delete(f"/sandboxes/{sid}")


def _run(http: httpx.Client, sid: str, code: str) -> str:
    r = http.post(f"/sandboxes/{sid}/contexts/execute", json={"code": code})
    assert r.status_code == 200, r.text
    events = r.json()["results"]
    assert not [e for e in events if e["type"] == "error"], events
    return "".join(e.get("text") or "" for e in events if e["type"] == "stdout")


def _cmd(http: httpx.Client, sid: str, command: str) -> dict[str, object]:
    r = http.post(f"/sandboxes/{sid}/processes/cmd", json={"command": command, "timeout": 30})
    assert r.status_code == 200, r.text
    result: dict[str, object] = r.json()["result"]
    return result


def test_python_in_a_command_is_the_kernels(sandbox: tuple[httpx.Client, str]) -> None:
    http, sid = sandbox
    kernel = _run(http, sid, "import sys; print(sys.executable)")
    command = _cmd(http, sid, "python -c 'import sys; print(sys.executable)'")
    assert command["stdout"] == kernel
    prefix = _run(http, sid, "import sys; print(sys.prefix)")
    python3 = _cmd(http, sid, "python3 -c 'import sys; print(sys.prefix)'")
    assert python3["stdout"] == prefix


def test_pip_is_the_kernels_interpreters_pip(sandbox: tuple[httpx.Client, str]) -> None:
    http, sid = sandbox
    version = _run(http, sid, "import sys; print('%d.%d' % sys.version_info[:2])").strip()
    for command in ("pip --version", "pip3 --version", "python -m pip --version"):
        out = _cmd(http, sid, command)
        assert out["exitCode"] == 0, (command, out)
        # "pip 24.0 from /…/pip (python 3.12)": the kernel's python runs it
        assert re.search(rf"\(python {re.escape(version)}\)$", str(out["stdout"]).strip()), out
    # and from the kernel, as `%pip` and `subprocess` do it
    assert _run(http, sid, "import pip; print(bool(pip.__version__))") == "True\n"
    magic = _run(http, sid, "%pip --version")
    assert re.search(rf"\(python {re.escape(version)}\)", magic), magic


def _wheel() -> bytes:
    """A minimal pure-python wheel (no network, no build backend needed)."""
    files = {
        "jailprobe/__init__.py": "VALUE = 42\n",
        "jailprobe-1.0.dist-info/METADATA": (
            "Metadata-Version: 2.1\nName: jailprobe\nVersion: 1.0\n"
        ),
        "jailprobe-1.0.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(f"{name},,\n" for name in files) + "jailprobe-1.0.dist-info/RECORD,,\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        for name, text in {**files, "jailprobe-1.0.dist-info/RECORD": record}.items():
            wheel.writestr(name, text)
    return buffer.getvalue()


def test_pip_install_reaches_the_running_kernel(sandbox: tuple[httpx.Client, str]) -> None:
    http, sid = sandbox
    wheel = base64.b64encode(_wheel()).decode()
    _run(
        http,
        sid,
        f"import base64; open('jailprobe-1.0-py3-none-any.whl', 'wb')"
        f".write(base64.b64decode({wheel!r}))",
    )
    out = _cmd(http, sid, "pip install --no-index jailprobe-1.0-py3-none-any.whl")
    assert out["exitCode"] == 0, out
    # the running kernel imports what `pip install` just put in place
    assert _run(http, sid, "import jailprobe; print(jailprobe.VALUE)") == "42\n"
    # and the server's own interpreter did not get it
    assert "jailprobe" not in sys.modules
    with pytest.raises(ImportError):
        __import__("jailprobe")


def test_the_kernel_starts_without_the_debugger_but_user_code_may_import_it(
    sandbox: tuple[httpx.Client, str],
) -> None:
    """The kernel is launched with debugpy hidden (AgentRun has no debug call; it is a
    quarter of a kernel's start-up); hidden only while ipykernel loads. The working
    directory is on sys.path for the user's code, as with ipykernel_launcher."""
    http, sid = sandbox
    code = (
        "import os, sys\n"
        "print('debugpy' in sys.modules, sys.modules.get('debugpy', 0))\n"
        "import debugpy\n"
        "print(debugpy.__name__, os.getcwd() in sys.path or '' in sys.path)\n"
    )
    assert _run(http, sid, code).split("\n")[:2] == ["False 0", "debugpy True"]
