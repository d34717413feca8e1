"""Redelivery: messages a consumer took but never acknowledged reach another consumer after it is killed."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal

import pytest


class RedeliveryMixin:
    def test_redelivery_after_consumer_killed(self, endpoint, topic):
        if not self.caps().redelivers:
            pytest.skip(f"{self.broker} does not redeliver unacknowledged messages (at most once)")
        group = f"g-{topic}"
        ctx = mp.get_context("spawn")
        r, w = ctx.Pipe(duplex=False)
        from tests.conformance.consumer_proc import take_and_hang
        proc = ctx.Process(target=take_and_hang, args=(self.broker, endpoint.__dict__, topic, group, 5, w))
        proc.start()
        try:
            assert r.poll(90), "doomed consumer did not get ready"
            assert r.recv_bytes() == b"ready"
            p = self.make(endpoint)
            for i in range(10):
                p.publish_envelope(topic, self.envelope(i))
            p.flush()
            assert r.poll(60)
            taken = [int(x) for x in r.recv_bytes().decode().split(",") if x]
            assert len(taken) == 5
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(10)
            survivor = self.consumer(endpoint, topic, group, "survivor")
            survivor.wait_assigned(60)
            got = {s for s, _ in self.drain(survivor, 10, self.redelivery_timeout_s)}
            survivor.close()
            p.close()
            assert set(taken) <= got, f"messages {sorted(set(taken) - got)} of the killed consumer were not redelivered"
            assert got == set(range(10))
        finally:
            if proc.is_alive():
                proc.kill()
            proc.join(5)
