"""Quickstart: run code, keep state between calls, get errors back as data.

    python -m venv .venv && .venv/bin/pip install -e '.[local]'   # in a clone, once
    .venv/bin/python examples/quickstart.py

With AGENTRUN_ACCESS_KEY_ID, AGENTRUN_ACCESS_KEY_SECRET and AGENTRUN_ACCOUNT_ID set this
runs on Alibaba Cloud AgentRun; without them it runs on this machine with the local
emulator (started in-process, no account needed).
"""

from __future__ import annotations

from agentrun_ci import CodeInterpreter


def main() -> None:
    # close() (here: leaving the `with`) deletes the session and the interpreter it created.
    with CodeInterpreter.from_env() as interpreter:
        interpreter.create_interpreter(name="quickstart", cpu=2.0, memory=2048)
        interpreter.start_session()
        # the in-process emulator signs with a key pair of its own, under account "local"
        local = interpreter.config is None or interpreter.config.account_id == "local"
        print("backend:", "local emulator" if local else "cloud")

        interpreter.execute_code("x = 21")  # state lives on in the session's context
        execution = interpreter.execute_code("print(x * 2)")
        print("stdout:", execution.stdout.strip())

        execution = interpreter.execute_code("{'answer': x * 2}")  # last expression → result
        print("result:", execution.text)

        # An exception in *your* code is data, as in E2B; raise_for_error() would raise it.
        execution = interpreter.execute_code("1 / 0")
        assert execution.error is not None
        print("error:", execution.error.name, "-", execution.error.value)


if __name__ == "__main__":
    main()
