"""A consumer in its own process, for the ack-mode test: in one ``--ack`` mode it takes four batches,
acking each one once the next has been taken (the last stays in service), reports them and waits to be
killed (SIGKILL): batch 3's ack call returned, and no receive followed it."""
from __future__ import annotations

import json
import time

import brokers
from brokers.base import Endpoint
from testbed.harness.envelope import decode

BATCH = 4
BATCHES = 4


def take_ack_and_hang(broker: str, ep: dict, topic: str, group: str, mode: str, conn) -> None:
    b = brokers.get(broker)(Endpoint(**ep))
    b.connect(15)
    b.use_ack(mode)
    b.subscribe(topic, group, "doomed")
    b.wait_assigned(60)
    taken: list[list] = []
    deadline = time.monotonic() + 60
    while len(taken) < BATCHES and time.monotonic() < deadline:
        ds = b.receive(BATCH, 0.2)
        if not ds:
            continue
        if taken:
            b.ack(taken[-1][1])  # the previous batch, now that this one is in hand
        taken.append(([decode(d.data).seq for d in ds], ds))
    conn.send_bytes(json.dumps([seqs for seqs, _ in taken]).encode())
    while True:  # the test kills us with SIGKILL, the last batch in service
        time.sleep(1)
