"""The conformance suite against brokers the docker launcher starts (redis, rabbitmq, Apache Kafka).

The same config classes as the local ones (tests/conformance/test_<broker>.py), with
``launcher = "docker"``: containers on the host network, from the official image if present, else the
local image (built by make setup). Skips where no engine can be had; fails instead under
``TESTBED_REQUIRE_DOCKER=1`` (CI). After each class, no container of this test process is left.
"""
import pytest

import tests.conformance.test_kafka as kafka_tests
import tests.conformance.test_rabbitmq as rabbitmq_tests
import tests.conformance.test_redis as redis_tests
from tests.docker_required import engine_or_skip, our_containers
from testbed.launchers import docker_images
from testbed.launchers.versions import KAFKA_VERSION


class DockerLaunched:
    launcher = "docker"

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _engine_and_no_leftovers(cls):
        engine_or_skip()
        yield
        left = [c.name for c in our_containers()]
        assert not left, f"containers left after the class: {left}"

    def test_runs_in_a_labelled_container(self, endpoint):
        """The broker answering is the container the launcher started, with the table's image."""
        from testbed.launchers import docker_engine
        extra = endpoint.extra
        spec = docker_images.spec_for(self.broker, self.broker_impl)
        assert extra["image"] in (spec.official, spec.local)
        client = docker_engine.client()
        c = client.containers.get(extra["container_id"])
        assert c.status == "running"
        assert c.labels["testbed"] == "1" and c.labels["testbed.run_id"].startswith("conf-")
        assert c.attrs["HostConfig"]["NetworkMode"] == "host"
        assert c.image.id == extra["image_id"]
        assert endpoint.launcher == "docker"


class TestDockerRedis(DockerLaunched, redis_tests.TestRedis):
    pass


class TestDockerRabbitMQ(DockerLaunched, rabbitmq_tests.TestRabbitMQ):
    pass


class TestDockerApacheKafka(DockerLaunched, kafka_tests.TestApacheKafka):
    def test_runs_the_pinned_version(self, endpoint):
        """Apache Kafka of the version pinned in versions.py (the local launcher's test reads a pid)."""
        assert endpoint.impl == f"apache-kafka {KAFKA_VERSION}"
        assert endpoint.extra["image"].endswith(KAFKA_VERSION) or f"-{KAFKA_VERSION}-" in endpoint.extra["image"]
