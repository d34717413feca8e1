"""What only the kafka broker has, beyond the shared suite (test_brokers.py runs that for both of its
implementations): Apache Kafka of the pinned version, topics with the partitions asked for, KIP-848; tansu's
label, defaults and refusals. Both run the same adapter (brokers/kafka/adapter.py)."""
import os
import zipfile

import psutil
import pytest

import brokers
from testbed.errors import ConfigError

from brokers.kafka import dist
from brokers.kafka.dist import KAFKA_SCALA, KAFKA_VERSION
from tests.conformance.base import BrokerCase


class TestApacheKafka(BrokerCase):
    broker = "kafka"
    launcher = "local"
    broker_impl = "apache"

    def test_runs_the_pinned_version(self, endpoint):
        """The broker the local launcher started is Apache Kafka of the version pinned in dist.py."""
        assert endpoint.impl == f"apache-kafka {KAFKA_VERSION}"
        cmdline = psutil.Process(endpoint.extra["pid"]).cmdline()
        classpath = cmdline[cmdline.index("-cp") + 1]
        assert os.path.dirname(classpath) == dist.libs_dir(KAFKA_VERSION)
        assert os.path.isfile(os.path.join(os.path.dirname(classpath), f"kafka_{KAFKA_SCALA}-{KAFKA_VERSION}.jar"))
        jar = os.path.join(os.path.dirname(classpath), f"kafka-server-{KAFKA_VERSION}.jar")
        with zipfile.ZipFile(jar) as z:  # the version the server jar itself declares
            props = z.read("kafka/kafka-version.properties").decode()
        assert f"version={KAFKA_VERSION}" in props.split()
        assert cmdline[-2] == "kafka.Kafka"
        with open(endpoint.extra["log"], errors="replace") as fh:  # and what the running broker logged
            assert dist.version_from_log(fh.read()) == KAFKA_VERSION

    def test_topic_gets_the_partitions_asked_for(self, endpoint):
        topic = self._topic(endpoint, 3)
        b = self.make(endpoint)
        md = b._admin.list_topics(topic, timeout=5)
        b.close()
        assert len(md.topics[topic].partitions) == 3

    def test_kip848_consumer_protocol(self, endpoint, topic):
        """group.protocol=consumer (KIP-848: the broker assigns) works on Apache Kafka 4."""
        from brokers.base import Endpoint
        ep = Endpoint(**{**endpoint.__dict__, "options": {"group.protocol": "consumer"}})
        c = self.consumer(ep, topic)
        c.wait_assigned(60)
        p = self.make(endpoint)
        for i in range(20):
            p.publish_envelope(topic, self.envelope(i))
        p.flush()
        got = [s for s, _ in self.drain(c, 20)]
        c.close()
        p.close()
        assert got == list(range(20))


class TestTansu(BrokerCase):
    broker = "kafka"
    launcher = "local"
    broker_impl = "tansu"

    def test_label_and_backlog(self, endpoint, topic):
        assert endpoint.impl.startswith("tansu ") and endpoint.impl.endswith("(kafka protocol)")
        b = self.make(endpoint)
        assert b.broker_backlog(topic, f"g-{topic}") is None  # tansu's high watermark is wrong
        assert b.options["session.timeout.ms"] == 6000
        b.close()

    def test_kip848_is_refused_on_tansu(self, endpoint):
        """tansu silently delivers nothing to a group.protocol=consumer member: the adapter refuses it."""
        from brokers.base import Endpoint
        ep = Endpoint(**{**endpoint.__dict__, "options": {"group.protocol": "consumer"}})
        with pytest.raises(ConfigError, match="KIP-848"):
            brokers.get("kafka")(ep)
