"""Every third-party module the packages import is declared in pyproject.toml (issue: anyio
was imported but not declared): the core in `dependencies`, the emulator in the `local`
extra, the MCP server in the `mcp` extra. Lazy imports count too."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"agentrun_ci", "agentrun_ci_mcp"}
#: modules imported only when installed (the code checks first, or says which extra to
#: install), and the extra declaring them
OPTIONAL = {"opentelemetry": "otel", "websockets": "tty"}


def _imported(files: list[Path]) -> set[str]:
    """Top-level names of every absolute import in `files`."""
    names: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.partition(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in FIRST_PARTY}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(requirements: list[str]) -> set[str]:
    found = (re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", r.strip()) for r in requirements)
    return {_norm(m.group(0)) for m in found if m}


def _distributions(modules: set[str]) -> dict[str, set[str]]:
    """module → the distributions that provide it (as installed here)."""
    provided = importlib.metadata.packages_distributions()
    return {m: {_norm(d) for d in provided.get(m, [])} for m in modules}


@pytest.mark.parametrize(
    ("where", "extras"),
    [("core", ()), ("local", ("local",)), ("mcp", ("mcp",))],
)
def test_every_imported_distribution_is_declared(where: str, extras: tuple[str, ...]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = _declared(project["dependencies"])
    for extra in extras:
        declared |= _declared(project["optional-dependencies"][extra])
    sdk = ROOT / "agentrun_ci"
    files = {
        "core": [p for p in sdk.rglob("*.py") if "local" not in p.relative_to(sdk).parts],
        "local": list((sdk / "local").rglob("*.py")),
        "mcp": list((ROOT / "agentrun_ci_mcp").rglob("*.py")),
    }[where]
    optional = {
        module: _declared(project["optional-dependencies"][extra])
        for module, extra in OPTIONAL.items()
    }
    missing = {
        module: sorted(dists) or ["(not installed here)"]
        for module, dists in _distributions(_imported(files)).items()
        if not dists & (declared | optional.get(module, set()))
    }
    assert missing == {}, f"imported by {where} but not declared: {missing}"
