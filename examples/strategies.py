"""The session strategies side by side, with timings.

    python -m venv .venv && .venv/bin/pip install -e '.[local]'   # in a clone, once
    .venv/bin/python examples/strategies.py

* singleton -- one session, one context per caller: fast, state kept per caller;
* pool      -- warm sessions leased to callers: isolated sessions, state kept per lease;
* ephemeral -- a fresh sandbox for every call: nothing is shared, nothing is kept;
* dedicated -- a fresh sandbox per lease, deleted at release (E2B's model).

With AGENTRUN_* credentials this talks to AgentRun; without them it starts one local
emulator and points every interpreter at it, so that the timings compare the
strategies and not emulator start-ups.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from agentrun_ci import STRATEGY_NAMES, CodeInterpreter, Config

CALLERS = ("alice", "bob")


@contextmanager
def backend() -> Iterator[Config]:
    config = Config.from_env()
    if config.has_credentials:
        yield config
        return
    from agentrun_ci.local import LocalEmulator

    with LocalEmulator() as local:  # an explicit endpoint pair selects it, no keys needed
        yield local


def run_strategy(config: Config, strategy: str) -> dict[str, str]:
    row: dict[str, str] = {"strategy": strategy}
    started = time.perf_counter()
    with CodeInterpreter(config, strategy=strategy, pool_size=(2, 4)) as interpreter:
        interpreter.create_interpreter(name=f"strategies-{strategy}", memory=2048)
        interpreter.start_session()
        row["start (s)"] = f"{time.perf_counter() - started:.2f}"
        durations: list[float] = []
        kept: list[str] = []
        for caller in CALLERS:
            with interpreter.lease(caller) as lease:
                began = time.perf_counter()
                lease.execute_code(f"me = {caller!r}")
                execution = lease.execute_code("print(me)")
                durations.append((time.perf_counter() - began) / 2)
                kept.append(
                    "kept"
                    if execution.stdout.strip() == caller
                    else f"lost ({execution.error.name if execution.error else '?'})"
                )
        row["mean call (s)"] = f"{sum(durations) / len(durations):.3f}"
        row["state between calls"] = ", ".join(sorted(set(kept)))
    row["total (s)"] = f"{time.perf_counter() - started:.2f}"
    return row


def main() -> None:
    with backend() as config:
        rows = [run_strategy(config, s) for s in STRATEGY_NAMES]
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        print("| " + " | ".join(row[c] for c in columns) + " |")


if __name__ == "__main__":
    main()
