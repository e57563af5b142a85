"""The chaos workload: mixed operations through the SDK while the emulator injects faults.

Shared by tests/test_chaos.py and benchmarks/reliability.py. Every operation must end in
a correct result or a typed AgentRunError; every execute and command appends a unique
token to a ledger file in its sandbox, so counting tokens afterwards proves that no
code ran twice (and shows which failed calls had run anyway: the dangerous
"reset after the body was read").
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
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

if TYPE_CHECKING:
    from mcp.types import CallToolResult

    from agentrun_ci_mcp.server import AppState, ServerOptions

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


def check_stats(stats: Stats, *, allow_unverifiable: bool = False) -> None:
    """What every chaos run must show: nothing ran twice, nothing was lost or leaked."""
    assert stats.untyped == [], stats.untyped[:5]
    assert stats.wrong == [], stats.wrong[:5]
    assert stats.duplicates == 0, [t for t, n in stats.ledger.items() if n > 1][:5]
    assert stats.phantom == 0
    assert stats.lost == 0
    assert stats.leaked_sandboxes == 0
    if not allow_unverifiable:
        assert not stats.tokens_unverifiable
    # a failed call's code ran at most once (its answer was lost): never more
    assert all(stats.ledger[t] <= 1 for t in stats.tokens_failed)


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


# ------------------------------------------------------------------ the MCP server
#
# The same ledger through the MCP tools: several MCP clients, each with its own state on
# one server, call run_code, run_command, write_file, read_file, list_files and
# reset_context. A call must end in a correct result or an error result whose text says
# what failed (an HTTP status, a transport failure, a lost session). Anything else -- a
# protocol error, an exception in the client, a hang, or a bare "Error executing tool X"
# (an exception the server did not expect, whose message the SDK withholds) -- goes to
# `Stats.untyped`. State is checked too: every run_code prints the mark the previous
# one left in the context, so a context lost without `state_reset: true` is caught.

MCP_OPS = ("run_code", "run_command", "write_file", "read_file", "list_files", "reset_context")
MCP_WEIGHTS = (40, 15, 14, 14, 9, 8)
MCP_CALL_LIMIT = 120.0
"""Seconds before a tool call counts as hung (one run is capped at 30 s)."""
HOME = "/home/user"
USER_ERROR = "user-code error"
NOT_FOUND = "404 not found"

ToolCall = Callable[[str, "dict[str, Any]"], Awaitable["CallToolResult"]]
_STATUS = re.compile(r"\[(\d{3})(?: ([A-Z_]+))?\]")


def classify_tool_error(text: str) -> str | None:
    """What an error result says went wrong, as a short kind; None if it does not say."""
    if re.fullmatch(r"Error executing tool \w+", text.strip()):
        return None  # the server hit an exception it did not expect; the SDK hid it
    found = _STATUS.search(text)
    if found:
        status, code = found.group(1), found.group(2)
        if status == "404":
            return NOT_FOUND
        if status == "429":
            return "429 rate limited"
        return f"{status} {code}" if code == "ERR_CONTEXT_LOST" else f"{status} server error"
    lower = text.lower()
    if "failed in transit" in lower or "could not connect" in lower:
        return "transport failure (not re-sent)"
    if "timed out" in lower or "timeout" in lower:
        return "timeout"
    if "session" in lower and ("lost" in lower or "gone" in lower):
        return "session lost"
    return None


def _text(result: CallToolResult) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


class MCPClientWorkload:
    """One MCP client's operations, one at a time, each checked when it comes back.

    `locate(handle)` (in-process servers only) names the sandbox behind the client's
    lease, so that tokens sent to a sandbox that was replaced count as unverifiable;
    `pass_handle` sends the `session` handle back, as clients without an MCP session
    id must.
    """

    def __init__(
        self,
        call: ToolCall,
        index: int,
        rng: random.Random,
        *,
        locate: Callable[[str], str | None] | None = None,
        pass_handle: bool = False,
    ) -> None:
        self.call = call
        self.index = index
        self.rng = rng
        self.locate = locate
        self.pass_handle = pass_handle
        self.stats = Stats()
        self.handle: str | None = None
        self.ledger = f"ledger-{index}.txt"
        self.marks: set[str | None] = {None}
        """Values `_mark` may have in the client's context now (several after a failure)."""
        self.files: dict[str, set[str | None]] = {}
        self.where: dict[str, str | None] = {}
        """token -> the sandbox it was sent to (when `locate` can tell)."""
        self.session: str | None = None
        self.confirmed = False
        """A token is known to be in the current sandbox's ledger."""

    async def run(self, n: int) -> Stats:
        for _ in range(n):
            op = self.rng.choices(MCP_OPS, MCP_WEIGHTS)[0]
            self.stats.ops[op] += 1
            if await getattr(self, f"_op_{op}")():
                self.stats.ok[op] += 1
        return self.stats

    async def _tool(
        self, name: str, args: dict[str, Any]
    ) -> tuple[CallToolResult | None, str | None]:
        """(result, None) on success, (result, kind) on an error result, (None, "") when
        the call itself failed (counted as untyped)."""
        if self.pass_handle and self.handle is not None:
            args = {**args, "session": self.handle}
        try:
            with anyio.fail_after(MCP_CALL_LIMIT):
                result = await self.call(name, args)
        except TimeoutError:
            self.stats.untyped.append(f"{name}: no answer within {MCP_CALL_LIMIT:g} s")
            return None, ""
        except Exception as exc:  # counted: the tests assert there are none
            self.stats.untyped.append(f"{name}: {exc!r}")
            return None, ""
        structured = result.structured_content or {}
        handle = structured.get("session")
        if isinstance(handle, str):
            self.handle = handle
        self._follow_session()
        if not result.is_error:
            return result, None
        if structured.get("error") is not None:
            self.stats.errors[USER_ERROR] += 1
            return result, USER_ERROR
        text = _text(result)
        kind = classify_tool_error(text)
        if kind is None:
            self.stats.untyped.append(f"{name}: unclear error result {text[:300]!r}")
            return result, ""
        self.stats.errors[kind] += 1
        return result, kind

    def _follow_session(self) -> None:
        if self.locate is None or self.handle is None:
            return
        sid = self.locate(self.handle)
        if sid is None or sid == self.session:
            return
        if self.session is not None:  # replaced: files and ledger went with the old one
            self.stats.sandboxes_lost += 1
            for acceptable in self.files.values():
                acceptable.add(None)
            self.confirmed = False
        self.session = sid

    async def _op_run_code(self) -> bool:
        token = _token()
        code = (
            "_prev = globals().get('_mark')\n"
            f"_mark = {token!r}\n"
            f"with open({self.ledger!r}, 'a') as _f:\n"
            f"    _f.write({token + chr(10)!r})\n"
            f"print({token!r}, _prev)"
        )
        result, kind = await self._tool("run_code", {"code": code})
        self.where[token] = self.session
        if result is None or kind is not None:
            self.stats.tokens_failed.add(token)
            self.marks.add(token)  # it may have run before its answer was lost
            if kind == USER_ERROR:
                self.stats.wrong.append(f"run_code {token}: {result and _text(result)[:300]!r}")
            return False
        self.stats.tokens_ok.add(token)
        self.confirmed = True
        out = result.structured_content or {}
        reset = out.get("state_reset") is True
        self.stats.state_resets += reset
        got, _, prev = str(out.get("stdout")).rstrip("\n").partition(" ")
        previous = None if prev == "None" else prev
        allowed = {None} if reset else self.marks
        self.marks = {token}
        if got != token:
            self.stats.wrong.append(f"run_code {token}: stdout {out.get('stdout')!r}")
            return False
        if previous not in allowed:
            what = "state lost without state_reset" if previous is None else "stale state"
            self.stats.wrong.append(f"run_code {token}: {what} (saw {previous}, reset={reset})")
            return False
        return True

    async def _op_run_command(self) -> bool:
        token = _token()
        command = f"echo {token} >> {self.ledger} && echo {token}"
        result, kind = await self._tool("run_command", {"command": command, "cwd": HOME})
        self.where[token] = self.session
        if result is None or kind is not None:
            self.stats.tokens_failed.add(token)
            return False
        self.stats.tokens_ok.add(token)
        self.confirmed = True
        out = result.structured_content or {}
        if out.get("exit_code") != 0 or str(out.get("stdout")).strip() != token:
            self.stats.wrong.append(f"run_command {token}: {out!r:.300}")
            return False
        return True

    def _path(self) -> str:
        return f"{HOME}/c{self.index}/f{self.rng.randrange(6)}.txt"

    async def _op_write_file(self) -> bool:
        path = self._path()
        content = uuid.uuid4().hex * self.rng.randrange(1, 40)
        # A write that fails may have landed or not: both are fine until one succeeds.
        self.files.setdefault(path, {None}).add(content)
        result, kind = await self._tool("write_file", {"path": path, "content": content})
        if result is None or kind is not None:
            return False
        self.files[path] = {content}
        size = (result.structured_content or {}).get("size")
        if size not in (None, len(content)):
            self.stats.wrong.append(f"write_file {path}: size {size} != {len(content)}")
            return False
        return True

    async def _op_read_file(self) -> bool:
        if not self.files:
            return await self._op_write_file()
        path = self.rng.choice(sorted(self.files))
        result, kind = await self._tool("read_file", {"path": path})
        if kind == NOT_FOUND:
            if None in self.files[path]:  # only failed writes so far: absent is correct
                self.stats.errors.subtract([NOT_FOUND])  # a correct answer, not a failure
                return True
            self.stats.wrong.append(f"read_file {path}: 404 after a confirmed write")
            return False
        if result is None or kind is not None:
            return False
        out = result.structured_content or {}
        if out.get("content") not in self.files[path] or out.get("truncated"):
            self.stats.wrong.append(f"read_file {path}: not what was written")
            return False
        return True

    async def _op_list_files(self) -> bool:
        result, kind = await self._tool("list_files", {"path": HOME})
        if result is None or kind is not None:
            return False
        names = {e.get("name") for e in (result.structured_content or {}).get("entries", [])}
        if self.confirmed and self.ledger not in names:
            self.stats.wrong.append(f"list_files: {self.ledger} missing")
            return False
        return True

    async def _op_reset_context(self) -> bool:
        result, kind = await self._tool("reset_context", {})
        if result is None or kind is not None:
            self.marks.add(None)  # it may have happened
            return False
        self.marks = {None}
        return True

    async def finish(self, *, read_ledger: bool = True) -> Stats:
        """With faults off: the server still answers; its ledger is read through it
        (`read_ledger=False`: the caller reads every sandbox's ledgers directly)."""
        alive, kind = await self._tool("run_code", {"code": "print('still serving')"})
        if alive is None or kind is not None:
            self.stats.wrong.append("after the chaos, run_code did not answer normally")
        elif (alive.structured_content or {}).get("stdout") != "still serving\n":
            self.stats.wrong.append(f"after the chaos: {alive.structured_content!r:.300}")
        if not read_ledger:
            return self.stats
        result, kind = await self._tool("read_file", {"path": f"{HOME}/{self.ledger}"})
        if result is not None and kind is None:
            out = result.structured_content or {}
            if out.get("truncated"):
                self.stats.wrong.append("the ledger came back truncated")
            self.stats.ledger.update(t for t in str(out.get("content")).splitlines() if t)
        elif kind != NOT_FOUND:  # 404: nothing ever ran
            self.stats.wrong.append("after the chaos, the ledger could not be read")
        return self.stats


