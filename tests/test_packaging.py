"""The project installs from a clone: sdist and wheel build, their metadata checks, and the
wheel works in a fresh venv (the README's local command, the MCP server's --version, matplotlib).

One module-scoped build and one venv serve every test here. uv, when the test environment
has it (the `test` extra brings it), builds and installs in seconds from its cache; without it
the standard tools do the same (`python -m venv`, pip), only slower.
"""

from __future__ import annotations

import email.parser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CREDENTIAL_PREFIXES = ("AGENTRUN_", "ALIBABA_CLOUD_", "FC_")
#: how this machine reaches the package index: kept in a host-like minimal environment
NETWORK_SETTINGS = (
    "SSL_",
    "UV_",
    "PIP_",
    "REQUESTS_CA",
    "CURL_CA",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)

pytest.importorskip("build")
try:
    import uv
except ImportError:  # pragma: no cover - the `test` extra brings uv
    uv = None


def _run(
    *argv: str | Path, cwd: Path, timeout: float = 300.0, tmpdir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(CREDENTIAL_PREFIXES)}
    env.pop("VIRTUAL_ENV", None)
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    proc = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`python -m build`: the sdist, then the wheel built from that sdist."""
    out = tmp_path_factory.mktemp("dist")
    installer = ["--installer", "uv"] if uv is not None else []
    # the build's own temp files (uv leaves a lock file per setuptools build) go with ours
    scratch = tmp_path_factory.mktemp("build-tmp")
    _run(sys.executable, "-m", "build", *installer, "--outdir", out, ROOT, cwd=ROOT, tmpdir=scratch)
    yield out
    shutil.rmtree(out)
    shutil.rmtree(scratch)


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with only the wheel and its `all` extra (the README's main command)."""
    where = tmp_path_factory.mktemp("venv") / "venv"
    (wheel,) = dist.glob("*.whl")
    python = where / "bin" / "python"
    if uv is not None:
        uv_bin = uv.find_uv_bin()
        scratch = where.parent / "tmp"  # dependencies built from sdists leave uv's locks
        scratch.mkdir()
        _run(uv_bin, "venv", "-q", "--python", sys.executable, where, cwd=where.parent)
        _run(
            uv_bin,
            "pip",
            "install",
            "-q",
            "--python",
            python,
            f"{wheel}[all]",
            cwd=where.parent,
            tmpdir=scratch,
        )
    else:
        _run(sys.executable, "-m", "venv", where, cwd=where.parent)
        _run(python, "-m", "pip", "install", "-q", f"{wheel}[all]", cwd=where.parent, timeout=900)
    yield where
    shutil.rmtree(where.parent)  # a few hundred MB: not left for pytest's tmp retention


def _metadata(dist: Path) -> email.message.Message:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(archive.read(name).decode())


def test_sdist_and_wheel_pass_twine_check(dist: Path) -> None:
    files = sorted(p.name for p in dist.iterdir())
    assert [f for f in files if f.endswith(".tar.gz")], files
    assert [f for f in files if f.endswith(".whl")], files
    proc = _run(sys.executable, "-m", "twine", "check", "--strict", *dist.iterdir(), cwd=ROOT)
    assert proc.stdout.count("PASSED") == 2, proc.stdout


def test_wheel_metadata(dist: Path) -> None:
    meta = _metadata(dist)
    assert meta["Name"] == "agentrun-ci"
    assert meta["Requires-Python"] == ">=3.10"
    assert meta["License-Expression"] == "MIT"
    assert "LICENSE" in meta.get_all("License-File", [])
    assert meta["Description-Content-Type"] == "text/markdown"
    assert {"local", "mcp", "all", "docs", "test"} <= set(meta.get_all("Provides-Extra", []))
    requires = meta.get_all("Requires-Dist", [])
    # the main command's extra brings what the documented examples use, plots included
    assert any(re.match(r"matplotlib>=[\d.]+; extra == ['\"]all['\"]", r) for r in requires), (
        requires
    )
    # [project.urls]: real addresses only (no public repository yet, so no made-up one)
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL", []))
    assert urls, "no Project-URL"
    for label, url in urls.items():
        assert url.startswith("https://"), (label, url)
        assert not re.search(r"example\.|placeholder|your-?org|TODO|/path/to", url), (label, url)


