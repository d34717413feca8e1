"""Redis Streams in the conformance suite, against a private redis-server (local launcher)."""
from tests.conformance.suite import BrokerConformance
from testbed.launchers import free_port


class TestRedis(BrokerConformance):
    broker = "redis"
    launcher = "local"
    # a dead consumer's entries are claimed after 1 s (the default, 30 s, suits real runs)
    options = {"claim_idle_ms": "1000"}
    redelivery_timeout_s = 15.0
    dead_url = f"redis://127.0.0.1:{free_port()}/0"
