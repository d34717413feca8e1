"""An in-process queue that loses one message and delivers another twice: to check that the harness
counts what a broker gets wrong (it is the real queue, with a fault injected)."""
from brokers.inproc.adapter import InprocBroker

DROP_SEQ = 5
DUPLICATE_SEQ = 9


class FaultyInproc(InprocBroker):
    name = "faulty"

    def publish_envelope(self, topic, env):
        if env.seq == DROP_SEQ:
            return
        super().publish_envelope(topic, env)
        if env.seq == DUPLICATE_SEQ:
            super().publish_envelope(topic, env)
