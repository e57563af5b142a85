"""N sequential execute calls against a loopback stub, over HTTP and TLS, client by client.

Clients compared in one run:

* ours: `DataPlane` (sync), the same signed with a key pair, `AsyncDataPlane` (async);
* the floor: a bare pooled `httpx.Client` / `httpx.AsyncClient` loop doing the same POST;
* Alibaba's `agentrun-sdk` (`CodeInterpreterDataAPI.execute_code`), run in its own venv
  when one is given (`--agentrun-sdk-python`, default /tmp/bench-agentrun-sdk-venv/bin/python;
  create it with `python -m venv … && …/pip install agentrun-sdk`), skipped otherwise.

The stub runs in a separate process (so it does not compete for our GIL), sets
TCP_NODELAY and writes each response in one `sendall` (otherwise delayed ACKs add
~40 ms to every keep-alive call). TLS uses a throwaway CA from `trustme`, handed to
every client through SSL_CERT_FILE.

    python benchmarks/dataplane.py [-n 500] [--rounds 5]

Prints a markdown table and writes it to benchmarks/results/dataplane.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from agentrun_ci import AsyncDataPlane, Config, DataPlane

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "dataplane.md"
SANDBOX = "01KAWBP6JQD0J3Z34BP4WMX1KG"
CODE = "print('hello'); 6 * 7"
REQUEST = {"code": CODE, "timeout": 30.0, "contextId": "ctx-1"}
EXECUTE_BODY = json.dumps(
    {
        "results": [
            {"type": "stdout", "text": "hello\n"},
            {
                "type": "result",
                "text": "42",
                "data": {"text/plain": "42"},
                "isMainResult": True,
                "executionCount": 1,
            },
            {"type": "endOfExecution", "status": "ok", "executionCount": 1},
        ],
        "contextId": "ctx-1",
    }
).encode()
DEFAULT_SDK_PYTHON = "/tmp/bench-agentrun-sdk-venv/bin/python"


# ------------------------------------------------------------------ the stub server


def _serve_connection(conn: socket.socket) -> None:
    """A minimal keep-alive HTTP/1.1 responder: read a request, answer in one write."""
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    response = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"x-acs-request-id: stub\r\nContent-Length: "
        + str(len(EXECUTE_BODY)).encode()
        + b"\r\n\r\n"
        + EXECUTE_BODY
    )
    buffer = b""
    try:
        while True:
            while b"\r\n\r\n" not in buffer:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            length = 0
            close = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip())
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            while len(buffer) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            buffer = buffer[length:]
            conn.sendall(response)
            if close:
                return
    except (OSError, ssl.SSLError):
        return
    finally:
        conn.close()


def _stub_main(port_queue: Any, cert_dir: str | None) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    context = None
    if cert_dir is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(os.path.join(cert_dir, "server.pem"))
    port_queue.put(listener.getsockname()[1])
    while True:
        conn, _ = listener.accept()
        if context is not None:
            try:
                conn = context.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError):
                conn.close()
                continue
        threading.Thread(target=_serve_connection, args=(conn,), daemon=True).start()


class Stub:
    """The stub server in its own process; `url` is its base URL."""

    def __init__(self, cert_dir: str | None) -> None:
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        self.process = ctx.Process(target=_stub_main, args=(queue, cert_dir), daemon=True)
        self.process.start()
        port = queue.get(timeout=30)
        scheme = "https" if cert_dir else "http"
        # "localhost" so that the trustme certificate's name matches.
        self.url = f"{scheme}://localhost:{port}"

    def close(self) -> None:
        self.process.terminate()
        self.process.join(10)


# ------------------------------------------------------------------ clients


def time_calls(call: Callable[[], Any], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def bench_ours_sync(url: str, n: int, *, signed: bool = False) -> list[float]:
    config = Config(data_endpoint=url)
    if signed:
        config = Config(data_endpoint=url, access_key_id="LTAIbenchkey", access_key_secret="bench")
    with DataPlane(config) as plane:
        time_calls(lambda: plane.execute(SANDBOX, CODE, context_id="ctx-1"), 20)  # warm up
        return time_calls(lambda: plane.execute(SANDBOX, CODE, context_id="ctx-1"), n)


def bench_floor_sync(url: str, n: int) -> list[float]:
    path = f"/sandboxes/{SANDBOX}/contexts/execute"
    with httpx.Client(base_url=url) as client:

        def call() -> Any:
            response = client.post(path, json=REQUEST)
            response.raise_for_status()
            return response.json()

        time_calls(call, 20)
        return time_calls(call, n)


async def _atime_calls(call: Callable[[], Any], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


def bench_ours_async(url: str, n: int) -> list[float]:
    async def main() -> list[float]:
        async with AsyncDataPlane(Config(data_endpoint=url)) as plane:

            def call() -> Any:
                return plane.execute(SANDBOX, CODE, context_id="ctx-1")

            await _atime_calls(call, 20)
            return await _atime_calls(call, n)

    return asyncio.run(main())


def bench_floor_async(url: str, n: int) -> list[float]:
    path = f"/sandboxes/{SANDBOX}/contexts/execute"

    async def main() -> list[float]:
        async with httpx.AsyncClient(base_url=url) as client:

            async def call() -> Any:
                response = await client.post(path, json=REQUEST)
                response.raise_for_status()
                return response.json()

            await _atime_calls(call, 20)
            return await _atime_calls(call, n)

    return asyncio.run(main())


SDK_SCRIPT = r"""
import asyncio, json, sys, time
from agentrun.sandbox.api.code_interpreter_data import CodeInterpreterDataAPI
from agentrun.utils.config import Config
url, n, mode, sandbox, code = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
api = CodeInterpreterDataAPI(sandbox, config=Config(data_endpoint=url, account_id="123"))
def once():
    return api.execute_code(code, context_id="ctx-1", timeout=30)
