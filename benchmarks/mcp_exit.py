"""stdin EOF → exit of the stdio MCP server, in several states side by side.

Run: python benchmarks/mcp_exit.py [--rounds 8]
Prints a markdown table and writes it to benchmarks/results/mcp_exit.md.

Each round spawns `agentrun-ci-mcp` on the local backend (the embedded emulator,
the default without credentials), brings it into one state over raw JSON-RPC,
then closes its stdin the way hosts do and times how long the process takes to
exit. Hosts send SIGTERM 2 s after closing stdin, so every state must exit well
within that (target: under 1 s). The states are visited in rotation, so load
drift on a shared machine hits them alike:

* idle: after the handshake, no tool call (nothing to delete);
* after a run: one `run_code` answered (a sandbox and a kernel to delete);
* cancelled: a `run_code` of `time.sleep(20)` cancelled with
  `notifications/cancelled`, stdin closed right after the cancel;
* cancelled, settled: the same, stdin closed once the server logged the
  context restart that stops the cancelled code;
* run in flight: a `run_code` of `time.sleep(20)` under way, the client quiet for
  longer than a batch would be, then stdin closed (a host quitting mid-run).

A round that is not over 2 s after EOF gets SIGTERM (as a host would) and
counts as a miss.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentrun_ci_mcp.serve import EOF_BATCH_WINDOW

RESULTS = Path(__file__).parent / "results" / "mcp_exit.md"
SCRIPT = shutil.which("agentrun-ci-mcp", path=str(Path(sys.executable).parent)) or ""
HOST_GRACE = 2.0
REPLY_WAIT = 120.0


class Proc:
    """The console script over newline-delimited JSON-RPC; stderr goes to a file."""

    def __init__(self, log: Path) -> None:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
            "AGENTRUN_CI_OWNER": "exitbench" + secrets.token_hex(2),
            "AGENTRUN_MCP_BACKEND": "local",
            "AGENTRUN_MCP_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
        }
        self.log = log
        self._err = open(log, "wb")  # noqa: SIM115 -- closed in close()
        self.proc = subprocess.Popen(
            [SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            env=env,
            start_new_session=True,
        )
        self._id = 0

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def call(self, method: str, params: dict[str, Any]) -> int:
        self._id += 1
        self.send({"jsonrpc": "2.0", "id": self._id, "method": method, "params": params})
        return self._id

    def reply(self, request_id: int) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            message = json.loads(line)
            if message.get("id") == request_id and ("result" in message or "error" in message):
                return message  # type: ignore[no-any-return]
        raise RuntimeError(f"no reply to {request_id}:\n{self.log.read_text()[-3000:]}")

    def initialize(self) -> None:
        self.reply(
            self.call(
                "initialize",
                {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "bench", "version": "0"},
                },
            )
        )
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def run(self, code: str) -> None:
        result = self.reply(
            self.call("tools/call", {"name": "run_code", "arguments": {"code": code}})
        )
        assert not result.get("result", {}).get("isError", True), result

    def wait_log(self, needle: str) -> None:
        deadline = time.monotonic() + REPLY_WAIT
        while needle not in self.log.read_text(errors="replace"):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"never logged {needle!r}:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.02)

    def cancelled_run(self, settle: bool) -> None:
        # a first call makes the sandbox and kernel: the cancel then lands in the sleep
        self.run("x = 1")
        request = self.call(
            "tools/call", {"name": "run_code", "arguments": {"code": "import time; time.sleep(20)"}}
        )
        time.sleep(0.5)  # the run has reached its kernel (a benchmark may sleep)
        self.send(
            {
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": {"requestId": request, "reason": "bench"},
            }
        )
        if settle:
            self.wait_log("restarting the client's context")

    def run_in_flight(self) -> None:
        self.run("x = 1")
        self.call(
            "tools/call", {"name": "run_code", "arguments": {"code": "import time; time.sleep(20)"}}
        )
        # the run has reached its kernel, and the client is quiet for longer than a batch
        time.sleep(0.5 + EOF_BATCH_WINDOW)

    def close_like_a_host(self) -> tuple[float, int, bool]:
        """EOF; SIGTERM to the group after 2 s; the seconds to exit, status, signalled."""
        assert self.proc.stdin is not None
        started = time.monotonic()
        self.proc.stdin.close()
        try:
            status = self.proc.wait(HOST_GRACE)
            return time.monotonic() - started, status, False
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            status = self.proc.wait(30)
            return time.monotonic() - started, status, True

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._err.close()


STATES: dict[str, Callable[[Proc], None]] = {
    "idle (handshake only)": lambda p: None,
    "after a run_code": lambda p: p.run("x = 1"),
    "cancelled run, EOF right after the cancel": lambda p: p.cancelled_run(settle=False),
    "cancelled run, EOF after the context restart began": lambda p: p.cancelled_run(settle=True),
    "run in flight, client quiet, then EOF": Proc.run_in_flight,
}


def measure(rounds: int) -> dict[str, list[tuple[float, int, bool]]]:
    out: dict[str, list[tuple[float, int, bool]]] = {name: [] for name in STATES}
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(rounds):
            names = list(STATES)
            for name in names[n % len(names) :] + names[: n % len(names)]:
                proc = Proc(Path(tmp) / f"{n}-{len(out[name])}.log")
                try:
                    proc.initialize()
                    STATES[name](proc)
                    out[name].append(proc.close_like_a_host())
                finally:
                    proc.close()
                print(f"round {n} {name}: {out[name][-1]}", file=sys.stderr)
    return out


def table(results: dict[str, list[tuple[float, int, bool]]], rounds: int) -> str:
    load = os.getloadavg()[0]
    lines = [
        "# stdin EOF → exit of `agentrun-ci-mcp` (stdio), by state",
        "",
        f"{rounds} closes per state, states in rotation, local backend (embedded emulator); "
        f"Python {platform.python_version()}, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, 1-minute load average {load:.1f} at the end. A close is "
        "the hosts' one: EOF, SIGTERM to the process group 2 s later if still running.",
        "",
        "| state | p50 ms | max ms | exit 0 | needed SIGTERM |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, rows in results.items():
        times = [t * 1000 for t, _, _ in rows]
        zero = sum(1 for _, status, _ in rows if status == 0)
        late = sum(1 for _, _, signalled in rows if signalled)
        lines.append(
            f"| {name} | {statistics.median(times):.0f} | {max(times):.0f} | "
            f"{zero}/{len(rows)} | {late}/{len(rows)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not SCRIPT:
        sys.exit("agentrun-ci-mcp is not installed in this environment")
    text = table(measure(args.rounds), args.rounds)
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
