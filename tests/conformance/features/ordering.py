"""Ordering: one consumer of a one-partition topic gets the messages in publish order."""
from __future__ import annotations


class OrderingMixin:
    def test_order_kept_within_partition(self, endpoint, topic):
        c = self.consumer(endpoint, topic)
        c.wait_assigned(60)
        p = self.make(endpoint)
        p.wait_consumers(topic, 1, 15)
        for i in range(300):
            p.publish_envelope(topic, self.envelope(i))
        p.flush()
        got = [s for s, _ in self.drain(c, 300)]
        p.close()
        c.close()
        assert got == list(range(300))