def mcp_options(config: Config, owner: str, **kw: Any) -> ServerOptions:
    """Server options for chaos: the emulator as a cloud, a unique owner, whole ledgers."""
    from agentrun_ci_mcp.server import ServerOptions

    return ServerOptions(
        config=config, backend="cloud", owner=owner, max_output_chars=1_000_000, **kw
    )


def mcp_locator(state: AppState) -> Callable[[str], str | None]:
    """handle -> the sandbox behind that client's lease (None before it has one)."""

    def locate(handle: str) -> str | None:
        key = state.handles.get(handle)
        client = state.clients.get(key) if key is not None else None
        lease = client.lease if client is not None else None
        return lease.session_id if lease is not None else None

    return locate


@contextlib.asynccontextmanager
async def serve_mcp_http(options: ServerOptions) -> AsyncIterator[tuple[str, AppState]]:
    """The MCP server over streamable HTTP on a free loopback port, in this process."""
    import uvicorn

    from agentrun_ci_mcp.server import build_server

    mcp, state = build_server(options)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            mcp.streamable_http_app(), log_level="warning", lifespan="on", workers=1
        )
        server = uvicorn.Server(config)
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            with anyio.fail_after(30):
                while not server.started:  # noqa: ASYNC110 -- uvicorn has no started event
                    await anyio.sleep(0.01)
            try:
                yield f"http://127.0.0.1:{port}/mcp", state
            finally:
                server.should_exit = True


