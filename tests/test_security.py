"""The secret key never leaks (logs, reprs, errors, kernels, commands); bad signatures get 403."""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentrun_ci import (
    AgentRunError,
    CodeInterpreter,
    Config,
    ControlPlane,
    DataPlane,
    PermissionDeniedError,
)

pytest.importorskip("jupyter_client")

import contextlib

from agentrun_ci.local import EmulatorSettings, FaultPlan, LocalEmulator

KEY_ID = "LTAI-local-test-key"
SECRET = "SECRET-VALUE-" + uuid.uuid4().hex
ENV_SECRETS = {
    "AGENTRUN_ACCESS_KEY_ID": KEY_ID,
    "AGENTRUN_ACCESS_KEY_SECRET": SECRET,
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
    "ALIBABA_CLOUD_SECURITY_TOKEN": SECRET + "-sts",
    "MY_SERVICE_TOKEN": SECRET,
}


@pytest.fixture
def signed(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LocalEmulator, Config]]:
    """A signed emulator started while the server process env holds the secrets."""
    for name, value in ENV_SECRETS.items():
        monkeypatch.setenv(name, value)
    plan = FaultPlan(seed=3, retry_after=0.01, slow_seconds=0.01)
    emulator = LocalEmulator(
        EmulatorSettings(faults=plan), access_key_id=KEY_ID, access_key_secret=SECRET
    )
    config = emulator.start()
    try:
        yield emulator, config
    finally:
        emulator.stop()


def _texts(exc: BaseException) -> list[str]:
    return [str(exc), repr(exc), "".join(traceback.format_exception(exc))]


