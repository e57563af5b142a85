"""The public surface type-checks as it behaves: `mypy --strict` over tests/typing_checks/,
files of `assert_type` calls that are never run (E2B's class-and-instance methods and
`read`/`run` overloads, the facade, a lease, the planes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_typing_checks_pass_mypy_strict() -> None:
    checks = sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "typing_checks").glob("*.py")
    )
    assert len(checks) >= 2
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", *checks],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
