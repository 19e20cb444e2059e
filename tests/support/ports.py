"""A free loopback port for a real server the tests start (HTTP service, redis-server)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port the kernel just gave out on 127.0.0.1 and that nothing listens on now.

    Ports come from the kernel's ephemeral range, so parallel workers (pytest-xdist) never pick
    the same one at the same time; a fixed port number would collide between them.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
