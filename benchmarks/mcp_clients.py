"""Many MCP clients over streamable HTTP: this server against a bare MCP server, same run.

Run: python benchmarks/mcp_clients.py [--clients 1,4,16] [--calls 20] [--rounds 1]
Prints a markdown table and writes it to benchmarks/results/mcp_clients.md.

Each round opens N concurrent clients (one MCP session each, N = 1, 4, 16) against

* `agentrun-ci-mcp --transport streamable-http` on the local backend, its default over HTTP
  (`dedicated`: a sandbox per client, made at the client's first call, deleted when the
  client ends its session), and
* the floor: a bare `MCPServer` (the SDK's streamable-HTTP app under uvicorn, as this server
  runs it) whose `run_code` tool runs the same code in its own process (`exec`),

one after the other for each N, alternating which goes first, so that the machine's load
hits both alike (after one unmeasured call to each: this server starts its emulator at the
first call it ever gets). Every client makes one first call (`x = 1`), waits until every client has
made its own, then `--calls` steady calls (`print(1)`) at the same time as the others.
Reported per server and N: first-call and steady-call p50/p95 (and the slowest first call),
errors, and how steady-call p50 grows from 1 to N clients; the goal (issue: many clients)
is 0 errors, no first call over 30 s, and a growth at most 1.3x the floor's.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder holds mcp.py: run as a script, it would shadow the `mcp` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import argparse  # noqa: E402 -- after the sys.path fix above
import contextlib  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

import anyio  # noqa: E402
import attrs  # noqa: E402

from agentrun_ci import __version__  # noqa: E402

HERE = Path(__file__).resolve()
RESULTS = HERE.parent / "results" / "mcp_clients.md"
SCRIPT = shutil.which("agentrun-ci-mcp", path=str(Path(sys.executable).parent)) or ""
FIRST = "x = 1"
STEADY = "print(1)"
GOAL_GROWTH = 1.3
GOAL_FIRST_S = 30.0
OURS = "agentrun-ci-mcp (dedicated, local backend)"
FLOOR = "bare MCPServer, code run in-process (floor)"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ---------------------------------------------------------------- the floor server


def serve_floor(port: int) -> None:
    """The bare server: the SDK's `MCPServer`, one `run_code` tool that runs the code here."""
    import uvicorn
    from mcp.server import MCPServer

    server = MCPServer("floor", version="0")

    @server.tool()
    def run_code(code: str) -> str:
        """Run Python code in this process; return its stdout."""
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(code, {})  # the benchmark's own fixed snippets
        return out.getvalue()

    uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=port, log_level="warning")


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited:\n{log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not listen within 120 s:\n{log.read_text()}")
        time.sleep(0.05)


@contextlib.contextmanager
def server(argv: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[None]:
    with open(log, "wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env)
    try:
        wait_listening(proc, port, log)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def base_env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        # lets a checkout other than the installed one be measured (git worktree)
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }


# ---------------------------------------------------------------- clients


@attrs.define
class Round:
    """One round of N clients against one server."""

    first: list[float] = attrs.field(factory=list)  # seconds
    steady: list[float] = attrs.field(factory=list)  # milliseconds
    errors: list[str] = attrs.field(factory=list)


async def one_client(
    url: str, token: str, calls: int, all_first: Any, done: Any, out: Round
) -> None:
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0)) as http,
            streamable_http_client(url, http_client=http) as (read, write, *_),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            start = time.perf_counter()
            result = await session.call_tool("run_code", {"code": FIRST})
            out.first.append(time.perf_counter() - start)
            if result.is_error:
                out.errors.append(f"first call: {result.content}")
            done()
            await all_first.wait()
            for _ in range(calls):
                start = time.perf_counter()
                result = await session.call_tool("run_code", {"code": STEADY})
                out.steady.append((time.perf_counter() - start) * 1000)
                if result.is_error:
                    out.errors.append(f"steady call: {result.content}")
    except Exception as exc:  # counted, never fatal: a benchmark reports what failed
        out.errors.append(f"{type(exc).__name__}: {exc}")
        done()


async def clients_round(url: str, token: str, n: int, calls: int) -> Round:
    out = Round()
    all_first = anyio.Event()
    finished = 0

    def done() -> None:
        nonlocal finished
        finished += 1
        if finished == n:
            all_first.set()

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one_client, url, token, calls, all_first, done, out)
    return out


# ---------------------------------------------------------------- run and report


def load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