async def aonce():
    return await api.execute_code_async(code, context_id="ctx-1", timeout=30)
assert once()["contextId"] == "ctx-1"
samples = []
if mode == "sync":
    for _ in range(20): once()
    for _ in range(n):
        t = time.perf_counter(); once(); samples.append(time.perf_counter() - t)
else:
    async def main():
        for _ in range(20): await aonce()
        for _ in range(n):
            t = time.perf_counter(); await aonce(); samples.append(time.perf_counter() - t)
    asyncio.run(main())
print(json.dumps(samples))
"""


def bench_sdk(python: str, url: str, n: int, mode: str) -> list[float]:
    env = dict(os.environ, DISABLE_BREAKING_CHANGES_WARNING="1")
    for name in list(env):
        if name.startswith(("AGENTRUN_", "ALIBABA_CLOUD_", "FC_")):
            del env[name]  # the SDK reads these; the benchmark talks to the stub only
    out = subprocess.run(
        [python, "-c", SDK_SCRIPT, url, str(n), mode, SANDBOX, CODE],
        capture_output=True,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),  # the SDK runs load_dotenv() on import
        check=True,
        timeout=600,
    )
    samples: list[float] = json.loads(out.stdout.strip().splitlines()[-1])
    return samples


# ------------------------------------------------------------------ the run


def summarize(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return statistics.mean(samples) * 1e3, statistics.median(samples) * 1e3, p95 * 1e3


Row = tuple[str, str, int, float, float, float, float]


def run_transport(transport: str, url: str, args: argparse.Namespace, sdk_python: str) -> list[Row]:
    """Every client against one stub, interleaved round by round; one row per client."""
    clients: dict[str, Callable[[int], list[float]]] = {
        "httpx.Client loop (floor)": lambda n: bench_floor_sync(url, n),
        "agentrun-ci DataPlane": lambda n: bench_ours_sync(url, n),
        "agentrun-ci DataPlane, signed": lambda n: bench_ours_sync(url, n, signed=True),
        "httpx.AsyncClient loop (async floor)": lambda n: bench_floor_async(url, n),
        "agentrun-ci AsyncDataPlane": lambda n: bench_ours_async(url, n),
    }
    if sdk_python:
        sdk_n = min(args.n, args.sdk_n)
        clients["agentrun-sdk 0.0.54 (sync)"] = lambda n: bench_sdk(sdk_python, url, sdk_n, "sync")
        clients["agentrun-sdk 0.0.54 (async)"] = lambda n: bench_sdk(
            sdk_python, url, sdk_n, "async"
        )
    samples: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(args.rounds):
        for name, bench in clients.items():
            samples[name] += bench(args.n)
    floor = {
        "sync": statistics.median(samples["httpx.Client loop (floor)"]),
        "async": statistics.median(samples["httpx.AsyncClient loop (async floor)"]),
    }
    rows = []
    for name, values in samples.items():
        mean, p50, p95 = summarize(values)
        kind = "async" if "async" in name.lower() else "sync"
        rows.append((transport, name, len(values), mean, p50, p95, p50 / (floor[kind] * 1e3)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=500, help="calls per client per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (clients interleaved)")
    parser.add_argument("--agentrun-sdk-python", default=DEFAULT_SDK_PYTHON)
    parser.add_argument("--sdk-n", type=int, default=100, help="calls per round for the SDK")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    import trustme

    sdk_python = args.agentrun_sdk_python
    sdk_note = ""
    if not (sdk_python and Path(sdk_python).exists()):
        sdk_python = ""
        sdk_note = (
            f"agentrun-sdk skipped: no interpreter at {args.agentrun_sdk_python!r} "
            "(python -m venv /tmp/bench-agentrun-sdk-venv && "
            "/tmp/bench-agentrun-sdk-venv/bin/pip install agentrun-sdk)"
        )

    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as cert_dir:
        ca = trustme.CA()
        ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
            os.path.join(cert_dir, "server.pem")
        )
        ca_file = os.path.join(cert_dir, "ca.pem")
        ca.cert_pem.write_to_path(ca_file)
        os.environ["SSL_CERT_FILE"] = ca_file  # read by every httpx client, ours and theirs

        for transport, certs in (("HTTP", None), ("TLS", cert_dir)):
            stub = Stub(certs)
            try:
                rows += run_transport(transport, stub.url, args, sdk_python)
            finally:
                stub.close()

    lines = [
        "# Data plane: sequential execute calls against a loopback stub",
        "",
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"httpx {httpx.__version__}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.machine()}; {args.rounds} rounds × {args.n} calls per client "
        f"(SDK: {min(args.n, args.sdk_n)} per round), "
        "clients interleaved, 20 warm-up calls each. Ratio = p50 / p50 of the matching "
        "httpx floor (sync or async).",
        "",
        "| transport | client | calls | mean ms | p50 ms | p95 ms | × floor (p50) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for transport, name, count, mean, p50, p95, ratio in rows:
        lines.append(
            f"| {transport} | {name} | {count} | {mean:.3f} | {p50:.3f} | {p95:.3f} | {ratio:.2f} |"
        )
    if sdk_note:
        lines += ["", sdk_note]
    else:
        lines += [
            "",
            "agentrun-sdk opens a new httpx client (new TCP connection, and over TLS a new "
            "handshake and SSL context) per call; agentrun-ci keeps one pooled keep-alive client "
            "per plane. Here the SDK loads a one-certificate CA file; against the real service it "
            "loads the full certifi bundle per call, which costs more.",
        ]
    lines += [
        "",
        "The floors are unsigned; the 'signed' row adds the AGENTRUN4-HMAC-SHA256 auth flow "
        "(tens of µs per request) that every call to the cloud pays.",
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
