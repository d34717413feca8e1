"""A consumer in its own process, for the redelivery test: it takes messages, reports them, never acks,
and waits to be killed."""
from __future__ import annotations

import time

import brokers
from brokers.base import Endpoint
from testbed.harness.envelope import decode


def take_and_hang(broker: str, ep: dict, topic: str, group: str, n: int, conn) -> None:
    b = brokers.get(broker)(Endpoint(**ep))
    b.connect(15)
    b.subscribe(topic, group, "doomed")
    b.wait_assigned(60)
    conn.send_bytes(b"ready")
    got = []
    deadline = time.monotonic() + 60
    while len(got) < n and time.monotonic() < deadline:
        for d in b.receive(n - len(got), 0.2):
            got.append(decode(d.data).seq)
    conn.send_bytes(",".join(map(str, got)).encode())
    while True:  # never ack; the test kills us with SIGKILL
        time.sleep(1)
