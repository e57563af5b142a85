"""Hostile trees: removal and sweeping never fail, whatever sandboxed code left behind.

A tree some 1,100 levels deep made `shutil.rmtree(ignore_errors=True)` raise
`RecursionError`: the sandbox could not be deleted and every later emulator start on
the machine died in `sweep_stale`. Every tree here is built under the test's own
temporary directory and removed by the code under test (or by the fixture).
"""

from __future__ import annotations

import os
import stat
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentrun_ci import DataPlane, Execution
from agentrun_ci._config import Config
from agentrun_ci.local import EmulatorSettings, LocalEmulator, _tree
from agentrun_ci.local._fs import MAX_DEPTH
from agentrun_ci.local._limits import sweep_stale
from agentrun_ci.local._tree import remove_tree

DEPTH = 1_100


def _deep_tree(top: Path, depth: int, name: str = "d") -> None:
    """`depth` nested directories below `top`, each with a file, built with *at calls.

    With a long `name` the full path is far past PATH_MAX, so only descriptors reach it.
    """
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
            os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd))
    finally:
        os.close(fd)


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A private directory, removed afterwards even if the code under test failed."""
    path = Path(tempfile.mkdtemp(prefix="arci-tree-test-"))
    try:
        yield path
    finally:
        # chmod back anything a test closed, then remove with descriptors (the tree may be
        # deeper than shutil can handle); the assertion is the tests' business, not ours
        remove_tree(path)
        assert not path.exists(), f"test tree left at {path}"


def test_a_tree_deeper_than_python_recursion_is_removed(scratch: Path) -> None:
    tree = scratch / "tree"
    tree.mkdir()
    _deep_tree(tree, DEPTH)
    assert remove_tree(tree) is True
    assert not tree.exists()


def test_a_tree_longer_than_path_max_is_removed(scratch: Path) -> None:
    tree = scratch / "tree"
    tree.mkdir()
    _deep_tree(tree, 200, name="n" * 200)  # about 40,000 bytes of path
    assert remove_tree(tree) is True
    assert not tree.exists()


def test_removal_never_follows_links_out_of_the_tree(scratch: Path) -> None:
    outside = scratch / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    tree = scratch / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "link-dir").symlink_to(outside, target_is_directory=True)
    (tree / "link-file").symlink_to(outside / "keep.txt")
    assert remove_tree(tree) is True
    assert (outside / "keep.txt").read_text() == "precious"


def test_closed_directories_are_opened_and_removed(scratch: Path) -> None:
    tree = scratch / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f").write_text("x")
    os.chmod(tree / "a" / "b", 0)
    os.chmod(tree / "a", 0)
    assert remove_tree(tree) is True


def test_missing_paths_and_plain_files_are_fine(scratch: Path) -> None:
    assert remove_tree(scratch / "nothing-here") is True
    file = scratch / "file"
    file.write_text("x")
    assert remove_tree(file) is True
    assert not file.exists()


def test_what_cannot_be_removed_is_reported_not_raised(scratch: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root removes files from a read-only directory")
    tree = scratch / "tree"
    (tree / "locked").mkdir(parents=True)
    (tree / "locked" / "f").write_text("x")
    os.chmod(tree / "locked", stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert remove_tree(tree) is False
        assert (tree / "locked" / "f").exists()
    finally:
        os.chmod(tree / "locked", 0o700)


def test_sweep_removes_a_dead_emulators_deep_tree(scratch: Path) -> None:
    # our own pid with a start time it never had: a dead emulator's directory
    dead = scratch / f"agentrun-local-{os.getpid()}.1-deadbeef"
    (dead / "sandboxes" / "s1").mkdir(parents=True)
    _deep_tree(dead / "sandboxes" / "s1", DEPTH)
    removed = sweep_stale(str(scratch))
    assert str(dead) in removed
    assert not dead.exists()


def _sandbox(config: Config) -> tuple[str, str]:
    """A new template and a healthy sandbox started from it: (template name, sandbox id)."""
    with httpx.Client(base_url=config.data_endpoint or "", timeout=60) as http:
        name = f"tree-{uuid.uuid4().hex[:8]}"
        r = http.post("/2025-09-10/templates", json={"templateName": name})
        assert r.status_code == 200, r.text
    with DataPlane(config) as data:
        sandbox = data.create_sandbox(name)
        data.wait_until_healthy(sandbox.id)
        return name, sandbox.id


def _run_in_a_sandbox(config: Config, code: str) -> tuple[str, Execution]:
    """Start a sandbox, run `code` in it, and return the sandbox id and the execution."""
    _, sandbox_id = _sandbox(config)
    with DataPlane(config) as data:
        return sandbox_id, data.execute(sandbox_id, code, timeout=30)


@pytest.fixture
def private_tmp(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The emulator's temp dir (and what it sweeps) is the test's own scratch dir."""
    pytest.importorskip("jupyter_client")
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


