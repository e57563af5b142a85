"""The python kernel's inbox (`_Inbox`): how the emulator reads a kernel's messages and
sends it requests, on a pair of zmq sockets standing in for the kernel's channel."""

from __future__ import annotations

import asyncio
import os
import queue
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

pytest.importorskip("jupyter_client")

import zmq
import zmq.asyncio
from jupyter_client.session import Session

from agentrun_ci.local._python_kernel import _Inbox

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Pair:
    def __init__(self) -> None:
        self.context = zmq.asyncio.Context()
        address = f"inproc://inbox-{uuid.uuid4().hex}"
        self.ours = self.context.socket(zmq.PAIR)
        self.ours.bind(address)
        self.kernel = self.context.socket(zmq.PAIR)
        self.kernel.connect(address)
        self.session = Session(key=b"secret")
        self.inbox = _Inbox(self.ours, self.session, metadata=True)

    def say(self, msg_type: str, content: dict[str, Any], *, key: bytes = b"secret") -> None:
        """The kernel sends a message (signed with `key`)."""
        sender = Session(key=key, session=self.session.session)
        sender.send(zmq.Socket.shadow(self.kernel.underlying), msg_type, content, metadata={"m": 1})

    def close(self) -> None:
        self.inbox.close()
        self.ours.close(0)
        self.kernel.close(0)
        self.context.term()


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    made = Pair()
    try:
        yield made
    finally:
        made.close()


async def test_a_queued_message_is_taken_without_waiting(pair: Pair) -> None:
    pair.say("stream", {"name": "stdout", "text": "hi"})
    await _until_queued(pair)
    message = await pair.inbox.get(0)  # no time at all to wait: it was there
    assert message["msg_type"] == "stream"
    assert message["content"] == {"name": "stdout", "text": "hi"}
    assert message["metadata"] == {"m": 1}


async def test_a_wait_ends_when_the_message_comes(pair: Pair) -> None:
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, pair.say, "status", {"execution_state": "idle"})
    message = await pair.inbox.get(30)
    assert message["content"] == {"execution_state": "idle"}
    # and again: the descriptor is watched for as long as the inbox lives
    loop.call_later(0.05, pair.say, "status", {"execution_state": "busy"})
    assert (await pair.inbox.get(30))["content"] == {"execution_state": "busy"}


async def test_a_wait_without_a_message_ends_after_its_timeout(pair: Pair) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(queue.Empty):
        await pair.inbox.get(0.2)
    assert loop.time() - started >= 0.2


async def test_closing_wakes_a_waiting_run_and_closes_the_descriptor_copy(pair: Pair) -> None:
    waiting = asyncio.ensure_future(pair.inbox.get(60))
    await _until(lambda: pair.inbox._waiter is not None)
    copy = pair.inbox._fd
    socket_fd = pair.ours.get(zmq.FD)
    assert isinstance(socket_fd, int)
    assert copy not in (-1, socket_fd)
    assert _identity(copy) == _identity(socket_fd)  # a copy of the socket's descriptor
    pair.inbox.close()
    with pytest.raises(queue.Empty):
        await asyncio.wait_for(waiting, 30)
    assert pair.inbox._fd == -1
    assert _identity(copy) != _identity(socket_fd)  # closed (or the number reused)
    pair.say("status", {"execution_state": "idle"})
    with pytest.raises(queue.Empty):  # a closed inbox reads nothing more
        await pair.inbox.get(0.05)


def _identity(fd: int) -> tuple[int, int] | None:
    try:
        info = os.fstat(fd)
    except OSError:
        return None
    return info.st_dev, info.st_ino


async def test_a_message_with_a_bad_signature_is_refused(pair: Pair) -> None:
    pair.say("stream", {"name": "stdout", "text": "forged"}, key=b"other")
    await _until_queued(pair)
    with pytest.raises(ValueError, match="invalid signature"):
        await pair.inbox.get(0)


async def test_a_request_sent_is_what_jupyter_reads(pair: Pair) -> None:
    content = {"code": "1", "silent": False, "store_history": True}
    msg_id = pair.inbox.send("execute_request", content)
    kernel = Session(key=b"secret")
    received = await pair.kernel.recv_multipart()
    _, parts = kernel.feed_identities(received)
    message = kernel.deserialize(parts)  # checks the signature too
    assert message["header"]["msg_id"] == msg_id
    assert message["header"]["msg_type"] == "execute_request"
    assert message["header"]["session"] == pair.session.session
    assert message["header"]["date"].tzinfo is not None
    assert message["content"] == content
    assert message["parent_header"] == {}
    assert message["metadata"] == {}
    assert pair.inbox.send("execute_request", content) != msg_id


async def _until_queued(pair: Pair) -> None:
    await _until(lambda: bool(int(pair.ours.get(zmq.EVENTS)) & zmq.POLLIN))


async def _until(condition: Any) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not condition():
        assert loop.time() < deadline, "the condition never held"
        await asyncio.sleep(0.001)
