"""Loopback ports and readiness probes."""

from __future__ import annotations

import socket
import time

LOOPBACK = "127.0.0.1"

# Ports handed out in this process, so two servers of one run never get the
# same port even when the kernel offers it twice.
_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free loopback port found")


def port_accepts(port: int, host: str = LOOPBACK) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(port: int, timeout: float, alive=lambda: True, host: str = LOOPBACK) -> None:
    """Poll until host:port accepts connections.

    `alive` is called between attempts; when it returns False (the process
    died) the wait ends at once with an error.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_accepts(port, host):
            return
        if not alive():
            raise RuntimeError(f"process exited before {host}:{port} accepted connections")
        time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not accept connections within {timeout:.0f} s")