def test_secret_never_in_logs_reprs_errors_kernels_or_commands(
    signed: tuple[LocalEmulator, Config], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    emulator, config = signed
    assert emulator.settings.faults is not None
    caplog.set_level(logging.DEBUG)
    seen: list[str] = [repr(config), str(config), repr(emulator), repr(emulator.settings)]
    outputs: list[str] = []

    def attempt(fn: object, *args: object, **kw: object) -> object:
        try:
            return fn(*args, **kw)  # type: ignore[operator]
        except AgentRunError as exc:
            seen.extend(_texts(exc))
            return None

    with ControlPlane(config) as cp, DataPlane(config) as dp:
        seen += [repr(cp), repr(dp)]
        cp.create_template("sec")
        sid = dp.create_sandbox("sec").sandbox_id
        dp.wait_until_healthy(sid)
        ex = dp.execute(sid, "import os\nprint(sorted(os.environ.items()))")
        outputs.append(ex.stdout)
        assert "'HOME'" in ex.stdout  # the environment was really printed
        outputs.append(dp.run_command(sid, "env; cat /proc/self/environ | tr '\\0' '\\n'").stdout)
        outputs.append(
            dp.execute(
                sid, "import os\nprint(open(f'/proc/{os.getppid()}/environ', 'rb').read())"
            ).stdout
        )
        dp.write_file(sid, "/home/user/a.txt", "x")
        outputs.append(dp.read_file(sid, "/home/user/a.txt").text)
        # errors of every kind: 404, 400, a failing execute, bad arguments
        attempt(dp.read_file, sid, "/home/user/missing")
        attempt(dp.read_file, sid, "/etc/passwd")
        attempt(dp.execute, sid, "x", timeout=99)
        attempt(dp.get_context, sid, "nope")
        attempt(cp.get_template, "nope")
        err = dp.execute(sid, "raise RuntimeError('boom')")
        seen.append(repr(err))
        # injected faults: transport resets, 5xx, 429
        emulator.settings.faults.update(
            {
                "rates": {
                    "reset_before": 0.3,
                    "reset_after": 0.2,
                    "error_503": 0.2,
                    "rate_limit": 0.2,
                }
            }
        )
        for _ in range(15):
            attempt(dp.execute, sid, "1")
            attempt(dp.list_files, sid)
        emulator.settings.faults.update({"rates": {}})
        dp.delete_sandbox(sid)
        cp.delete_template("sec")
    with CodeInterpreter(config, owner="s" + uuid.uuid4().hex[:7]) as ci:
        seen.append(repr(ci))
        run = ci.execute_code("import os\nprint(dict(os.environ))")
        outputs.append(run.stdout)
        seen.append(repr(run))
        attempt(ci.read_file, "/home/user/missing")
    # a wrong key: its 403 must not echo either secret
    wrong = Config(
        access_key_id=KEY_ID,
        access_key_secret="WRONG-" + SECRET,
        account_id="local",
        data_endpoint=config.data_endpoint,
        control_endpoint=config.control_endpoint,
    )
    with DataPlane(wrong) as bad:
        attempt(bad.health, "x")

    logged = [r.getMessage() for r in caplog.records] + [caplog.text]
    assert any("injected" in t or "failed in transit" in t for t in seen)  # errors were seen
    for text in seen + logged + outputs:
        assert SECRET not in text
    for text in outputs:
        assert "AGENTRUN_ACCESS_KEY" not in text
        assert "MY_SERVICE_TOKEN" not in text
        assert "ALIBABA_CLOUD" not in text


def test_bad_signatures_are_rejected_with_403(signed: tuple[LocalEmulator, Config]) -> None:
    _, config = signed
    url = config.data_url
    wrong = Config(
        access_key_id=KEY_ID,
        access_key_secret="not-the-secret",
        account_id="local",
        data_endpoint=config.data_endpoint,
        control_endpoint=config.control_endpoint,
    )
    with DataPlane(wrong) as dp, pytest.raises(PermissionDeniedError) as info:
        dp.create_sandbox("anything")
    assert info.value.status_code == 403
    with ControlPlane(wrong) as cp, pytest.raises(PermissionDeniedError):
        cp.list_templates()
    # unsigned, a forged header, a replayed signature on another path, the admin route
    assert httpx.get(f"{url}/sandboxes/x/health").status_code == 403
    forged = {"Agentrun-Authorization": f"AGENTRUN4-HMAC-SHA256 Credential={KEY_ID}/x"}
    assert httpx.get(f"{url}/sandboxes/x/health", headers=forged).status_code == 403
    from agentrun_ci._auth import signature_headers

    headers = signature_headers(
        "GET",
        f"{url}/sandboxes/x/health",
        access_key_id=KEY_ID,
        access_key_secret=SECRET,
        region="cn-hangzhou",
    )
    assert httpx.get(f"{url}/sandboxes/y/health", headers=headers).status_code == 403
    assert httpx.post(f"{url}/_admin/faults", json={"rates": {}}).status_code == 403
    # the right key works (the control case, so the 403s above mean something)
    with DataPlane(config) as ok, pytest.raises(AgentRunError) as missing:
        ok.health("x")
    assert getattr(missing.value, "status_code", None) == 404


_SERVER = """
import os, sys
from agentrun_ci.local import LocalEmulator
em = LocalEmulator(access_key_id=os.environ["AGENTRUN_ACCESS_KEY_ID"],
                   access_key_secret=os.environ["AGENTRUN_ACCESS_KEY_SECRET"])
em.start()
print(em.url, flush=True)
sys.stdin.read()
em.stop()
"""

_SCAN = """
import glob, os
hits = []
for path in glob.glob('/proc/[0-9]*/environ') + glob.glob('/proc/[0-9]*/cmdline'):
    try:
        with open(path, 'rb') as f:
            if SECRET in f.read():
                hits.append(path)
    except OSError:
        pass
print(os.getuid(), len(hits))
"""


def test_a_server_started_with_secrets_in_its_environment_does_not_hand_them_to_code(
    tmp_path: Path,
) -> None:
    """The secret is in the server's exec-time environment (/proc/<pid>/environ), as when
    one runs `AGENTRUN_ACCESS_KEY_SECRET=... agentrun-ci local serve`. Code and commands
    must not find it: not in their own environment, not by reading the server's."""
    import os
    import subprocess
    import sys

    secret = "SECRET-VALUE-" + uuid.uuid4().hex
    env = {**os.environ, **ENV_SECRETS, "AGENTRUN_ACCESS_KEY_SECRET": secret}
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        assert url.startswith("http://"), url
        config = Config(
            access_key_id=KEY_ID,
            access_key_secret=secret,
            account_id="local",
            data_endpoint=url,
            control_endpoint=url,
        )
        with ControlPlane(config) as cp, DataPlane(config) as dp:
            cp.create_template("leak")
            sid = dp.create_sandbox("leak").sandbox_id
            dp.wait_until_healthy(sid)
            own = dp.execute(sid, "import os\nprint(dict(os.environ))").stdout
            cmd = dp.run_command(sid, "env").stdout
            scan_code = f"SECRET = {secret.encode()!r}\n" + _SCAN
            scan = dp.execute(sid, scan_code).stdout.split()
            # the same from a command, before and after trying to uncover the host's /proc
            dp.write_file(sid, "/home/user/scan.py", scan_code)
            py = sys.executable
            cmd_scans = dp.run_command(
                sid, f"{py} scan.py; umount /proc || umount -l /proc; {py} scan.py"
            ).stdout.split()
            dp.delete_sandbox(sid)
        assert secret not in own
        assert secret not in cmd
        uid, hits = int(scan[0]), int(scan[1])
        from agentrun_ci.local._limits import pid_namespace_works

        if hits and not pid_namespace_works(sys.executable):
            pytest.xfail(
                "no PID namespace here (needs root and util-linux unshare), so code of the "
                "server's uid can read its /proc/<pid>/environ: a known limitation"
            )
        assert (uid, hits) == (uid, 0)
        assert [int(n) for n in cmd_scans[1::2]] == [0, 0], cmd_scans
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stdout is not None:
            server.stdout.close()


def test_secret_never_in_json_log_lines(signed: tuple[LocalEmulator, Config]) -> None:
    import io
    import json

    from agentrun_ci._logs import JsonFormatter

    emulator, config = signed
    assert emulator.settings.faults is not None
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())  # what --log-format json installs
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        with CodeInterpreter(config, owner="j" + uuid.uuid4().hex[:7]) as ci:
            ci.execute_code("import os\nprint(dict(os.environ))")
            ci.execute_code("raise RuntimeError('boom')")
            emulator.settings.faults.update({"rates": {"error_503": 0.5, "rate_limit": 0.3}})
            for _ in range(6):
                with contextlib.suppress(AgentRunError):
                    ci.list_files("/home/user")
            emulator.settings.faults.update({"rates": {}})
        wrong = Config(
            access_key_id=KEY_ID,
            access_key_secret="WRONG-" + SECRET,
            account_id="local",
            data_endpoint=config.data_endpoint,
            control_endpoint=config.control_endpoint,
        )
        with DataPlane(wrong) as bad, pytest.raises(PermissionDeniedError):
            bad.health("x")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]  # one object each
    assert any(e.get("event") == "execute" and e.get("outcome") == "error" for e in events)
    assert any(e.get("level") == "DEBUG" for e in events)
    assert SECRET not in stream.getvalue()
