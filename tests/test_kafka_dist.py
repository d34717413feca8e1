"""Fetching Apache Kafka's jars (brokers/kafka/dist.py): cached, atomic, and a missing java or
mvn is one clear line. The fetch itself runs Maven for real (from the local Maven repository that
`make setup` filled, so a few seconds)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from testbed.config import RunConfig
from testbed.errors import BrokerError, ConfigError
from brokers.kafka import dist as kafka_dist
from brokers.kafka.dist import KAFKA_SCALA, KAFKA_VERSION
from testbed.launchers import launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bin_dir_with(tmp_path, *names) -> str:
    """A PATH folder holding only ``names`` (links to the real binaries)."""
    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    for name in names:
        real = subprocess.run(["which", name], capture_output=True, text=True).stdout.strip()
        assert real, f"{name} is needed for this test"
        os.symlink(real, d / name)
    return str(d)


def test_install_once_then_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    lines: list[str] = []
    libs = kafka_dist.install(progress=lines.append)
    assert libs == str(tmp_path / "cache" / "testbed" / f"kafka-{KAFKA_VERSION}" / "libs")
    jars = set(os.listdir(libs))
    assert f"kafka_{KAFKA_SCALA}-{KAFKA_VERSION}.jar" in jars
    assert f"kafka-server-{KAFKA_VERSION}.jar" in jars and any(j.startswith("log4j-slf4j-impl") for j in jars)
    assert lines and any("jars" in ln for ln in lines), lines
    assert set(os.listdir(os.path.dirname(libs))) == {"libs", ".install.lock"}, "no temporary folder left"
    # second call: nothing to do, so it needs neither java nor mvn, and says nothing
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    again: list[str] = []
    t = time.monotonic()
    assert kafka_dist.install(progress=again.append) == libs
    assert time.monotonic() - t < 0.5
    assert again == []


@pytest.mark.parametrize("present, package", [((), "openjdk-17-jre-headless"), (("java",), "maven")])
def test_missing_java_or_mvn_is_one_clear_line(tmp_path, present, package):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "PATH": bin_dir_with(tmp_path, *present)}
    done = subprocess.run([sys.executable, "-m", "testbed.brokers", "install", "kafka"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("testbed.brokers: error: ") and package in lines[0]
    assert not os.path.exists(tmp_path / "cache" / "testbed" / f"kafka-{KAFKA_VERSION}" / "libs")


def test_bad_impl_and_heap_fail_before_anything_starts(tmp_path):
    with pytest.raises(ConfigError, match="apache, tansu"):
        launch(RunConfig(broker="kafka", launcher="local", broker_impl="redpanda"), "x", str(tmp_path))
    with pytest.raises(ConfigError, match="--broker-heap"):
        launch(RunConfig(broker="kafka", launcher="local", broker_heap="lots"), "x", str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_server_command_is_what_the_image_can_reuse():
    argv = kafka_dist.server_command("/etc/kafka/server.properties", "256m", libs="/opt/kafka/libs",
                                     log4j_path="/etc/kafka/log4j2.properties")
    assert argv[0] == "java" and "-Xms256m" in argv and "-Xmx256m" in argv
    assert argv[argv.index("-cp") + 1] == "/opt/kafka/libs/*"
    assert argv[-2:] == ["kafka.Kafka", "/etc/kafka/server.properties"]
    props = kafka_dist.server_properties(9092, 9093, "/data", host="0.0.0.0", advertised_port=19092)
    assert "listeners=PLAINTEXT://0.0.0.0:9092,CONTROLLER://0.0.0.0:9093" in props.splitlines()
    assert "advertised.listeners=PLAINTEXT://127.0.0.1:19092" in props.splitlines()  # never 0.0.0.0
    assert "controller.quorum.voters=1@127.0.0.1:9093" in props.splitlines()


def test_missing_java_at_launch_is_a_broker_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BrokerError, match="openjdk-17-jre-headless"):
        launch(RunConfig(broker="kafka", launcher="local"), "x", str(tmp_path))
