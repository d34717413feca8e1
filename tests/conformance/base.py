"""What every conformance test stands on: the broker under test (from the registry), fixtures, helpers.

A case is one broker and one of its implementations, started once per class by the real launcher
(local processes, or docker); a broker with no server gets a fresh embedded endpoint per test (the
PUSH side of a brokerless socket binds its port). Each test gets a fresh topic. The broker's spec says
what it can do (``capabilities``) and how to test it quickly (``testing``: options, a dead URL, ...).
"""
from __future__ import annotations

import shutil
import tempfile
import time
import uuid

import pytest

import brokers
from testbed.config import RunConfig
from testbed.harness.envelope import Envelope, decode
from testbed.launchers import launch


class BrokerCase:
    broker: str = ""
    broker_impl: str = ""
    launcher: str = "local"

    # -- what the spec says --------------------------------------------------------------------
    @classmethod
    def spec(cls):
        return brokers.spec(cls.broker)

    @classmethod
    def caps(cls):
        return cls.spec().caps(cls.broker_impl)

    @classmethod
    def settings(cls):
        """The spec's test settings for this implementation (``Testing``)."""
        return cls.spec().testing_for(cls.broker_impl)

    @property
    def options(self) -> dict:
        return dict(self.settings().options)

    @property
    def redelivery_timeout_s(self) -> float:
        return self.settings().redelivery_timeout_s

    # -- fixtures --------------------------------------------------------------------------------
    @classmethod
    def _launch(cls):
        cfg = RunConfig(broker=cls.broker, launcher=cls.launcher, broker_impl=cls.broker_impl,
                        broker_opt=dict(cls.settings().options))
        run_dir = tempfile.mkdtemp(prefix=f"conformance-{cls.broker}-")
        try:
            handle = launch(cfg, f"conf-{uuid.uuid4().hex[:8]}", run_dir)
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        return handle, run_dir

    @staticmethod
    def _release(handle, run_dir: str) -> None:
        """Stop the broker and remove its run folder (its log)."""
        try:
            handle.stop()
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)

    @pytest.fixture(scope="class")
    @classmethod
    def _server(cls):
        """The broker's server, once per class (None where there is none)."""
        if not cls.spec().needs_server:
            yield None
            return
        handle, run_dir = cls._launch()
        try:
            yield handle
        finally:
            cls._release(handle, run_dir)

    @pytest.fixture
    def endpoint(self, _server):
        if _server is not None:
            yield _server.endpoint
            return
        handle, run_dir = self._launch()  # embedded: a fresh endpoint per test
        try:
            yield handle.endpoint
        finally:
            self._release(handle, run_dir)

    @pytest.fixture(autouse=True)
    def _known_gap(self, request):
        reason = self.settings().known_gaps.get(request.node.originalname)
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


def cases() -> list[tuple[str, str]]:
    """(broker, implementation) for every broker in the registry and each of its implementations."""
    out = []
    for name in brokers.names():
        impls = brokers.spec(name).impl_names()
        out += [(name, impl) for impl in impls] if impls else [(name, "")]
    return out


def class_name(prefix: str, broker: str, impl: str) -> str:
    words = [w for w in (prefix, broker, impl) if w]
    return "".join(w[:1].upper() + w[1:] for w in words)
