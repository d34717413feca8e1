"""The conformance suite against brokers the docker launcher starts: every broker and implementation of
the registry that has an image.

The same cases as test_brokers.py with ``launcher = "docker"``: containers on the host network, from the
official image if present, else the local image (built by make setup). Skips where no engine can be
had; fails instead under ``TESTBED_REQUIRE_DOCKER=1`` (CI). After each class, no container of this test
process is left.
"""
import brokers
from tests.conformance.suite import BrokerConformance, cases, class_name
from tests import docker_required
from testbed.launchers import images as docker_images


class DockerLaunched(docker_required.DockerLaunched):
    """See tests/docker_required.py: the engine, and no container left after the class."""

    def test_runs_in_a_labelled_container(self, endpoint):
        """The broker answering is the container the launcher started, with the table's image."""
        from testbed.launchers import engine as docker_engine
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

    def test_runs_the_pinned_version(self, endpoint):
        """The image and what answers are the version the spec pins (the local launcher's test reads a pid)."""
        image = docker_images.spec_for(self.broker, self.broker_impl)
        impl = brokers.spec(self.broker).impl(self.broker_impl)
        if impl.label:
            assert endpoint.impl == impl.impl_label()
        assert image.upstream in endpoint.impl, endpoint.impl
        assert image.upstream in endpoint.extra["image"]


for _broker, _impl in cases():
    _spec = brokers.spec(_broker)
    if not _spec.needs_server or _spec.impl(_impl).image is None:
        continue
    _name = class_name("TestDocker", _broker, _impl)
    globals()[_name] = type(_name, (DockerLaunched, BrokerConformance),
                            {"broker": _broker, "broker_impl": _impl, "__module__": __name__})
