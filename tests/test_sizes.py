"""No hand-written function in agentrun_ci or agentrun_ci_mcp is over 100 lines
(scripts/sizes.py measures; generated sync twins are exempt)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sizes_script", ROOT / "scripts" / "sizes.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_hand_written_function_is_over_100_lines(capsys: pytest.CaptureFixture[str]) -> None:
    status = _load().main(["--top", "5", "--max-function", "100"])
    assert status == 0, capsys.readouterr().err


def test_functions_are_measured_by_qualified_name() -> None:
    source = "class A:\n    def m(self):\n        def f():\n            pass\n        return 1\n"
    assert _load()._functions(ast.parse(source)) == [("A.m", 4), ("A.m.<locals>.f", 2)]
