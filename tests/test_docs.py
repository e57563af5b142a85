"""The docs: the site builds strictly, and every code block in README.md and docs/*.md runs
as written on the local default (no credentials: the in-process emulator).

A block is run according to its fence's language: `python` with this interpreter, `bash` /
`sh` / `console` with bash (the venv's scripts first on PATH, `.venv` in the working directory
pointing at this venv), `json` is parsed; `text` and unlabelled fences are output or diagrams.
A block that cannot run here says why on the line before its fence:
`<!-- docs-test: cloud -->` (needs AgentRun credentials) or `<!-- docs-test: skip REASON -->`.
Each block runs in its own empty directory with every AgentRun credential variable removed.
Blocks take the newcomer's path: the emulator started in-process. (Pointing them at one
shared emulator saved no CPU time when measured: a block's cost is its interpreter starting.)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CREDENTIAL_PREFIXES = ("AGENTRUN_", "ALIBABA_CLOUD_", "FC_")
RUN = {"python", "bash", "sh", "console", "json"}
NOT_CODE = {"", "text"}

FENCE = re.compile(
    r"(?:^<!-- docs-test: (?P<mark>skip|cloud)(?: (?P<reason>[^\n]*?))? -->\n)?"
    r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)


class Block(NamedTuple):
    path: Path
    line: int
    lang: str
    body: str
    mark: str | None
    reason: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def _blocks() -> list[Block]:
    found = []
    for path in _pages():
        text = path.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            line = text.count("\n", 0, m.start("lang")) + 1
            found.append(
                Block(path, line, m["lang"], m["body"], m["mark"], (m["reason"] or "").strip())
            )
    return found


BLOCKS = _blocks()
RUNNABLE = [b for b in BLOCKS if b.lang in RUN]


def test_every_block_is_run_or_says_why_not() -> None:
    unknown = [b.id for b in BLOCKS if b.lang not in RUN | NOT_CODE]
    assert not unknown, f"fence languages the docs test does not know: {unknown}"
    unexplained = [b.id for b in BLOCKS if b.mark == "skip" and not b.reason]
    assert not unexplained, f"skipped without a reason: {unexplained}"
    ran = [b for b in RUNNABLE if b.mark is None]
    assert len(ran) >= 10, [b.id for b in ran]  # the docs mostly run; skipping is the exception


def _repository_files() -> list[Path]:
    """The files a clone has: git's list when this is a checkout, else the tree minus the
    directories a checkout does not ship (venvs, the built site, caches)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
        ).stdout.decode()
        return [ROOT / name for name in listed.split("\0") if name]
    except (OSError, subprocess.SubprocessError):
        skip = {".git", ".venv", "venv", "site", "build", "dist", "node_modules"}
        return [
            p
            for p in ROOT.rglob("*")
            if p.is_file()
            and not skip.intersection(p.relative_to(ROOT).parts)
            and not any(part.endswith("cache__") or part.endswith("_cache") for part in p.parts)
        ]


def test_no_paths_of_a_development_machine() -> None:
    """Nothing in the repository points at files a clone does not have."""
    here = Path(__file__).resolve()
    for path in _repository_files():
        if path.resolve() == here or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # images and other binary files
        for needle in ("../shared", "/work/", "/home/runner"):
            assert needle not in text, f"{path.relative_to(ROOT)} mentions {needle}"
    # a home directory is a machine's, in what a reader reads (code may name /root/ itself)
    for path in [*_pages(), ROOT / "mkdocs.yml", ROOT / "pyproject.toml"]:
        assert "/root/" not in path.read_text(encoding="utf-8"), path.relative_to(ROOT)


def test_no_page_is_a_draft_of_another() -> None:
    for path in _pages():
        title = path.read_text(encoding="utf-8").lstrip().split("\n", 1)[0]
        assert title.startswith("# "), f"{path.relative_to(ROOT)} does not open with its title"
        assert "draft" not in title.lower(), f"{path.relative_to(ROOT)}: {title}"


