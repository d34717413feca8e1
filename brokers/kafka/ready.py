"""Ready, for a Kafka-protocol broker: the port accepts, metadata answers, a topic is created and a
message produced with acks=all is acknowledged (what a run needs, not just an open port)."""
from __future__ import annotations

from testbed.errors import BrokerError

READY_TOPIC = "testbed-ready"


class RoundTrip:
    def __init__(self, url: str, impl: str):
        from brokers.kafka.client import bootstrap_servers
        self.servers = bootstrap_servers(url)
        self.host, port = self.servers.rsplit(":", 1)
        self.port = int(port)
        self.impl = impl
        self.admin = None
        self.producer = None
        self.topic_ready = False

    def __call__(self) -> str:
        import socket

        from confluent_kafka import KafkaException, Producer
        from confluent_kafka.admin import AdminClient, NewTopic

        from brokers.kafka.client import _client_log
        socket.create_connection((self.host, self.port), 0.5).close()  # refused: not listening yet
        quiet = {"bootstrap.servers": self.servers, "logger": _client_log}
        if self.admin is None:
            self.admin = AdminClient(quiet)
        self.admin.list_topics(timeout=2.0)
        if not self.topic_ready:
            try:
                self.admin.create_topics([NewTopic(READY_TOPIC, 1, 1)])[READY_TOPIC].result(5.0)
            except KafkaException as exc:
                if "already exists" not in str(exc).lower() and "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
            self.topic_ready = True
        if self.producer is None:
            self.producer = Producer({**quiet, "acks": "all", "linger.ms": 0})
        self.producer.produce(READY_TOPIC, b"ready")
        if self.producer.flush(5.0):
            raise BrokerError("the ready message was not acknowledged")
        return self.impl

    def close(self) -> None:
        if self.producer is not None:
            self.producer.flush(0)
        if self.admin is not None and self.topic_ready:
            try:  # tansu's memory engine keeps every message until the topic goes
                self.admin.delete_topics([READY_TOPIC])[READY_TOPIC].result(5.0)
            except Exception:  # noqa: BLE001
                pass
        self.producer = self.admin = None
