"""Payloads and sizes: every byte arrives as sent, from empty to 1 MiB."""
from __future__ import annotations

SIZES = [0, 1, 1000, 150_528, 1 << 20]


class PayloadMixin:
    def test_payload_bytes_intact(self, endpoint, topic):
        """Payloads from 0 B to 1 MiB arrive byte for byte."""
        c = self.consumer(endpoint, topic)
        c.wait_assigned(60)
        p = self.make(endpoint)
        p.wait_consumers(topic, 1, 15)
        rng = __import__("numpy").random.default_rng(7)
        payloads = [rng.integers(0, 256, n, dtype="uint8").tobytes() for n in SIZES]
        for i, pl in enumerate(payloads):
            p.publish_envelope(topic, self.envelope(i, pl))
        p.flush()
        got = dict(self.drain(c, len(payloads)))
        p.close()
        c.close()
        assert sorted(got) == list(range(len(payloads)))
        for i, pl in enumerate(payloads):
            assert got[i] == pl, f"payload of {len(pl)} bytes changed in transit"
