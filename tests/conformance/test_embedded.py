"""The embedded brokers in the conformance suite."""
import uuid

import pytest

from brokers.base import Endpoint
from tests.conformance.suite import BrokerConformance
from testbed.launchers import free_port


class TestInproc(BrokerConformance):
    broker = "inproc"

    @pytest.fixture(scope="class")
    @classmethod
    def endpoint(cls):
        yield Endpoint("inproc", f"inproc://conf-{uuid.uuid4().hex[:8]}")


class TestZeroMQ(BrokerConformance):
    broker = "zeromq"

    @pytest.fixture
    def endpoint(self):  # a fresh port per test: the PUSH side binds it
        yield Endpoint("zeromq", f"tcp://127.0.0.1:{free_port()}")
