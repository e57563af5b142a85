"""Uploads and downloads through the DataPlane against the emulator, with their floors.

For each size (5 MB and 50 MB by default), in interleaved rounds:

* upload floor: a bare `httpx.Client.put` of the file as the raw body to a loopback sink
  that writes it to a file (what moving the bytes over loopback HTTP into a file costs);
* server-stack floor: the same PUT to a bare Starlette app under uvicorn, the emulator's
  own HTTP stack (h11), streaming the body to a file: what that stack costs before any
  multipart form is read (the emulator's HTTP layer is Python, as the sink's is not);
* the same upload with httpx's own multipart (`files=`) to the emulator's
  `/filesystem/upload`, the usual hand-written way;
* `DataPlane.upload` from a path and from an open file;
* the async floor (`httpx.AsyncClient.put` of the raw body to the sink), and
  `AsyncDataPlane.upload` from a path;
* download floor: a bare `httpx.Client.stream` GET of `/filesystem/download` written to a
  file, `DataPlane.download`; the same GET with `httpx.AsyncClient`, `AsyncDataPlane.download`.

The emulator and the sink each run in a process of their own, so the client's CPU time
(user + system of this process, per call) is the client's alone. Ratios are medians over the
floor's median in the same run.

    python benchmarks/upload.py [--sizes 5,50] [--rounds 9]

Prints a markdown table and writes it to benchmarks/results/upload.md.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import resource
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from agentrun_ci import AsyncDataPlane, Config, DataPlane

RESULTS = Path(__file__).resolve().parent / "results" / "upload.md"
MB = 1000 * 1000


# ------------------------------------------------------------------ servers


def _sink_connection(conn: socket.socket, target: str) -> None:
    """Read requests with a Content-Length body, write the body to `target`, answer `{}`."""
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = b""
    try:
        while True:
            while b"\r\n\r\n" not in buffer:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    return
                buffer += chunk
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            with open(target, "wb") as out:
                out.write(buffer[:length])
                left = length - len(buffer)
                buffer = buffer[length:] if left <= 0 else b""
                while left > 0:
                    chunk = conn.recv(min(left, 1 << 20))
                    if not chunk:
                        return
                    out.write(chunk)
                    left -= len(chunk)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
            )
    except OSError:
        return
    finally:
        conn.close()


def _sink_main(port_queue: Any, target: str) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port_queue.put(listener.getsockname()[1])
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_sink_connection, args=(conn, target), daemon=True).start()


def _stack_sink_main(port_queue: Any, target: str) -> None:
    """A bare Starlette app under uvicorn, served as the emulator's is (`server_config`,
    `listening_socket`): PUT /upload streams the body to `target`."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from agentrun_ci.local._server import listening_socket, server_config

    async def upload(request: Request) -> JSONResponse:
        with open(target, "wb") as out:
            async for chunk in request.stream():
                out.write(chunk)
        return JSONResponse({})

    listener = listening_socket("127.0.0.1", 0)
    port_queue.put(listener.getsockname()[1])
    app = Starlette(routes=[Route("/upload", upload, methods=["PUT"])])
    config = server_config(app)
    asyncio.run(uvicorn.Server(config).serve(sockets=[listener]))


def _emulator_main(url_queue: Any, stop: Any) -> None:
    from agentrun_ci.local import EmulatorSettings, LocalEmulator

    with LocalEmulator(EmulatorSettings(spare_kernels=0)) as config:
        url_queue.put(str(config.data_endpoint))
        stop.wait()


