"""Competing consumers: two consumers of one group share the work, each message delivered once."""
from __future__ import annotations

import threading
import time

import pytest

from testbed.harness.envelope import decode


class CompetingConsumersMixin:
    def test_competing_consumers_share_work(self, endpoint):
        if not self.caps().competing_consumers:
            pytest.skip(f"{self.broker} has no competing consumers")
        topic = self._topic(endpoint, 2)
        group = f"g-{topic}"
        consumers = [self.consumer(endpoint, topic, group, f"c{i}") for i in range(2)]
        waits = [threading.Thread(target=c.wait_assigned, args=(60,)) for c in consumers]
        for t in waits:
            t.start()
        for t in waits:
            t.join()
        p = self.make(endpoint)
        p.wait_consumers(topic, 2, 15)
        n = 400
        for i in range(n):
            p.publish_envelope(topic, self.envelope(i))
        p.flush()
        got: list[list[int]] = [[], []]
        deadline = time.monotonic() + 60

        def take(k):
            c = consumers[k]
            while sum(map(len, got)) < n and time.monotonic() < deadline:
                ds = c.receive(50, 0.1)
                got[k].extend(decode(d.data).seq for d in ds)
                if ds:
                    c.ack(ds)
                    time.sleep(0.002)  # a consumer that works, so the other gets its share
        threads = [threading.Thread(target=take, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        p.close()
        for c in consumers:
            c.close()
        allseqs = got[0] + got[1]
        assert sorted(allseqs) == list(range(n)), "every message delivered exactly once"
        assert got[0] and got[1], f"both consumers got work ({len(got[0])} / {len(got[1])})"