def test_every_docs_page_is_in_the_site_nav() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r":\s*([\w./-]+\.md)\s*$", config, re.MULTILINE))
    present = {p.name for p in DOCS.glob("*.md")}
    assert present == listed, (present - listed, listed - present)


def test_every_environment_variable_the_code_reads_is_documented() -> None:
    code = [*(ROOT / "agentrun_ci").rglob("*.py"), *(ROOT / "agentrun_ci_mcp").rglob("*.py")]
    names = {
        name
        for path in code
        for name in re.findall(r"[\"'](AGENTRUN_[A-Z0-9_]*[A-Z0-9])[\"']", path.read_text("utf-8"))
    }
    docs = "\n".join(p.read_text(encoding="utf-8") for p in _pages())
    undocumented = sorted(n for n in names if n not in docs)
    assert not undocumented, f"variables read by the code that no page names: {undocumented}"


def test_benchmarks_page_includes_every_result_table() -> None:
    page = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    included = set(re.findall(r'^--8<-- "(benchmarks/results/[\w.-]+\.md)"$', page, re.MULTILINE))
    results = {p.relative_to(ROOT).as_posix() for p in (ROOT / "benchmarks/results").glob("*.md")}
    assert results == included, (results - included, included - results)


def test_docs_site_builds_strictly(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    api = (tmp_path / "api" / "index.html").read_text(encoding="utf-8")
    assert "execute_code" in api  # the reference is generated from the docstrings
    benchmarks = (tmp_path / "benchmarks" / "index.html").read_text(encoding="utf-8")
    assert "p50" in benchmarks  # the result tables are included


def _env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(CREDENTIAL_PREFIXES)}
    # each block has its own registry of local emulators: a block's `agentrun-ci run`
    # sees the emulator that block started, never another block's
    env["AGENTRUN_LOCAL_REGISTRY"] = str(workdir / ".emulators")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("VIRTUAL_ENV", None)
    return env


def _run_block(block: Block, workdir: Path) -> subprocess.CompletedProcess[str]:
    # `.venv/bin/…` in the docs means the reader's venv: here, the one running the tests
    (workdir / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    argv = (
        [sys.executable, "-c", block.body]
        if block.lang == "python"
        else ["bash", "-euo", "pipefail", "-c", block.body]
    )
    # its own process group: whatever the block starts in the background (an emulator) is
    # killed with it, even when the block fails or hangs before its own cleanup
    with subprocess.Popen(
        argv,
        cwd=workdir,
        env=_env(workdir),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGTERM)  # an emulator stops its kernels on TERM
            try:
                stdout, stderr = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                stdout, stderr = proc.communicate()
            stderr += "\n[docs test: stopped after 600 s]"
        _signal_group(proc.pid, signal.SIGKILL)  # anything the block left running
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # nothing of it is left
        os.killpg(pgid, signum)


def _to_run(block: Block) -> bool:
    return block.mark is None and block.lang in ("python", "bash", "sh", "console")


@pytest.fixture(scope="module")
def block_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[subprocess.CompletedProcess[str]]]]:
    """The selected blocks, started two at a time as soon as the first of them is tested.

    Each block is a few seconds of one mostly single-threaded process (an interpreter, an
    emulator, a kernel starting); two at once keep both cores busy.
    """
    selected = [
        item.callspec.params["block"]
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_code_block_runs_as_written"
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            b.id: pool.submit(_run_block, b, tmp_path_factory.mktemp("block"))
            for b in selected
            if _to_run(b)
        }
        yield futures
        for future in futures.values():
            future.cancel()


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_code_block_runs_as_written(
    block: Block, block_runs: dict[str, Future[subprocess.CompletedProcess[str]]]
) -> None:
    if block.mark == "cloud":
        pytest.skip("needs AgentRun credentials")
    if block.mark == "skip":
        pytest.skip(block.reason or "")
    if block.lang == "json":
        json.loads(block.body)
        return
    proc = block_runs[block.id].result(timeout=1800)
    assert proc.returncode == 0, (
        f"{block.id} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )
    assert "Traceback" not in proc.stderr, proc.stderr
