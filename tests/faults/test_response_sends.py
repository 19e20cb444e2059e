"""A response leaves in one send (`serving.http.server.HeadWithBody`), over real sockets.

Each test drives the class through a real asyncio transport of a socket pair and reads what the
peer socket received. Against a real `candidates serve`: tests/faults/test_http_edges.py
(`Expect: 100-continue`, kept-alive connections)."""

from __future__ import annotations

import asyncio
import socket

from serving.http.server import HeadWithBody


def _pending(sock: socket.socket) -> bytes:
    """What `sock` has received so far, without waiting."""
    try:
        return sock.recv(65536, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""


async def _through_transport(writes: list[bytes], close: bool = False) -> list[bytes]:
    """Writes `writes` through a `HeadWithBody` over a real socket pair; what the peer had after
    each write (the event loop runs between writes, so anything written has been sent)."""
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    held = HeadWithBody(transport)
    seen = []
    try:
        for data in writes:
            held.write(data)
            await asyncio.sleep(0.02)
            seen.append(_pending(peer))
        if close:
            held.close()
            await asyncio.sleep(0.02)
            seen.append(_pending(peer))
    finally:
        transport.close()
        peer.close()
    return seen


def test_the_head_waits_for_the_body_and_both_arrive_together():
    head, body = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", b"{}"
    seen = asyncio.run(_through_transport([head, body]))
    assert seen == [b"", head + body]


def test_an_interim_100_continue_and_later_writes_go_out_at_once():
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    head, chunk, end = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", b"2\r\n{}\r\n", b"0\r\n\r\n"
    seen = asyncio.run(_through_transport([interim, head, chunk, end]))
    assert seen == [interim, b"", head + chunk, end]


def test_closing_sends_a_held_head_first():
    head = b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n"
    seen = asyncio.run(_through_transport([head], close=True))
    assert seen == [b"", head]