def test_an_emulator_starts_after_a_dead_one_left_a_deep_tree(private_tmp: Path) -> None:
    """Deep tree, then restart: the next emulator starts, sweeps it, and runs code."""
    dead = private_tmp / f"agentrun-local-{os.getpid()}.1-cafef00d"
    dead.mkdir()
    _deep_tree(dead, DEPTH)
    with LocalEmulator(EmulatorSettings(spare_kernels=0)) as config:
        assert not dead.exists()
        _, execution = _run_in_a_sandbox(config, "print(6 * 7)")
        assert execution.stdout == "42\n"


def test_a_sandbox_whose_code_built_a_deep_tree_is_deleted_cleanly(private_tmp: Path) -> None:
    code = f"""
import os
for _ in range({DEPTH}):
    os.mkdir("d")
    os.chdir("d")
print(os.getcwd().count("/d"))
"""
    with LocalEmulator(EmulatorSettings(spare_kernels=0)) as config:
        sid, execution = _run_in_a_sandbox(config, code)
        assert execution.error is None, execution.error
        assert execution.stdout.strip() == str(DEPTH)
        with DataPlane(config) as data:
            data.delete_sandbox(sid)
        roots = [p / "sandboxes" for p in private_tmp.glob("agentrun-local-*")]
        assert roots, "the emulator's own directory is in the private temp dir"
        assert [q.name for root in roots for q in root.iterdir()] == []
    assert list(private_tmp.glob("agentrun-local-*")) == []


def test_the_file_api_refuses_paths_past_the_depth_and_length_caps(emulator: Config) -> None:
    from agentrun_ci import BadRequestError

    _, sandbox_id = _sandbox(emulator)
    with DataPlane(emulator) as data:
        try:
            deep = "/home/user/" + "/".join(["d"] * (MAX_DEPTH + 1)) + "/f.txt"
            with pytest.raises(BadRequestError, match=f"at most {MAX_DEPTH}"):
                data.write_file(sandbox_id, deep, "x")
            with pytest.raises(BadRequestError, match="longer than 255 bytes"):
                data.write_file(sandbox_id, "n" * 256, "x")
            with pytest.raises(BadRequestError, match="longer than 4096 bytes"):
                data.write_file(sandbox_id, "/".join(["n" * 200] * 21), "x")
            with pytest.raises(BadRequestError, match="depth"):
                data.list_files(sandbox_id, "/home/user", depth=MAX_DEPTH + 1)
        finally:
            data.delete_sandbox(sandbox_id)


def test_an_interrupted_pass_leaves_no_directory_open(scratch: Path) -> None:
    # deeper than a pass holds open: the pass asks for a name to lift the rest to the top,
    # and that is where it is interrupted, with every level above still open
    deep = scratch / "t"
    (deep.joinpath(*["d"] * (_tree._MAX_OPEN + 2))).mkdir(parents=True)
    before = set(os.listdir("/proc/self/fd"))

    class Interrupting:
        def __next__(self) -> int:
            raise KeyboardInterrupt

    top = os.open(deep, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(KeyboardInterrupt):
            _tree._empty(top, Interrupting())  # type: ignore[arg-type]
    finally:
        os.close(top)
    # every descriptor and listing the pass had open is closed (none left to the collector)
    assert set(os.listdir("/proc/self/fd")) <= before
    _tree.remove_tree(deep)
    assert not deep.exists()
