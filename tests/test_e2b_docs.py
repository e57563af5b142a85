"""docs/e2b.md's Python blocks run as written, on the local backend (```python cloud blocks
need AgentRun and are only parsed)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "e2b.md"
FENCE = re.compile(r"^```python( cloud)?\n(.*?)^```", re.MULTILINE | re.DOTALL)
BLOCKS = [(bool(cloud), body) for cloud, body in FENCE.findall(DOC.read_text(encoding="utf-8"))]


def test_the_doc_has_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize(("cloud", "code"), BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_python_block_runs(cloud: bool, code: str) -> None:
    ast.parse(code)
    if cloud:
        pytest.skip("needs AgentRun credentials")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AGENTRUN_", "ALIBABA_CLOUD_", "FC_", "E2B_"))
    }
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # every `print(...)  # expected` comment in the block is what it prints, in order
    expected = [
        line.split("# ", 1)[1].strip()
        for line in code.splitlines()
        if line.lstrip().startswith("print(") and "# " in line
    ]
    assert done.stdout.splitlines()[-len(expected) :] == expected
