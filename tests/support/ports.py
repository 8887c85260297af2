"""Free TCP ports for the servers a test starts, kept apart per pytest-xdist worker.

Port 0 makes the kernel hand out a port of the ephemeral range (32768-60999 here), where any
outgoing connection, of this worker or another, may take it between our pick and the
server's bind: with several workers starting servers at once that is a real race. So each
worker takes ports from a block of its own below that range, in turn, skipping any that is
bound. A Redis Cluster node also listens on its port + 10000 (its bus), which stays below
the ephemeral range too.
"""

from __future__ import annotations

import os
import random
import socket

FIRST = 12000
BLOCK = 1200  # ports per worker: a full run takes about 300
BLOCKS = 8  # 12000 + 8 * 1200 + 10000 (a cluster bus) < 32768
BUS_OFFSET = 10000


def _block() -> int:
    """This process' block: pytest-xdist names its workers gw0, gw1, ... (beyond eight,
    workers share blocks and rely on the bind check)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    number = worker[2:]
    return int(number) % BLOCKS if worker.startswith("gw") and number.isdigit() else 0


# a random start: two runs at once (or a helper script beside its test) seldom meet
_next = random.randrange(BLOCK)


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int, *, cluster_bus: bool = False) -> list[int]:
    """``n`` distinct ports that nothing is bound to now, from this worker's block (with
    ``cluster_bus``, each port + 10000 is free as well)."""
    global _next
    first = FIRST + _block() * BLOCK
    ports: list[int] = []
    for _ in range(BLOCK):
        port = first + _next % BLOCK
        _next += 1
        if _free(port) and (not cluster_bus or _free(port + BUS_OFFSET)):
            ports.append(port)
            if len(ports) == n:
                return ports
    raise RuntimeError(f"no {n} free ports in {first}-{first + BLOCK - 1}: what holds them?")


def free_port() -> int:
    return free_ports(1)[0]