@contextlib.asynccontextmanager
async def mcp_http_client(url: str, *, legacy: bool) -> AsyncIterator[ToolCall]:
    """An official MCP client over streamable HTTP: `legacy` = the 2025-11-25 handshake
    (the server keys its state on mcp-session-id), else 2026-07-28 (session handles)."""
    import httpx2
    from mcp import Client, ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(
            httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, read=300.0))
        )
        transport = streamable_http_client(url, http_client=http)
        if not legacy:
            client = await stack.enter_async_context(Client(transport))
            yield client.call_tool
            return
        read, write, *_ = await stack.enter_async_context(transport)
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        yield checked_calls(session)


def checked_calls(session: Any) -> ToolCall:
    """`session.call_tool` that takes anything but a CallToolResult for a protocol error."""
    from mcp.types import CallToolResult

    async def call(name: str, args: dict[str, Any]) -> CallToolResult:
        result = await session.call_tool(name, args)
        if not isinstance(result, CallToolResult):
            raise TypeError(f"tools/call answered {type(result).__name__}")
        return result

    return call


def mcp_leftovers(config: Config, owner: str) -> list[str]:
    """Sandboxes and templates with this owner's prefix that still exist."""
    from support import owned

    return owned(config, owner)


def _survey(config: Config, owner: str, known: set[str]) -> tuple[Counter[str], set[str], int]:
    """Every ledger in this owner's sandboxes (tokens are unique, so they add up), the
    sandboxes that exist, and their contexts that no lease knows (made by a lost answer)."""
    prefix = f"arci-{owner}-"
    ledger: Counter[str] = Counter()
    live: set[str] = set()
    unknown = 0
    with ControlPlane(config) as control, DataPlane(config) as dp:
        for sandbox in control.list_sandboxes():
            sid = sandbox.sandbox_id
            if not sid.startswith(prefix):
                continue
            with contextlib.suppress(NotFoundError):
                unknown += len({c.id for c in dp.list_contexts(sid)} - known)
                for entry in dp.list_files(sid, HOME):
                    if entry.name.startswith("ledger-"):
                        text = dp.read_file(sid, f"{HOME}/{entry.name}").content.decode()
                        ledger.update(t for t in text.splitlines() if t)
                live.add(sid)
    return ledger, live, unknown