async def measure(
    counts: list[int], calls: int, rounds: int, strategy: str | None
) -> tuple[dict[tuple[str, int], Round], list[float]]:
    results: dict[tuple[str, int], Round] = {}
    loads = [load()]
    token = secrets.token_urlsafe(16)
    ours_port, floor_port = free_port(), free_port()
    ours_argv = [SCRIPT, "--transport", "streamable-http", "--port", str(ours_port)]
    if strategy:
        ours_argv += ["--strategy", strategy]
    ours_env = base_env() | {
        "AGENTRUN_MCP_BACKEND": "local",
        "AGENTRUN_MCP_AUTH_TOKEN": token,
        "AGENTRUN_MCP_LOG_LEVEL": "WARNING",
        "AGENTRUN_MCP_MAX_CLIENTS": str(max(64, max(counts))),
    }
    floor_argv = [sys.executable, str(HERE), "--serve-floor", str(floor_port)]
    urls = {
        OURS: (f"http://127.0.0.1:{ours_port}/mcp", token),
        FLOOR: (f"http://127.0.0.1:{floor_port}/mcp", ""),
    }
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        stack.enter_context(server(ours_argv, ours_env, ours_port, Path(tmp) / "ours.log"))
        stack.enter_context(server(floor_argv, base_env(), floor_port, Path(tmp) / "floor.log"))
        # one client and one call each first, not measured: this server makes its interpreter
        # (and starts its emulator) at the first call it ever gets, once per process
        for url, tok in urls.values():
            await clients_round(url, tok, 1, 1)
        order = [OURS, FLOOR]
        for _ in range(rounds):
            for n in counts:
                for name in order:
                    url, tok = urls[name]
                    got = await clients_round(url, tok, n, calls)
                    into = results.setdefault((name, n), Round())
                    into.first += got.first
                    into.steady += got.steady
                    into.errors += got.errors
                    print(
                        f"{name:45s} n={n:<3d} first p50 {pct(got.first, 0.5):6.2f} s, "
                        f"steady p50 {pct(got.steady, 0.5):7.1f} ms, errors {len(got.errors)}",
                        flush=True,
                    )
                order.reverse()  # the other one goes first next time
        loads.append(load())
    return results, loads


def report(
    results: dict[tuple[str, int], Round],
    loads: list[float],
    counts: list[int],
    calls: int,
    rounds: int,
    strategy: str | None,
) -> str:
    low, high = min(counts), max(counts)
    lines = [
        f"# Many MCP clients over streamable HTTP (agentrun-ci {__version__})",
        "",
        f"{', '.join(map(str, counts))} concurrent clients, one MCP session each; per client one "
        f"first call (`{FIRST}`), then {calls} steady calls (`{STEADY}`) made while every other "
        f"client makes its own; {rounds} round(s), the two servers taking turns, after one "
        "unmeasured call to each (this server makes its interpreter, and starts its emulator, "
        "at the first call it ever gets). "
        f"`agentrun-ci-mcp` ({strategy or 'dedicated, its HTTP default'}: a sandbox per client "
        "on the embedded local emulator) against a bare `MCPServer` that runs the same code in "
        f"its own process. Python {platform.python_version()}, {platform.system()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs, 1-minute load average {loads[0]:.1f} at "
        f"the start and {loads[-1]:.1f} at the end (other work on the machine inflates every row "
        "alike; compare rows within the table).",
        "",
        "| server | clients | first call p50 s | p95 s | max s | steady p50 ms | p95 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in (OURS, FLOOR):
        for n in counts:
            r = results[(name, n)]
            lines.append(
                f"| {name} | {n} | {pct(r.first, 0.5):.2f} | {pct(r.first, 0.95):.2f} | "
                f"{max(r.first, default=float('nan')):.2f} | {pct(r.steady, 0.5):.1f} | "
                f"{pct(r.steady, 0.95):.1f} | {len(r.errors)} |"
            )
    growth = {
        name: pct(results[(name, high)].steady, 0.5) / pct(results[(name, low)].steady, 0.5)
        for name in (OURS, FLOOR)
    }
    relative = growth[OURS] / growth[FLOOR]
    errors = sum(len(results[(OURS, n)].errors) for n in counts)
    slowest = max((max(results[(OURS, n)].first, default=0.0) for n in counts), default=0.0)
    met = errors == 0 and slowest <= GOAL_FIRST_S and relative <= GOAL_GROWTH
    lines += [
        "",
        f"Steady-call p50 growth from {low} to {high} clients: this server {growth[OURS]:.1f}x, "
        f"the floor {growth[FLOOR]:.1f}x, so **{relative:.2f}x the floor's growth**. Goal "
        f"(0 errors, no first call over {GOAL_FIRST_S:g} s, growth at most {GOAL_GROWTH:g}x the "
        f"floor's): **{'met' if met else 'not met'}** in this run ({errors} errors, slowest "
        f"first call {slowest:.1f} s).",
    ]
    for name in (OURS, FLOOR):
        for n in counts:
            seen = results[(name, n)].errors
            if seen:
                lines.append(f"\nFirst error of {name} with {n} clients: `{seen[0][:300]}`")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", default="1,4,16", help="comma-separated client counts")
    parser.add_argument("--calls", type=int, default=20, help="steady calls per client")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--strategy", default=None, help="this server's --strategy")
    parser.add_argument("--note", default="", help="a line added under the table")
    parser.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_floor:
        serve_floor(args.serve_floor)
        return
    if not SCRIPT:
        sys.exit("agentrun-ci-mcp is not installed beside this Python: pip install -e '.[mcp]'")
    counts = sorted({int(c) for c in args.clients.split(",")})
    results, loads = anyio.run(measure, counts, args.calls, args.rounds, args.strategy)
    text = report(results, loads, counts, args.calls, args.rounds, args.strategy)
    if args.note:
        text += f"\n{args.note}\n"
    print(text)
    RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
