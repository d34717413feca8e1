"""The broker's own backlog figure: 5 published, 2 taken and acknowledged -> 3 still to serve."""
from __future__ import annotations

import time

BACKLOG_SETTLE_S = 15.0


class BacklogMixin:
    def test_backlog_is_what_is_left(self, endpoint, topic):
        """broker_backlog after 5 published and 2 acknowledged is 3 (Kafka: high watermark - committed;
        a queue: messages ready once the consumer has gone); None where the broker cannot say."""
        c = self.consumer(endpoint, topic)
        c.wait_assigned(60)
        p = self.make(endpoint)
        p.wait_consumers(topic, 1, 15)
        for i in range(5):
            p.publish_envelope(topic, self.envelope(i))
        p.flush()
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 2 and time.monotonic() < deadline:
            got += c.receive(2 - len(got), 1.0)
        assert len(got) == 2
        c.ack(got)
        c.close()  # close after an async commit: the commit is sent before the consumer leaves
        admin = self.make(endpoint)
        try:
            lag = admin.broker_backlog(topic, f"g-{topic}")
            if not self.caps().reports_backlog:
                assert lag is None, f"{self.broker} declares no backlog figure but reported {lag}"
                return
            deadline = time.monotonic() + BACKLOG_SETTLE_S  # a queue takes back what a closed consumer held
            while lag != 3 and time.monotonic() < deadline:
                time.sleep(0.2)
                lag = admin.broker_backlog(topic, f"g-{topic}")
        finally:
            admin.close()
            p.close()
        assert lag == 3