def test_wheel_and_sdist_contents(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for package in ("agentrun_ci", "agentrun_ci_mcp", "agentrun_code_interpreter"):
        assert f"{package}/__init__.py" in names
    assert "agentrun_ci/py.typed" in names
    assert "agentrun_ci_mcp/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "docs/", "benchmarks/"))]
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = {m.name.split("/", 1)[1] for m in archive.getmembers() if "/" in m.name}
    assert {"README.md", "LICENSE", "pyproject.toml", "agentrun_ci/cli.py"} <= members
    assert not [m for m in members if m.startswith((".venv/", "site/"))]


def _readme_run_code() -> str:
    """The code of README's `… && .venv/bin/agentrun-ci run '…'` fresh-machine command."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if "'.[all]'" in line and "agentrun-ci run" in line]
    assert len(lines) == 1, lines
    last = shlex.split(lines[0].split("&&")[-1])
    assert last[:2] == [".venv/bin/agentrun-ci", "run"]
    return last[2]


def test_installed_wheel_runs_the_readme_command(venv: Path, tmp_path: Path) -> None:
    code = _readme_run_code()
    # run outside the clone, so nothing is imported from the source tree
    proc = _run(venv / "bin" / "agentrun-ci", "run", code, cwd=tmp_path)
    assert proc.stdout == f"hello from {sys.platform}\n42\n"
    assert "local emulator" in proc.stderr  # the user is told code runs on this machine


def test_installed_wheel_mcp_server_version(venv: Path, tmp_path: Path) -> None:
    from agentrun_ci import __version__

    proc = _run(venv / "bin" / "agentrun-ci-mcp", "--version", cwd=tmp_path)
    assert __version__ in proc.stdout + proc.stderr


def test_installed_wheel_brings_what_plots_need(venv: Path, tmp_path: Path) -> None:
    # local kernels run in this venv's Python: what it imports, a plot in a kernel can use
    # (the README's plot command itself runs in tests/test_docs.py)
    proc = _run(
        venv / "bin" / "python",
        "-c",
        "import matplotlib, matplotlib_inline, ipykernel; print(matplotlib.__version__)",
        cwd=tmp_path,
    )
    assert proc.stdout.strip()


def test_readme_mcp_config_launched_as_a_host_plots_and_shows_a_dataframe(
    tmp_path: Path,
) -> None:
    """README's host configuration (`uvx --from /path/to/clone[mcp,local,data] …`) as written,
    launched as a host launches it (the command, its args, a clean environment): a plot comes
    back as an image and a DataFrame as its table."""
    if uv is None:
        pytest.skip("needs uv (uvx), as the README's snippet does")
    pytest.importorskip("mcp")
    import anyio
    from mcp import Client, StdioServerParameters
    from support import base_env

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```json\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    servers = [json.loads(b)["mcpServers"] for b in blocks if "mcpServers" in b]
    assert servers, "README has no MCP host configuration"
    server = servers[0]["agentrun-local"]
    assert server["command"] == "uvx"
    uvx = Path(uv.find_uv_bin()).with_name("uvx")
    args = [a.replace("/path/to/clone", str(ROOT)) for a in server["args"]]
    # uvx builds and installs first: the same, once, outside the client's start-up timeout
    proc = _run(uvx, *args, "--version", cwd=tmp_path, tmpdir=tmp_path)  # uv's locks: ours
    assert proc.stdout.startswith("agentrun-ci-mcp ")
    # a host's minimal environment, plus this machine's way to reach the package index
    # (uvx checks it at each start): its certificates, proxies and index settings
    network = {k: v for k, v in os.environ.items() if k.startswith(NETWORK_SETTINGS)}
    env = base_env(f"readme{os.getpid()}") | network | {"TMPDIR": str(tmp_path)}
    params = StdioServerParameters(command=str(uvx), args=args, env=env, cwd=str(tmp_path))
    plot = "import matplotlib.pyplot as plt\nplt.plot([1, 4, 9])\nplt.show()"
    frame = "import pandas as pd\npd.DataFrame({'city': ['Hangzhou', 'Beijing'], 'n': [3, 4]})"

    async def calls() -> tuple[Any, Any]:
        async with Client(params) as client:
            return (
                await client.call_tool("run_code", {"code": plot}),
                await client.call_tool("run_code", {"code": frame}),
            )

    plotted, framed = anyio.run(calls)
    assert not plotted.is_error, plotted
    assert [c.mime_type for c in plotted.content if c.type == "image"] == ["image/png"]
    assert not framed.is_error, framed
    table = " ".join(c.text for c in framed.content if c.type == "text")
    assert "Hangzhou" in table, framed
    assert "Beijing" in table, framed
