"""compose/<broker>-cluster.yml: each agrees with the image table and the cluster recipes (host network,
127.0.0.1, the official image behind its variable, Kafka's variables being its cluster's node properties),
and, where an engine and a compose tool answer, the NATS cluster comes up and a --broker-nodes 3 run
works against it (the other three were brought up by hand the same way: docs/clusters.md)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid

import pytest

from tests.test_compose import COMPOSE, IMAGE_RE, ROOT, compose, image_env, load, project_containers, tool  # noqa: F401
from testbed.launchers import free_port
from testbed.launchers.images import IMAGES

CLUSTER_FILES = {"kafka-cluster.yml": "kafka", "rabbitmq-cluster.yml": "rabbitmq", "nats-cluster.yml": "nats",
                 "redis-cluster.yml": "redis"}


def resolved(text) -> str:
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]+)\}", r"\1", str(text))


@pytest.mark.parametrize("name", sorted(CLUSTER_FILES))
def test_cluster_files_agree_with_the_table_and_bind_loopback(name):
    spec = IMAGES[CLUSTER_FILES[name]]
    text = open(os.path.join(COMPOSE, name)).read()
    assert "0.0.0.0" not in text
    services = load(name)["services"]
    assert len(services) >= 3
    for svc_name, svc in services.items():
        m = IMAGE_RE.match(svc["image"])
        assert m and m["var"] == spec.env_var and m["default"] == spec.official, (name, svc_name, svc["image"])
        assert svc["network_mode"] == "host" and "ports" not in svc
    assert "127.0.0.1" in text


def test_kafka_cluster_file_is_the_cluster_recipes_properties():
    from brokers.kafka.cluster import compose_env
    want = compose_env([(9092, 9093), (9094, 9095), (9096, 9097)])
    services = load("kafka-cluster.yml")["services"]
    for i, env in enumerate(want, 1):
        have = services[f"kafka{i}"]["environment"]
        assert {k for k in have if k.startswith("KAFKA_")} == set(env)
        for k, v in env.items():
            assert resolved(have[k]) == v, (i, k)


def test_nats_cluster_file_up_run_down(tool, tmp_path):  # noqa: F811 - the compose tool fixture
    env = image_env()
    for var in sorted(set(re.findall(r"\$\{(TESTBED_NATS_[A-Z_]*PORT_\d):-",
                                     open(os.path.join(COMPOSE, "nats-cluster.yml")).read()))):
        env[var] = str(free_port())
    project = f"testbed-test-{uuid.uuid4().hex[:6]}"
    up = compose(tool, "nats-cluster.yml", project, env, "up", "-d")
    try:
        assert up.returncode == 0, up.stderr[-2000:]
        url = ",".join(f"nats://127.0.0.1:{env[f'TESTBED_NATS_PORT_{i}']}" for i in (1, 2, 3))
        r = subprocess.run([sys.executable, "-m", "testbed.run", "--broker", "nats", "--broker-nodes", "3",
                            "--launcher", "external", "--broker-url", url, "--duration", "2", "--warmup", "0.5",
                            "--rate", "20", "--message-bytes", "2000", "--connect-timeout", "30",
                            "--out", str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "lost 0" in r.stdout, r.stdout
        summary = open(tmp_path / "run" / "summary.csv").read()
        assert "stream R3" in summary
    finally:
        down = compose(tool, "nats-cluster.yml", project, env, "down", "-t", "5")
    assert down.returncode == 0, down.stderr[-2000:]
    assert not project_containers(project)
