"""The jail probes that worked are remembered per machine and user (`local/_memo.py`): a later
emulator starts without probing while nothing they depend on has changed; a failure is never
remembered; a state directory or file that is not private to the user is not used."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
from support import sandbox_on

pytest.importorskip("jupyter_client")

from agentrun_ci.local import EmulatorSettings, LocalEmulator, _memo, _probe


def _never() -> str:
    raise AssertionError("probed, though it worked before with nothing changed")


def test_a_success_is_used_again_until_a_file_it_depends_on_changes(tmp_path: Path) -> None:
    memo = _memo.ProbeMemo(tmp_path)
    program = tmp_path / "program"
    program.write_text("v1")
    files = (str(program),)
    assert not memo.worked("jail", "key", files)
    memo.remember("jail", "key", files, "")
    assert memo.worked("jail", "key", files)
    assert not memo.worked("jail", "another key", files)
    assert not memo.worked("holder", "key", files)
    program.write_text("version 2")  # another size and mtime: another program
    assert not memo.worked("jail", "key", files)
    assert stat.S_IMODE((tmp_path / "probes.json").stat().st_mode) == 0o600


def test_a_failure_is_not_remembered(tmp_path: Path) -> None:
    memo = _memo.ProbeMemo(tmp_path)
    memo.remember("uplink", "key", (), "no /dev/net/tun")
    assert not memo.worked("uplink", "key", ())
    assert not (tmp_path / "probes.json").exists()


def test_a_file_that_is_not_plainly_ours_is_not_read(tmp_path: Path) -> None:
    memo = _memo.ProbeMemo(tmp_path)
    memo.remember("jail", "key", (), "")
    assert memo.worked("jail", "key", ())
    elsewhere = tmp_path / "elsewhere.json"
    (tmp_path / "probes.json").rename(elsewhere)
    (tmp_path / "probes.json").symlink_to(elsewhere)
    assert not memo.worked("jail", "key", ())
    (tmp_path / "probes.json").unlink()
    (tmp_path / "probes.json").write_text("[not a mapping]")
    assert not memo.worked("jail", "key", ())


def test_the_state_directory_is_private_and_not_a_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    where = _memo.state_dir()
    assert where == tmp_path / "agentrun-ci"
    assert stat.S_IMODE(where.stat().st_mode) == 0o700
    where.chmod(0o777)  # what another user could write into: made private again
    assert _memo.state_dir() == where
    assert stat.S_IMODE(where.stat().st_mode) == 0o700
    where.rmdir()
    where.symlink_to(tmp_path / "elsewhere", target_is_directory=True)  # a planted link
    (tmp_path / "elsewhere").mkdir()
    assert _memo.state_dir() is None


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("bwrap") is None,
    reason="the jail needs Linux and bubblewrap (apt-get install bubblewrap)",
)
def test_a_second_emulator_starts_without_probing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_memo, "_machine", _memo.ProbeMemo(tmp_path))
    for cache in ("_jail_works", "_holder_works", "_uplink_works"):
        monkeypatch.setattr(_probe, cache, {})
    settings = EmulatorSettings(spare_kernels=0)
    first = LocalEmulator(settings)
    with first:
        assert first.core is not None
        jail, uplink = first.core.jail, first.core.uplink
    assert jail is not None, "bwrap is installed but the jail did not start"
    kinds = {e["kind"] for e in json.loads((tmp_path / "probes.json").read_text()).values()}
    assert {"jail", "holder"} <= kinds

    # another process's view: nothing tried in this one, every probe refused if it runs
    for cache in ("_jail_works", "_holder_works", "_uplink_works"):
        monkeypatch.setattr(_probe, cache, {})
    monkeypatch.setattr(_probe, "_run_in_jail", lambda *a: _never())
    monkeypatch.setattr(_probe, "_run_in_holder", lambda *a: _never())
    monkeypatch.setattr(_probe, "_run_uplink", lambda *a: _never())
    second = LocalEmulator(settings)
    config = second.start()
    try:
        assert second.core is not None
        # the same jail (each emulator has its own tools and resolv.conf)
        assert attrs.evolve(second.core.jail, tools="", resolv="") == attrs.evolve(
            jail, tools="", resolv=""
        )
        assert second.core.uplink == uplink
        with sandbox_on(config) as (data, sandbox_id):  # and its jail runs code
            assert data.execute(sandbox_id, "print(6 * 7)").stdout == "42\n"
    finally:
        second.stop()
    assert os.listdir(tmp_path) == ["probes.json"]


def test_what_the_interpreter_said_is_kept_until_its_packages_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentrun_ci.local import _jail

    monkeypatch.setattr(_memo, "_machine", _memo.ProbeMemo(tmp_path / "state"))
    (tmp_path / "state").mkdir()
    # a venv of its own, so that "a package installed" can be done to it here
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    asked: list[list[str]] = []
    real_run = subprocess.run

    def counted(argv: list[str], **kwargs: Any) -> Any:
        asked.append(argv)
        return real_run(argv, **kwargs)

    monkeypatch.setattr(_jail.subprocess, "run", counted)
    _jail.interpreter_info.cache_clear()
    first = _jail.interpreter_info(python)
    _jail.interpreter_info.cache_clear()  # another process
    assert _jail.interpreter_info(python) == first
    assert len(asked) == 1
    (site,) = venv.glob("lib/python*/site-packages")
    (site / "newly_installed.py").write_text("")  # the directory's mtime changes
    os.utime(site, ns=(site.stat().st_atime_ns, site.stat().st_mtime_ns + 10**9))
    _jail.interpreter_info.cache_clear()
    assert _jail.interpreter_info(python) == first
    assert len(asked) == 2
    _jail.interpreter_info.cache_clear()
