#!/usr/bin/env python3
"""Module sizes and the longest functions of agentrun_ci and agentrun_ci_mcp.

    python scripts/sizes.py [--top 15] [--max-function 100]

Prints two Markdown tables: every module's lines (total and code: not blank, not only a
comment), and the longest functions and methods (nested ones by their qualified name).
Generated code (agentrun_ci/_sync, written by scripts/unasync.py) is listed but marked,
and does not count against --max-function: the script exits 1 when a hand-written
function is longer than that.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agentrun_ci", "agentrun_ci_mcp")
#: directories whose modules are generated (their twins in _async are the source)
GENERATED = (Path("agentrun_ci") / "_sync",)


class Function(NamedTuple):
    module: str
    name: str
    lines: int
    generated: bool


def _generated(path: Path) -> bool:
    return any(path.is_relative_to(folder) for folder in GENERATED)


def _code_lines(text: str) -> int:
    return sum(
        1 for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    )


def _functions(tree: ast.AST, prefix: str = "") -> list[tuple[str, int]]:
    """(qualified name, lines from `def` to its last line) of every function in `tree`."""
    found: list[tuple[str, int]] = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}{node.name}"
            found.append((name, (node.end_lineno or node.lineno) - node.lineno + 1))
            found += _functions(node, f"{name}.<locals>.")
        elif isinstance(node, ast.ClassDef):
            found += _functions(node, f"{prefix}{node.name}.")
        else:
            found += _functions(node, prefix)
    return found


def measure() -> tuple[list[tuple[str, int, int, bool]], list[Function]]:
    modules: list[tuple[str, int, int, bool]] = []
    functions: list[Function] = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            text = path.read_text(encoding="utf-8")
            generated = _generated(rel)
            modules.append((rel.as_posix(), len(text.splitlines()), _code_lines(text), generated))
            for name, lines in _functions(ast.parse(text, filename=str(rel))):
                functions.append(Function(rel.as_posix(), name, lines, generated))
    return modules, functions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--top", type=int, default=15, help="functions listed (default 15)")
    parser.add_argument(
        "--max-function",
        type=int,
        default=100,
        help="exit 1 when a hand-written function has more lines (default 100)",
    )
    args = parser.parse_args(argv)
    modules, functions = measure()
    mark = " (generated)"

    print("## Modules\n")
    print("| module | lines | code lines |")
    print("|---|---:|---:|")
    for name, lines, code, generated in sorted(modules, key=lambda m: -m[1]):
        print(f"| {name}{mark if generated else ''} | {lines} | {code} |")
    total = sum(m[1] for m in modules)
    print(f"| **total** ({len(modules)} modules) | {total} | {sum(m[2] for m in modules)} |")

    print(f"\n## Longest functions (top {args.top})\n")
    print("| function | module | lines |")
    print("|---|---|---:|")
    ranked = sorted(functions, key=lambda f: -f.lines)
    for f in ranked[: args.top]:
        print(f"| {f.name}{mark if f.generated else ''} | {f.module} | {f.lines} |")

    over = [f for f in ranked if f.lines > args.max_function and not f.generated]
    if over:
        print(
            f"\n{len(over)} hand-written function(s) over {args.max_function} lines:",
            file=sys.stderr,
        )
        for f in over:
            print(f"  {f.module}: {f.name} ({f.lines} lines)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
