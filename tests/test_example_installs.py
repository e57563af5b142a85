"""Each example says how to install what it needs, and that install brings every package it
imports (in the script, and in the code it sends to the local sandboxes, which run in the
same environment); the notebook says so in its first cell, with an extra that brings
Jupyter."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

#: import name -> the distribution that brings it, where they differ
PROVIDED_BY = {
    "IPython": "ipykernel",  # the kernel brings IPython
    "opentelemetry": "opentelemetry-api",
    "opentelemetry.sdk": "opentelemetry-sdk",
    "PIL": "pillow",
}
_INSTALL = re.compile(r"pip install -e '\.\[(?P<extras>[a-z,]+)\]'(?P<more>(?: [\w.\-]+)*)")
_IMPORT_IN_TEXT = re.compile(r"^\s*(?:import|from)\s+([A-Za-z_][\w.]*)", re.MULTILINE)


def _requirement_name(spec: str) -> str:
    return re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0].lower().replace("_", "-")


def _provided(extras: list[str]) -> set[str]:
    """Distribution names the extras bring (following `agentrun-ci[...]` within them)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional: dict[str, list[str]] = project["optional-dependencies"]
    names = {_requirement_name(r) for r in project["dependencies"]}
    todo = list(extras)
    while todo:
        extra = todo.pop()
        assert extra in optional, f"no extra {extra!r} in pyproject.toml"
        for spec in optional[extra]:
            if spec.startswith("agentrun-ci["):
                todo += spec[len("agentrun-ci[") : spec.index("]")].split(",")
            else:
                names.add(_requirement_name(spec))
    return names


def _imports(sources: list[str]) -> set[str]:
    """Top-level third-party modules imported by the code, or by code in its strings."""
    found: set[str] = set()
    for source in sources:
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                found |= set(_IMPORT_IN_TEXT.findall(node.value))
    third_party = set()
    for name in found:
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top in ("agentrun_ci", "agentrun_ci_mcp"):
            continue
        # "from e2b_code_interpreter import ..." in a docstring: the E2B original, not run
        if top == "e2b_code_interpreter":
            continue
        parts = name.split(".")  # the longest dotted prefix with a known distribution
        known = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
        third_party.add(next((k for k in known if k in PROVIDED_BY), top))
    return third_party


def _check(install_text: str, sources: list[str], where: str) -> None:
    match = _INSTALL.search(install_text)
    assert match, f"{where} does not say how to install what it needs (pip install -e '.[...]')"
    extras = match["extras"].split(",")
    brought = _provided(extras) | {_requirement_name(m) for m in match["more"].split()}
    # no credentials: the local emulator runs it
    assert {"jupyter-client", "ipykernel"} <= brought, f"{where}: add the local extra"
    missing = {
        name
        for name in _imports(sources)
        if PROVIDED_BY.get(name, name).lower().replace("_", "-") not in brought
    }
    assert missing == set(), f"{where}'s install line brings no {sorted(missing)}"


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_an_examples_install_line_brings_what_it_imports(script: str) -> None:
    source = (EXAMPLES / script).read_text()
    _check(ast.get_docstring(ast.parse(source)) or "", [source], script)


def test_the_notebook_says_how_to_run_it_and_its_extra_brings_jupyter() -> None:
    notebook = json.loads((EXAMPLES / "notebook.ipynb").read_text())
    first = "".join(notebook["cells"][0]["source"])
    assert "jupyter lab examples/notebook.ipynb" in first
    cells = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
    _check(first, cells, "notebook.ipynb")
    assert "jupyterlab" in _provided(_INSTALL.search(first)["extras"].split(","))  # type: ignore[index]