async def mcp_http_workload(
    config: Config,
    owner: str,
    n: int,
    seed: int,
    quiet: Callable[[], Any],
    *,
    strategy: str = "singleton",
    clients: int = 4,
) -> Stats:
    """`n` tool calls from `clients` concurrent MCP clients (half legacy, half handle-based)
    on one in-process server; then, with faults off (`quiet`), ledgers, contexts no lease
    knows, and what is left once the server has closed."""
    options = mcp_options(config, owner, strategy=strategy, pool_size=(1, clients))
    stats = Stats()
    async with serve_mcp_http(options) as (url, state):
        locate = mcp_locator(state)
        async with contextlib.AsyncExitStack() as stack:
            works = []
            for i in range(clients):
                call = await stack.enter_async_context(mcp_http_client(url, legacy=i % 2 == 0))
                rng = random.Random(seed * 1000 + i)
                works.append(MCPClientWorkload(call, i, rng, locate=locate, pass_handle=i % 2 == 1))
            share = [n // clients + (1 if i < n % clients else 0) for i in range(clients)]
            async with anyio.create_task_group() as tg:
                for work, count in zip(works, share, strict=True):
                    tg.start_soon(work.run, count)
            await anyio.to_thread.run_sync(quiet)
            for work in works:
                stats.merge(await work.finish(read_ledger=False))
            known = {
                c.lease.context_id
                for c in state.clients.values()
                if c.lease is not None and c.lease.context_id is not None
            }
            ledger, live, unknown = await anyio.to_thread.run_sync(_survey, config, owner, known)
            stats.ledger.update(ledger)
            stats.leaked_contexts += unknown
            # A token is unverifiable if the sandbox it was sent to is gone; one sent before
            # its client knew its sandbox (a first call that failed) is counted if found.
            for work in works:
                stats.tokens_unverifiable.update(
                    t for t, sid in work.where.items() if sid is not None and sid not in live
                )
    stats.leaked_sandboxes += len(await anyio.to_thread.run_sync(mcp_leftovers, config, owner))
    return stats


def mcp_stdio_env(config: Config, owner: str) -> dict[str, str]:
    """The environment of an `agentrun-ci-mcp` process using the emulator as its cloud."""
    from support import cloud_env

    return cloud_env(config, owner, AGENTRUN_MCP_MAX_OUTPUT_CHARS="1000000")


async def mcp_stdio_workload(
    command: str, env: dict[str, str], n: int, seed: int, quiet: Callable[[], Any]
) -> Stats:
    """`n` tool calls through the `agentrun-ci-mcp` console script over stdio."""
    from mcp import ClientSession, StdioServerParameters, stdio_client

    params = StdioServerParameters(command=command, args=[], env=env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        work = MCPClientWorkload(checked_calls(session), 0, random.Random(seed))
        await work.run(n)
        await anyio.to_thread.run_sync(quiet)
        return await work.finish()
