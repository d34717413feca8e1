"""One conformance suite for every broker adapter, against real servers.

A broker joins the suite with one small config class in tests/conformance/test_<broker>.py:

    class TestRedis(BrokerConformance):
        broker = "redis"
        launcher = "local"

``BrokerConformance`` starts the broker once per class with the real launcher (local processes, or
docker), gives each test a fresh topic, and checks what every adapter must do. A broker that lacks a
feature says so: adapters declare ``redelivers`` and ``competing_consumers``; the test skips with the
reason. Known gaps of one implementation go in ``known_gaps`` (test name -> reason): those tests run
as expected failures (strict), never silently.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import tempfile
import threading
import time
import uuid

import pytest

import brokers
from brokers.base import Endpoint
from testbed.config import RunConfig
from testbed.harness.envelope import Envelope, decode
from testbed.errors import BrokerError
from testbed.launchers import launch

SIZES = [0, 1, 1000, 150_528, 1 << 20]


class BrokerConformance:
    broker: str = ""
    launcher: str = "local"
    broker_impl: str = ""
    #: options for every adapter the suite makes (e.g. shorter timeouts so redelivery is quick)
    options: dict = {}
    #: how long the redelivery test may wait for a dead consumer's messages to come back
    redelivery_timeout_s: float = 30.0
    #: test name -> reason: tests this implementation is known to fail (run as strict xfail)
    known_gaps: dict = {}
    #: an address where nothing listens, for the unreachable-broker test
    dead_url: str = ""

    # -- fixtures --------------------------------------------------------------------------------
    @pytest.fixture(scope="class")
    @classmethod
    def endpoint(cls):
        cfg = RunConfig(broker=cls.broker, launcher=cls.launcher, broker_impl=cls.broker_impl,
                        broker_opt=dict(cls.options))
        run_dir = tempfile.mkdtemp(prefix=f"conformance-{cls.broker}-")
        handle = launch(cfg, f"conf-{uuid.uuid4().hex[:8]}", run_dir)
        try:
            yield handle.endpoint
        finally:
            handle.stop()

    @pytest.fixture(autouse=True)
    def _known_gap(self, request):
        reason = self.known_gaps.get(request.node.originalname)
        if reason:
            request.node.add_marker(pytest.mark.xfail(reason=reason, strict=True))

    @pytest.fixture
    def topic(self, endpoint):
        return self._topic(endpoint, 1)

    def _topic(self, endpoint, partitions: int) -> str:
        name = f"conf-{uuid.uuid4().hex[:10]}"
        admin = self.make(endpoint)
        admin.ensure_topic(name, partitions)
        admin.close()
        return name

    def make(self, endpoint):
        b = brokers.get(self.broker)(endpoint)
        b.connect(15)
        return b

    def consumer(self, endpoint, topic, group=None, name="c0"):
        b = self.make(endpoint)
        b.subscribe(topic, group or f"g-{topic}", name)
        return b

    @staticmethod
    def envelope(seq: int, payload: bytes = b"x") -> Envelope:
        return Envelope(seq, seq, 0, 1, time.monotonic_ns(), time.monotonic_ns(), payload)

    @staticmethod
    def drain(consumer, n: int, timeout_s: float = 30.0, ack: bool = True) -> list:
        got = []
        deadline = time.monotonic() + timeout_s
        while len(got) < n and time.monotonic() < deadline:
            ds = consumer.receive(n - len(got), 0.2)
            for d in ds:
                env = decode(d.data)
                got.append((env.seq, bytes(memoryview(env.payload).cast("B"))))
            if ds and ack:
                consumer.ack(ds)
        return got

    # -- the suite -------------------------------------------------------------------------------
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

    def test_competing_consumers_share_work(self, endpoint):
        cls = brokers.get(self.broker)
        if not cls.competing_consumers:
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

    def test_redelivery_after_consumer_killed(self, endpoint, topic):
        cls = brokers.get(self.broker)
        if not cls.redelivers:
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

    def test_unreachable_broker_is_a_clear_error(self):
        if not self.dead_url:
            pytest.skip(f"{self.broker}: nothing to connect to (embedded, brokerless)")
        cls = brokers.get(self.broker)
        b = cls(Endpoint(self.broker, self.dead_url, dict(self.options)))
        t = time.monotonic()
        with pytest.raises(BrokerError) as info:
            b.connect(2.0)
            b.ensure_topic("nothing-here", 1)
        took = time.monotonic() - t
        assert took < 2.0 + 3.0, f"took {took:.1f}s for a 2 s connect timeout"
        assert "\n" not in str(info.value) and str(info.value)
