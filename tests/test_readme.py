"""README.md's shell commands are the ones that work, and CI runs the README's test command.

Nothing is installed here: the commands are parsed, not run (the examples and CLI
tests exercise what they do).
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks(language: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    return [body.strip() for lang, body in FENCE.findall(text) if lang == language]


def _steps(command: str) -> list[list[str]]:
    """A `a && b && c` line → its commands, each split as the shell would."""
    return [shlex.split(part) for part in command.split("&&")]


def _fresh_machine_commands() -> tuple[str, str]:
    bash = [line for block in _blocks("bash") for line in block.splitlines() if line.strip()]
    install_run = [line for line in bash if "'.[all]'" in line and "agentrun-ci run" in line]
    install_test = [line for line in bash if "'.[test]'" in line and "-m pytest" in line]
    assert len(install_run) == 1, bash
    assert len(install_test) == 1, bash
    return install_run[0], install_test[0]


def test_readme_gives_the_two_fresh_machine_commands() -> None:
    run_line, test_line = _fresh_machine_commands()
    for line in (run_line, test_line):
        steps = _steps(line)
        # a fresh venv first, then everything through that venv (no system pip)
        assert steps[0] == ["python3", "-m", "venv", ".venv"]
        assert all(step[0].startswith(".venv/bin/") for step in steps[1:]), steps
    run_steps = _steps(run_line)
    assert run_steps[1] == [".venv/bin/pip", "install", "-e", ".[all]"]
    assert run_steps[2][:2] == [".venv/bin/agentrun-ci", "run"]
    assert len(run_steps[2]) == 3  # the code is one quoted argument
    ast.parse(run_steps[2][2])  # and it is valid Python
    assert _steps(test_line)[1:] == [
        [".venv/bin/pip", "install", "-e", ".[test]"],
        [".venv/bin/python", "-m", "pytest"],
    ]


def test_ci_runs_the_readme_test_command() -> None:
    _, test_line = _fresh_machine_commands()
    script = CI_RUN.read_text(encoding="utf-8")
    commands = [
        line.strip()
        for line in script.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    # .ci/run removes a stale venv, then runs the README line verbatim as one line.
    assert test_line.startswith("python3 -m venv .venv && ")
    assert test_line in commands, f"{test_line!r} is not a line of .ci/run"
    assert commands[-1] == test_line, "the README test command must be the last step"


def test_readme_python_blocks_are_valid_python() -> None:
    blocks = _blocks("python")
    if not blocks:
        pytest.skip("README has no python blocks")
    for block in blocks:
        ast.parse(block)


def test_install_lines_work_from_a_clone() -> None:
    """Not on PyPI yet: README says so, and no page installs the package by its name."""
    readme = README.read_text(encoding="utf-8")
    assert "Not on PyPI yet" in readme
    by_name = re.compile(r"""(pip install|uvx|--from)\s+['"]?agentrun-ci\b""")
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        found = by_name.findall(text) + re.findall(r'"agentrun-ci\[', text)
        assert not found, f"{page.name} installs agentrun-ci by name from a registry: {found}"
