"""The chaos workload: mixed operations through the SDK while the emulator injects faults.

Shared by tests/test_chaos.py and benchmarks/reliability.py. Every operation must end in
a correct result or a typed AgentRunError; every execute and command appends a unique
token to a ledger file in its sandbox, so counting tokens afterwards proves that no
code ran twice (and shows which failed calls had run anyway: the dangerous
"reset after the body was read").
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import attrs

from agentrun_ci import (
    AgentRunError,
    AsyncCodeInterpreter,
    CodeInterpreter,
    Config,
    ControlPlane,
    DataPlane,
    NotFoundError,
)

LEDGER = "/home/user/ledger.txt"
"""Its API path. Code and commands run with the sandbox home as cwd and use `ledger.txt`:
the emulator maps /home/user to a private directory that code sees under its real path."""
OPS = ("execute", "write_file", "read_file", "command", "create_context", "delete_context", "list")
WEIGHTS = (40, 12, 12, 14, 8, 6, 8)


@attrs.define
class Stats:
    """What happened; the asserts and the reliability table read this."""

    ops: Counter[str] = attrs.field(factory=Counter)
    ok: Counter[str] = attrs.field(factory=Counter)
    errors: Counter[str] = attrs.field(factory=Counter)
    wrong: list[str] = attrs.field(factory=list)
    """Operations that 'succeeded' with a wrong result (must stay empty)."""
    untyped: list[str] = attrs.field(factory=list)
    """Exceptions that are not AgentRunError (must stay empty)."""
    tokens_ok: set[str] = attrs.field(factory=set)
    tokens_failed: set[str] = attrs.field(factory=set)
    tokens_unverifiable: set[str] = attrs.field(factory=set)
    """Sent to a sandbox that was lost afterwards: its ledger is gone."""
    ledger: Counter[str] = attrs.field(factory=Counter)
    leaked_contexts: int = 0
    leaked_sandboxes: int = 0
    sandboxes_lost: int = 0
    state_resets: int = 0

    @property
    def total(self) -> int:
        return sum(self.ops.values())

    @property
    def duplicates(self) -> int:
        """Tokens found more than once: code that ran twice."""
        return sum(n - 1 for n in self.ledger.values() if n > 1)

    @property
    def lost(self) -> int:
        """Calls reported successful whose side effect is missing."""
        return len({t for t in self.tokens_ok if self.ledger[t] == 0} - self.tokens_unverifiable)

    @property
    def phantom(self) -> int:
        """Tokens in a ledger that no call sent."""
        sent = self.tokens_ok | self.tokens_failed
        return sum(1 for t in self.ledger if t not in sent)

    @property
    def ran_despite_error(self) -> int:
        """Calls that raised but whose code did run once (the response was lost)."""
        return sum(1 for t in self.tokens_failed if self.ledger[t] == 1)

    def merge(self, other: Stats) -> None:
        for name in ("ops", "ok", "errors", "ledger"):
            getattr(self, name).update(getattr(other, name))
        for name in ("wrong", "untyped"):
            getattr(self, name).extend(getattr(other, name))
        for name in ("tokens_ok", "tokens_failed", "tokens_unverifiable"):
            getattr(self, name).update(getattr(other, name))
        for name in ("leaked_contexts", "leaked_sandboxes", "sandboxes_lost", "state_resets"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _token() -> str:
    return "tok" + uuid.uuid4().hex


def _append_code(token: str) -> str:
    return (
        f"with open('ledger.txt', 'a') as _f:\n    _f.write({token + chr(10)!r})\nprint({token!r})"
    )


def _command(token: str) -> str:
    return f"echo {token} >> ledger.txt && echo {token}"


def _record(stats: Stats, op: str, exc: BaseException) -> None:
    if isinstance(exc, AgentRunError):
        stats.errors[type(exc).__name__] += 1
    else:
        stats.untyped.append(f"{op}: {exc!r}")


def ensure_template(config: Config, name: str) -> None:
    with ControlPlane(config) as cp:
        cp.create_template(name)
        cp.wait_template_ready(name, timeout=30)


class DataPlaneWorkload:
    """`n` operations on one sandbox with a DataPlane; a lost sandbox is replaced."""

    def __init__(self, dp: DataPlane, template: str, rng: random.Random) -> None:
        self.dp = dp
        self.template = template
        self.rng = rng
        self.stats = Stats()
        self.sid = ""
        self.contexts: list[str] = []
        self.defaults: set[str] = set()
        self.files: dict[str, set[bytes | None]] = {}  # acceptable contents; None = absent
        self.sent: list[str] = []  # tokens sent to the current sandbox

    def _new_sandbox(self) -> None:
        for _ in range(10):  # creation is never faulted by default, but be tolerant
            try:
                self.sid = self.dp.create_sandbox(self.template).sandbox_id
                self.dp.wait_until_healthy(self.sid, timeout=30)
                break
            except AgentRunError as exc:
                _record(self.stats, "create_sandbox", exc)
        else:
            raise RuntimeError("could not create a sandbox in 10 tries")
        self.contexts, self.defaults, self.files, self.sent = [], set(), {}, []

    def _sandbox_lost(self) -> bool:
        try:
            self.dp.get_sandbox(self.sid)
            self.dp.health(self.sid)
        except NotFoundError:
            return True
        except AgentRunError:
            return False
        return False

    def run(self, n: int) -> Stats:
        self._new_sandbox()
        for _ in range(n):
            op = self.rng.choices(OPS, WEIGHTS)[0]
            self.stats.ops[op] += 1
            try:
                getattr(self, f"_op_{op}")()
                self.stats.ok[op] += 1
            except NotFoundError as exc:
                _record(self.stats, op, exc)
                if self._sandbox_lost():
                    self.stats.sandboxes_lost += 1
                    self.stats.tokens_unverifiable.update(self.sent)
                    self._new_sandbox()
            except Exception as exc:  # counted: the test asserts none are untyped
                _record(self.stats, op, exc)
        return self.stats

    def _pick_context(self) -> str | None:
        if self.contexts and self.rng.random() < 0.5:
            return self.rng.choice(self.contexts)
        return None

    def _op_execute(self) -> None:
        token = _token()
        self.sent.append(token)
        cid = self._pick_context()
        try:
            ex = self.dp.execute(self.sid, _append_code(token), context_id=cid, timeout=20)
        except NotFoundError:
            self.stats.tokens_failed.add(token)
            if cid in self.contexts:
                self.contexts.remove(cid)
            raise
        except BaseException:
            self.stats.tokens_failed.add(token)
            raise
        self.stats.tokens_ok.add(token)
        if ex.context_id and cid is None:
            self.defaults.add(ex.context_id)
        if ex.status != "ok" or ex.error is not None or ex.stdout != token + "\n":
            self.stats.wrong.append(f"execute {token}: {ex.status} {ex.stdout!r} {ex.error}")

    def _op_command(self) -> None:
        token = _token()
        self.sent.append(token)
        try:
            res = self.dp.run_command(self.sid, _command(token), cwd="/home/user", timeout=20)
        except BaseException:
            self.stats.tokens_failed.add(token)
            raise
        self.stats.tokens_ok.add(token)
        if res.exit_code != 0 or res.stdout.strip() != token:
            self.stats.wrong.append(f"command {token}: {res.exit_code} {res.stdout!r}")

    def _op_write_file(self) -> None:
        path = f"/home/user/data/f{self.rng.randrange(8)}.bin"
        content = self.rng.randbytes(self.rng.randrange(0, 2048))
        # A write that fails may have landed or not: both are acceptable until one succeeds.
        self.files.setdefault(path, {None}).add(content)
        entry = self.dp.write_file(self.sid, path, content)
        self.files[path] = {content}
        if entry.size not in (None, len(content)):
            self.stats.wrong.append(f"write {path}: size {entry.size} != {len(content)}")

    def _op_read_file(self) -> None:
        if not self.files:
            self._op_write_file()
            return
        path = self.rng.choice(sorted(self.files))
        try:
            got = self.dp.read_file(self.sid, path)
        except NotFoundError:
            if None in self.files[path]:  # only failed writes so far: absent is correct
                return
            self.stats.wrong.append(f"read {path}: 404 after a confirmed write")
            return
        if got.content not in self.files[path]:
            self.stats.wrong.append(f"read {path}: {len(got.content)} bytes, not what was written")

    def _op_create_context(self) -> None:
        if len(self.contexts) >= 4:
            self._op_delete_context()
            return
        ctx = self.dp.create_context(self.sid)
        if not ctx.id:
            self.stats.wrong.append("create_context: no id")
        self.contexts.append(ctx.id)

    def _op_delete_context(self) -> None:
        if not self.contexts:
            self._op_list()
            return
        cid = self.rng.choice(self.contexts)
        try:
            self.dp.delete_context(self.sid, cid)
        except NotFoundError:
            self.contexts.remove(cid)  # already gone (deleted by a lost answer): done
            return
        self.contexts.remove(cid)

    def _op_list(self) -> None:
        if self.rng.random() < 0.5:
            entries = self.dp.list_files(self.sid, "/home/user")
            confirmed = any(t in self.stats.tokens_ok for t in self.sent)
            if confirmed and not any(e.name == "ledger.txt" for e in entries):
                self.stats.wrong.append("list_files: ledger.txt missing")
        else:
            listed = {c.id for c in self.dp.list_contexts(self.sid)}
            missing = set(self.contexts) - listed
            if missing:
                self.stats.wrong.append(f"list_contexts: {len(missing)} known contexts missing")

    def finish(self) -> Stats:
        """With faults off: count ledger tokens and leaked contexts, then delete everything."""
        self.stats.ledger.update(read_ledger(self.dp, self.sid))
        listed = {c.id for c in self.dp.list_contexts(self.sid)}
        self.stats.leaked_contexts += len(listed - set(self.contexts) - self.defaults)
        self.dp.delete_sandbox(self.sid)
        return self.stats


def read_ledger(dp: DataPlane, sid: str) -> Counter[str]:
    try:
        text = dp.read_file(sid, LEDGER).content.decode()
    except NotFoundError:
        return Counter()
    return Counter(line for line in text.splitlines() if line)


# ------------------------------------------------------------------ the facade


def facade_sync_workload(
    config: Config, owner: str, n: int, rng: random.Random, quiet: Callable[[], None]
) -> Stats:
    """`n` operations through CodeInterpreter (singleton): execute, files, commands."""
    stats = Stats()
    sessions: dict[str, list[str]] = {}
    with CodeInterpreter(config, owner=owner) as ci:
        for _ in range(10):
            try:
                ci.start_session()
                break
            except AgentRunError as exc:
                _record(stats, "start_session", exc)
        for _ in range(n):
            op = rng.choice(("execute", "execute", "command", "write_read"))
            stats.ops[op] += 1
            token = _token()
            try:
                if op == "execute":
                    try:
                        ex = ci.execute_code(_append_code(token))
                    except BaseException:
                        stats.tokens_failed.add(token)
                        raise
                    finally:
                        sessions.setdefault(ci.session_id or "", []).append(token)
                    stats.tokens_ok.add(token)
                    stats.state_resets += ex.state_reset
                    if not ex.ok or ex.stdout != token + "\n":
                        stats.wrong.append(f"facade execute: {ex.status} {ex.stdout!r}")
                elif op == "command":
                    try:
                        res = ci.run_command(_command(token))
                    except BaseException:
                        stats.tokens_failed.add(token)
                        raise
                    finally:
                        sessions.setdefault(ci.session_id or "", []).append(token)
                    stats.tokens_ok.add(token)
                    if res.exit_code != 0 or res.stdout.strip() != token:
                        stats.wrong.append(f"facade command: {res.exit_code} {res.stdout!r}")
                else:
                    path = f"/home/user/facade/{token}.txt"
                    ci.write_file(path, token)
                    got = ci.read_file(path)
                    if got.content != token.encode():
                        stats.wrong.append(f"facade read: {got.content!r}")
                stats.ok[op] += 1
            except Exception as exc:  # counted and asserted
                _record(stats, op, exc)
        quiet()
        _collect(config, sessions, stats)
    return stats


async def facade_pool_workload(
    config: Config,
    owner: str,
    n: int,
    quiet: Callable[[], None],
    *,
    callers: int = 4,
) -> Stats:
    """`n` executes from `callers` concurrent leases on an AsyncCodeInterpreter pool."""
    stats = Stats()
    sessions: dict[str, list[str]] = {}
    async with AsyncCodeInterpreter(
        config, owner=owner, strategy="pool", pool_size=(1, callers), lease_timeout=120
    ) as ci:

        async def caller(i: int, count: int) -> None:
            for _ in range(20):
                try:
                    lease = await ci.acquire(f"chaos-{i}")
                    break
                except AgentRunError as exc:
                    _record(stats, "acquire", exc)
            else:
                return
            try:
                for _ in range(count):
                    stats.ops["execute"] += 1
                    token = _token()
                    try:
                        ex = await lease.execute_code(_append_code(token))
                    except Exception as exc:  # counted and asserted
                        stats.tokens_failed.add(token)
                        sessions.setdefault(lease.session_id or "", []).append(token)
                        _record(stats, "execute", exc)
                        continue
                    sessions.setdefault(lease.session_id or "", []).append(token)
                    stats.tokens_ok.add(token)
                    stats.ok["execute"] += 1
                    stats.state_resets += ex.state_reset
                    if not ex.ok or ex.stdout != token + "\n":
                        stats.wrong.append(f"pool execute: {ex.status} {ex.stdout!r}")
            finally:
                await lease.release()

        share = [n // callers + (1 if i < n % callers else 0) for i in range(callers)]
        await asyncio.gather(*(caller(i, c) for i, c in enumerate(share)))
        await asyncio.to_thread(quiet)
        await asyncio.to_thread(_collect, config, sessions, stats)
    return stats


def _collect(config: Config, sessions: dict[str, list[str]], stats: Stats) -> None:
    """Read each session's ledger (faults must be off); a session gone makes its tokens
    unverifiable."""
    with DataPlane(config) as dp:
        for sid, tokens in sessions.items():
            try:
                dp.get_sandbox(sid)
                stats.ledger.update(read_ledger(dp, sid))
            except AgentRunError:
                stats.tokens_unverifiable.update(tokens)


def set_faults(url: str, body: dict[str, Any], post: Callable[..., Any] | None = None) -> None:
    import httpx

    (post or httpx.post)(f"{url}/_admin/faults", json=body, timeout=10).raise_for_status()
