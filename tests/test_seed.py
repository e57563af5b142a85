"""The migration guide's calling code (phase 3 and the code comparison), run as written.

The guide reads its keys from the environment and passes them explicitly; here the
environment points at a *signed* local emulator, so the keys really are checked.
"""

from __future__ import annotations

import json
import os

import pytest

from agentrun_ci import Config
from agentrun_ci._sync.control_plane import ControlPlane
from agentrun_ci.local import LocalEmulator

AK = "LTAIseedseedseed"
SK = "seed-secret-value-0123456789"


@pytest.fixture
def signed_cloud_env(monkeypatch: pytest.MonkeyPatch) -> Config:
    with LocalEmulator(access_key_id=AK, access_key_secret=SK) as config:
        monkeypatch.setenv("AGENTRUN_ACCESS_KEY_ID", AK)
        monkeypatch.setenv("AGENTRUN_ACCESS_KEY_SECRET", SK)
        monkeypatch.setenv("AGENTRUN_ACCOUNT_ID", str(config.account_id))
        monkeypatch.setenv("AGENTRUN_REGION", "cn-hangzhou")
        monkeypatch.setenv("AGENTRUN_DATA_ENDPOINT", str(config.data_endpoint))
        monkeypatch.setenv("AGENTRUN_CONTROL_ENDPOINT", str(config.control_endpoint))
        monkeypatch.setenv("AGENTRUN_CI_OWNER", "seed-test")
        yield config


def test_phase_three_and_code_comparison_run_as_written(signed_cloud_env: Config) -> None:
    # --- the guide, phase 3, step 2 and 3 (verbatim but for the comments) ---
    AGENTRUN_ACCESS_KEY_ID = os.getenv("AGENTRUN_ACCESS_KEY_ID")
    AGENTRUN_ACCESS_KEY_SECRET = os.getenv("AGENTRUN_ACCESS_KEY_SECRET")
    AGENTRUN_ACCOUNT_ID = os.getenv("AGENTRUN_ACCOUNT_ID")
    AGENTRUN_REGION = os.getenv("AGENTRUN_REGION", "cn-hangzhou")

    from agentrun_code_interpreter import CodeInterpreter, NetworkMode

    interpreter = CodeInterpreter(
        access_key_id=AGENTRUN_ACCESS_KEY_ID,
        access_key_secret=AGENTRUN_ACCESS_KEY_SECRET,
        region=AGENTRUN_REGION,
    )
    instance = interpreter.create_interpreter(
        name="mcp-server-interpreter",
        cpu=2.0,
        memory=2048,
        network_mode=NetworkMode.PUBLIC,
        session_timeout=3600,
    )
    session = interpreter.start_session()

    # --- step 4: the tool body ---
    result = interpreter.execute_code(
        code="print('Hello')",
        context_id="default",
        execution_timeout=30,
    )
    text = json.dumps({"stdout": result.stdout, "stderr": result.stderr}, indent=2)
    assert json.loads(text) == {"stdout": "Hello\n", "stderr": ""}

    # --- the code comparison: per-request execute with the code only ---
    result = interpreter.execute_code("print(6 * 7)")
    output = {"stdout": result.stdout, "stderr": result.stderr}
    assert output == {"stdout": "42\n", "stderr": ""}

    assert signed_cloud_env.account_id == AGENTRUN_ACCOUNT_ID
    assert instance.status == "READY"
    assert session is not None

    # --- step 5: shutdown() ---
    if interpreter and interpreter.code_interpreter_id:
        interpreter.control_client.delete_code_interpreter(interpreter.code_interpreter_id)
    interpreter.close()

    with ControlPlane(Config.from_env()) as control:
        assert [t for t in control.list_templates() if "seed-test" in t.name] == []
        live = [s for s in control.list_sandboxes() if s.status != "TERMINATED"]
        assert [s for s in live if "seed-test" in s.sandbox_id] == []
