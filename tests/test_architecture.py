"""docs/architecture.md names every module of both packages, in its package's section."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: package directory → the heading of the section of docs/architecture.md that maps it
SECTIONS = {
    "agentrun_ci": "## SDK (`agentrun_ci`)",
    "agentrun_ci/_async": "## SDK (`agentrun_ci`)",
    "agentrun_ci/_sync": "## SDK (`agentrun_ci`)",
    "agentrun_ci/e2b": "## E2B shim (`agentrun_ci/e2b`)",
    "agentrun_ci/local": "## Emulator (`agentrun_ci/local`)",
    "agentrun_ci_mcp": "## MCP server (`agentrun_ci_mcp`)",
}


def _sections() -> dict[str, str]:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    parts = re.split(r"^(## .*)$", text, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _named(module: Path, package: str, body: str) -> bool:
    name = module.name
    if package == "agentrun_ci/_sync":  # generated twins: named by their async original
        return f"_async/{name}" in body or f"`_sync/{name}`" in body
    if package == "agentrun_ci/_async":
        return f"_async/{name}" in body
    return re.search(rf"`[^`]*\b{re.escape(name)}`", body) is not None


def test_every_module_is_named_in_its_packages_section() -> None:
    sections = _sections()
    missing = []
    for package, heading in SECTIONS.items():
        assert heading in sections, f"docs/architecture.md has no section {heading!r}"
        body = sections[heading]
        if package == "agentrun_ci/local":  # the emulator's prose runs on into the next one
            body += sections.get("## Local sandbox", "")
        for module in sorted((ROOT / package).glob("*.py")):
            if module.name == "__init__.py" and package != "agentrun_ci/e2b":
                continue
            if not _named(module, package, body):
                missing.append(f"{package}/{module.name}")
    assert missing == [], (
        f"docs/architecture.md does not name {missing}: add each to its package's table "
        "with one line on its job"
    )
