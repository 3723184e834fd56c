"""The web ports the test and benchmark processes get: free, and out of the kernel's way."""

from __future__ import annotations

import socket
from pathlib import Path

from services import free_port


def test_a_free_port_lies_below_the_range_outgoing_connections_take_theirs_from() -> None:
    """A port in the ephemeral range may be taken by any connection between the pick and the
    process's bind (CI: a participants process found its web port 53863 in use)."""
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(50):
        port = free_port()
        assert 20000 <= port < min(32000, ephemeral_low)
        with socket.socket() as server:
            server.bind(("0.0.0.0", port))
            server.listen()
