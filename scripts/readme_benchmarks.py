#!/usr/bin/env python3
"""Copy the tables in benchmarks/results/*.md into README.md's "Benchmarks" section."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["dataplane", "emulator", "strategies", "mcp", "reliability"]
START = "<!-- benchmarks:start -->"
END = "<!-- benchmarks:end -->"


def section() -> str:
    parts = []
    for name in ORDER:
        path = ROOT / "benchmarks" / "results" / f"{name}.md"
        if not path.exists():
            continue
        lines = []
        for line in path.read_text(encoding="utf-8").strip().splitlines():
            # demote the result files' headings below README's "## Benchmarks"
            lines.append("##" + line if line.startswith("#") else line)
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    readme.write_text(f"{head}{START}\n{section()}\n{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    main()