class Servers:
    """The emulator and the sink, each in a process of its own."""

    def __init__(self, sink_file: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        queue, self._stop = ctx.Queue(), ctx.Event()
        self._emulator = ctx.Process(target=_emulator_main, args=(queue, self._stop))
        self._emulator.start()
        self.emulator_url: str = queue.get(timeout=120)
        sink_queue = ctx.Queue()
        self._sink = ctx.Process(target=_sink_main, args=(sink_queue, sink_file), daemon=True)
        self._sink.start()
        self.sink_url = f"http://127.0.0.1:{sink_queue.get(timeout=60)}"
        stack_queue = ctx.Queue()
        self._stack = ctx.Process(
            target=_stack_sink_main, args=(stack_queue, sink_file), daemon=True
        )
        self._stack.start()
        self.stack_url = f"http://127.0.0.1:{stack_queue.get(timeout=60)}"

    def close(self) -> None:
        self._stop.set()
        self._emulator.join(60)
        for sink in (self._sink, self._stack):
            sink.terminate()
            sink.join(10)


# ------------------------------------------------------------------ measuring


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


Sample = tuple[float, float]  # wall seconds, client CPU seconds


def measure(call: Callable[[], Any]) -> Sample:
    cpu, started = _cpu(), time.perf_counter()
    call()
    return time.perf_counter() - started, _cpu() - cpu


class Clients:
    """Every way of moving one file, each a no-argument call; one async loop for the async
    plane, kept across calls (its pooled connection too)."""

    def __init__(self, servers: Servers, size_mb: int, tmp: Path) -> None:
        url = servers.emulator_url
        self.loop = asyncio.new_event_loop()
        self.http = httpx.Client(base_url=url, timeout=300)
        self.sink = httpx.Client(base_url=servers.sink_url, timeout=300)
        self.async_http = httpx.AsyncClient(base_url=url, timeout=300)
        self.async_sink = httpx.AsyncClient(base_url=servers.sink_url, timeout=300)
        self.stack = httpx.Client(base_url=servers.stack_url, timeout=300)
        self.async_stack = httpx.AsyncClient(base_url=servers.stack_url, timeout=300)
        config = Config(data_endpoint=url, read_timeout=300)
        self.dp = DataPlane(config)
        self.adp = AsyncDataPlane(config)
        self.http.post("/2025-09-10/templates", json={"templateName": "upload-bench"})
        self.sid = self.dp.create_sandbox("upload-bench").sandbox_id
        self.source = tmp / f"source-{size_mb}.bin"
        with self.source.open("wb") as out:
            for _ in range(size_mb):
                out.write(os.urandom(MB))
        self.remote = f"/home/user/bench-{size_mb}.bin"
        self.dp.upload(self.sid, self.source, self.remote)
        self.down = tmp / f"down-{size_mb}.bin"

    def close(self) -> None:
        self.dp.delete_sandbox(self.sid)
        self.dp.close()
        self.loop.run_until_complete(self.adp.close())
        self.loop.run_until_complete(self.async_http.aclose())
        self.loop.run_until_complete(self.async_sink.aclose())
        self.loop.run_until_complete(self.async_stack.aclose())
        self.loop.close()
        self.http.close()
        self.sink.close()
        self.stack.close()

    # uploads

    def put_raw_to_sink(self) -> None:
        with self.source.open("rb") as handle:
            self.sink.put("/upload", content=handle).raise_for_status()

    def put_raw_to_stack(self) -> None:
        with self.source.open("rb") as handle:
            self.stack.put("/upload", content=handle).raise_for_status()

    def put_raw_to_stack_async(self) -> None:
        self.put_raw_to_sink_async(self.async_stack)

    def put_raw_to_sink_async(self, client: httpx.AsyncClient | None = None) -> None:
        target = client or self.async_sink

        async def put() -> None:
            with self.source.open("rb") as handle:

                async def chunks() -> Any:
                    while chunk := handle.read(1 << 16):
                        yield chunk

                response = await target.put(
                    "/upload",
                    content=chunks(),
                    headers={"Content-Length": str(self.source.stat().st_size)},
                )
                response.raise_for_status()

        self.loop.run_until_complete(put())

    def httpx_multipart(self) -> None:
        with self.source.open("rb") as handle:
            self.http.post(
                f"/sandboxes/{self.sid}/filesystem/upload",
                files={"file": (self.source.name, handle)},
                data={"path": self.remote},
            ).raise_for_status()

    def upload_path(self) -> None:
        self.dp.upload(self.sid, self.source, self.remote)

    def upload_file(self) -> None:
        with self.source.open("rb") as handle:
            self.dp.upload(self.sid, handle, self.remote)

    def upload_async(self) -> None:
        self.loop.run_until_complete(self.adp.upload(self.sid, self.source, self.remote))

    # downloads

    def get_raw(self) -> None:
        with (
            self.http.stream(
                "GET", f"/sandboxes/{self.sid}/filesystem/download", params={"path": self.remote}
            ) as response,
            self.down.open("wb") as out,
        ):
            response.raise_for_status()
            for chunk in response.iter_raw(1 << 20):
                out.write(chunk)

    def get_raw_async(self) -> None:
        async def get() -> None:
            path = f"/sandboxes/{self.sid}/filesystem/download"
            async with self.async_http.stream("GET", path, params={"path": self.remote}) as r:
                r.raise_for_status()
                with self.down.open("wb") as out:
                    async for chunk in r.aiter_raw():
                        out.write(chunk)

        self.loop.run_until_complete(get())

    def download(self) -> None:
        self.dp.download(self.sid, self.remote, self.down)

    def download_async(self) -> None:
        self.loop.run_until_complete(self.adp.download(self.sid, self.remote, self.down))


UPLOADS = [
    ("httpx PUT raw body → sink (floor)", "put_raw_to_sink"),
    ("httpx PUT raw body → uvicorn + Starlette (server-stack floor)", "put_raw_to_stack"),
    ("httpx POST, its own multipart (files=) → emulator", "httpx_multipart"),
    ("DataPlane.upload(path)", "upload_path"),
    ("DataPlane.upload(open file)", "upload_file"),
    ("httpx.AsyncClient PUT raw body → sink (async floor)", "put_raw_to_sink_async"),
    (
        "httpx.AsyncClient PUT raw body → uvicorn + Starlette (async server-stack floor)",
        "put_raw_to_stack_async",
    ),
    ("AsyncDataPlane.upload(path)", "upload_async"),
]
DOWNLOADS = [
    ("httpx GET streamed to a file (floor)", "get_raw"),
    ("DataPlane.download", "download"),
    ("httpx.AsyncClient GET streamed to a file (async floor)", "get_raw_async"),
    ("AsyncDataPlane.download", "download_async"),
]


def run_size(servers: Servers, size_mb: int, rounds: int, tmp: Path) -> list[str]:
    clients = Clients(servers, size_mb, tmp)
    samples: dict[str, list[Sample]] = {method: [] for _, method in UPLOADS + DOWNLOADS}
    try:
        for method in list(samples):  # one warm-up call each
            try:
                getattr(clients, method)()
            except TypeError:  # an older agentrun-ci, whose upload takes a path only
                del samples[method]
        for _ in range(rounds):
            for method in samples:
                samples[method].append(measure(getattr(clients, method)))
    finally:
        clients.close()
    lines = []
    for rows in (UPLOADS, DOWNLOADS):
        floor_wall = statistics.median(w for w, _ in samples[rows[0][1]])
        stack_wall: float | None = None
        for label, method in rows:
            # sync rows against the sync floors, async against the async ones
            if "server-stack floor" in label:
                stack_wall = statistics.median(w for w, _ in samples[method])
            elif "floor" in label:
                floor_wall = statistics.median(w for w, _ in samples[method])
                stack_wall = None
            if method not in samples:
                lines.append(f"| {size_mb} MB | {label} | 0 | n/a | n/a | n/a | n/a | n/a | n/a |")
                continue
            walls = [w for w, _ in samples[method]]
            cpus = [c for _, c in samples[method]]
            wall = statistics.median(walls)
            mb_s = size_mb / wall
            stack = f"{wall / stack_wall:.2f}" if stack_wall is not None else "n/a"
            lines.append(
                f"| {size_mb} MB | {label} | {len(walls)} | {wall * 1e3:.0f} | "
                f"{max(walls) * 1e3:.0f} | {statistics.median(cpus) * 1e3:.0f} | {mb_s:.0f} | "
                f"{wall / floor_wall:.2f} | {stack} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="5,50", help="file sizes in MB, comma-separated")
    parser.add_argument("--rounds", type=int, default=9, help="rounds (clients interleaved)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]

    load_before = os.getloadavg()[0]
    rows: list[str] = []
    # The sink writes where the emulator does as root (a tmpfs per sandbox): to memory.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory(dir=shm) as sunk:
        servers = Servers(os.path.join(sunk, "sink.bin"))
        try:
            for size in sizes:
                rows += run_size(servers, size, args.rounds, Path(tmp))
        finally:
            servers.close()
    load_after = os.getloadavg()[0]

    lines = [
        "# Uploads and downloads: DataPlane against the emulator, with floors",
        "",
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"httpx {httpx.__version__}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.machine()}, load average {load_before:.1f} at the start and "
        f"{load_after:.1f} at the end; {args.rounds} rounds per row, rows interleaved, one "
        "warm-up call each. The emulator and the sink run in processes of their own; "
        "client CPU is this process's user + system time per call. × floor = median / "
        "median of the nearest floor above it, sync or async (uploads: a raw PUT to a sink "
        "that writes the body to a file in /dev/shm, memory as a sandbox's disk is; "
        "downloads: a bare streamed GET of the same file from the emulator). × stack = "
        "median / median of the server-stack floor above it: the same raw PUT to a bare "
        "Starlette app under uvicorn, the emulator's HTTP stack, streaming the body to the "
        "same file.",
        "",
        "| size | client | n | p50 ms | max ms | client CPU ms (p50) | MB/s | × floor (p50) "
        "| × stack (p50) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "AgentRun's upload is a multipart form, so every real upload pays the form's parsing "
        "on the server (in Python, as is the emulator's HTTP parsing); the raw PUT floor "
        "pays neither, the server-stack floor the HTTP parsing only.",
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
