"""Moving E2B code to AgentRun: change one import.

    python -m venv .venv && .venv/bin/pip install -e '.[local,data]'   # in a clone, once
    .venv/bin/python examples/migrate_from_e2b.py

The E2B original (needs E2B_API_KEY and e2b-code-interpreter):

    from e2b_code_interpreter import Sandbox

    sbx = Sandbox()
    execution = sbx.run_code(code)
    result = {"stdout": execution.logs.stdout, "stderr": execution.logs.stderr}

The AgentRun version below is the same code with `agentrun_ci.e2b` in the import. It runs
on AgentRun when AGENTRUN_ACCESS_KEY_ID / AGENTRUN_ACCESS_KEY_SECRET / AGENTRUN_ACCOUNT_ID
are set, else on the local emulator.
"""

from __future__ import annotations

import json

from agentrun_ci.e2b import Sandbox  # was: from e2b_code_interpreter import Sandbox

code = """
import sys
total = sum(range(10))
print("total", total)
print("a warning", file=sys.stderr)
"""


def main() -> None:
    sbx = Sandbox()
    try:
        execution = sbx.run_code(code)
        result = {"stdout": execution.logs.stdout, "stderr": execution.logs.stderr}
        print("result:", json.dumps(result))

        # The rest of the E2B surface used most often works the same way:
        print("state kept:", sbx.run_code("total * 2").text)  # variables persist
        failed = sbx.run_code("int('x')")
        assert failed.error is not None
        print("error:", failed.error.name)  # errors are data
    finally:
        sbx.kill()  # E2B's kill(): the sandbox is deleted


if __name__ == "__main__":
    main()
