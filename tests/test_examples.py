"""examples/ run as they are on the local default (no credentials in the environment).

Each script is a subprocess with every AgentRun credential variable removed, so it
takes the path a new user takes: the in-process local emulator. The notebook runs
under nbclient with the venv's python3 kernel.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CREDENTIAL_PREFIXES = ("AGENTRUN_", "ALIBABA_CLOUD_", "FC_")

pytest.importorskip("jupyter_client")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(CREDENTIAL_PREFIXES)}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(script: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        cwd=ROOT,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _lines(stdout: str) -> dict[str, str]:
    """'label: value' lines → {label: value}."""
    pairs = (line.split(":", 1) for line in stdout.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def test_every_example_is_tested() -> None:
    tested = {
        "quickstart.py",
        "strategies.py",
        "migrate_from_e2b.py",
        "files_and_commands.py",
        "mcp_client.py",
        "notebook.ipynb",
        "observability.py",
    }
    present = {p.name for p in EXAMPLES.iterdir() if p.suffix in (".py", ".ipynb")}
    assert present == tested


def test_quickstart() -> None:
    proc = _run("quickstart.py")
    out = _lines(proc.stdout)
    assert out["backend"] == "local emulator"
    assert out["stdout"] == "42"
    assert out["result"] == "{'answer': 42}"
    assert out["error"] == "ZeroDivisionError - division by zero"
    # the user is told that code runs on this machine
    assert "local emulator" in proc.stderr


def test_migrate_from_e2b() -> None:
    proc = _run("migrate_from_e2b.py")
    out = _lines(proc.stdout)
    assert out["result"] == '{"stdout": ["total 45\\n"], "stderr": ["a warning\\n"]}'
    assert out["state kept"] == "90"
    assert out["error"] == "ValueError"


def test_migrate_from_e2b_exits_quietly() -> None:
    proc = _run("migrate_from_e2b.py")
    assert "cleanup step failed" not in proc.stderr


def test_files_and_commands() -> None:
    proc = _run("files_and_commands.py")
    out = _lines(proc.stdout)
    assert out["rows"] == "3"
    assert out["warmest"] == "Shenzhen"
    assert out["files"] == "warmest.txt, weather.csv"
    assert out["wc exit"] == "0 lines: 4"
    assert out["ls exit"].split()[0] != "0"


def test_strategies_table() -> None:
    proc = _run("strategies.py")
    rows = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header == ["strategy", "start (s)", "mean call (s)", "state between calls", "total (s)"]
    table = {
        cells[0]: cells
        for cells in ([c.strip() for c in row.strip("|").split("|")] for row in rows[2:])
    }
    assert list(table) == ["ephemeral", "singleton", "pool"]
    # ephemeral keeps nothing between calls; singleton and pool keep each caller's state
    assert table["ephemeral"][3] == "lost (NameError)"
    assert table["singleton"][3] == "kept"
    assert table["pool"][3] == "kept"
    for cells in table.values():
        for number in (cells[1], cells[2], cells[4]):
            assert float(number) >= 0


def test_observability() -> None:
    pytest.importorskip("opentelemetry.sdk")
    proc = _run("observability.py")
    out = _lines(proc.stdout)
    assert out["result"] == str(sum(i * i for i in range(2_000_000)))
    assert float(out["wall time (s)"]) > 0
    assert float(out["cpu time (s)"]) >= 0
    assert float(out["peak memory (MiB)"]) >= 64  # the 64 MiB block is still held
    # the console exporters' JSON: spans from the application's down to HTTP, then metrics
    for name in (
        '"name": "analyse"',
        '"name": "agentrun_ci.execute_code"',
        '"name": "POST /sandboxes/{sandboxId}/contexts/execute"',
        '"name": "agentrun_ci.execution.duration"',
        '"name": "http.client.request.duration"',
    ):
        assert name in proc.stdout, name
    # one INFO line per execution
    assert proc.stderr.count("INFO execute python ok in") == 2


def test_mcp_client() -> None:
    for module in ("mcp", "agentrun_ci_mcp.server"):
        try:
            if importlib.util.find_spec(module) is None:
                pytest.skip(f"{module} is not importable")
        except ModuleNotFoundError:
            pytest.skip(f"{module} is not importable")
    proc = _run("mcp_client.py")
    out = _lines(proc.stdout)
    assert out["server"].startswith("agentrun-ci ")
    assert {"run_code", "read_file", "write_file"} <= set(out["tools"].split(", "))
    assert out["stdout"] == "42"
    assert out["error"] == "ZeroDivisionError"


def test_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("matplotlib")
    notebook = nbformat.read(EXAMPLES / "notebook.ipynb", as_version=4)
    for cell in notebook.cells:  # run from scratch, not from the saved outputs
        if cell.cell_type == "code":
            cell.outputs = []
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=180,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    for name in [k for k in os.environ if k.startswith(CREDENTIAL_PREFIXES)]:
        monkeypatch.delenv(name)  # the kernel inherits this environment
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    readings = [(i * 37) % 23 + 10 for i in range(60)]
    mean = sum(readings) / len(readings)
    assert f"n=60 mean={mean:.2f}" in text
    assert f"above mean: {sum(1 for r in readings if r > mean)}" in text
    assert "closed" in text
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1
    assert base64.b64decode(images[0]["data"]["image/png"]).startswith(b"\x89PNG")
