"""compose/: the files agree with the image table and the launchers' configuration, the installed compose
tool accepts them, and each brings up a broker a short testbed run (``--launcher external``) works
against; a file the tool rejects fails in one line and starts nothing.

Brought up with the local images (``TESTBED_*_IMAGE``, built by make setup) unless the official ones are
present, on free ports (``TESTBED_*_PORT``): never the default ports, where a broker of the machine may run.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid

import pytest
import yaml

from tests.docker_required import REQUIRED, compose_tool, engine_or_skip
import brokers
from testbed.launchers import free_port
from testbed.launchers.images import IMAGES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPOSE = os.path.join(ROOT, "compose")
#: compose/<broker>.yml for every broker of the registry that has one, and all.yml (the first three)
FILES = {**{f"{b}.yml": [b] for b in brokers.names() if os.path.exists(os.path.join(COMPOSE, f"{b}.yml"))},
         "all.yml": ["redis", "rabbitmq", "kafka"]}
BROKER_FILES = sorted(f for f in FILES if f != "all.yml")
PORT_VAR_RE = re.compile(r"\$\{(TESTBED_[A-Z0-9_]*PORT):-")
IMAGE_RE = re.compile(r"^\$\{(?P<var>[A-Z0-9_]+):-(?P<default>[^}]+)\}$")


def load(name: str) -> dict:
    with open(os.path.join(COMPOSE, name)) as fh:
        return yaml.safe_load(fh)


def services(name: str) -> dict:
    """Services of a file, ``extends`` resolved (one level, as all.yml uses it)."""
    out = {}
    for svc_name, svc in load(name)["services"].items():
        if "extends" in svc:
            ext = svc["extends"]
            svc = {**services(ext["file"])[ext["service"]], **{k: v for k, v in svc.items() if k != "extends"}}
        out[svc_name] = svc
    return out


# -- static: no engine needed -------------------------------------------------------------------------
def test_every_broker_with_an_image_has_a_compose_file():
    for name in brokers.names():
        spec = brokers.spec(name)
        if spec.needs_server and spec.impl().image is not None:
            assert f"{name}.yml" in FILES, f"compose/{name}.yml is missing"


@pytest.mark.parametrize("name", sorted(FILES))
def test_images_agree_with_the_table(name):
    """Each service's image is ${VAR:-official} with the table's variable and pinned official image."""
    svcs = services(name)
    assert sorted(svcs) == sorted(FILES[name])
    for svc_name, svc in svcs.items():
        spec = IMAGES[svc_name]
        m = IMAGE_RE.match(svc["image"])
        assert m, f"{name}: {svc_name} image {svc['image']!r} is not ${{VAR:-image}}"
        assert m["var"] == spec.env_var and m["default"] == spec.official, (name, svc_name, svc["image"])
        assert svc["network_mode"] == "host"


def test_kafka_file_is_kafka_dist_config():
    """compose/kafka.yml sets exactly what the docker launcher sets (kafka_dist.server_properties)."""
    from brokers.kafka.image import kafka_env
    want = kafka_env(9092, 9093, "512m")
    have = services("kafka.yml")["kafka"]["environment"]
    keys = lambda env: {k for k in env if k.startswith("KAFKA_")}  # noqa: E731
    assert keys(have) == keys(want)
    for k in keys(want) - {"KAFKA_HEAP_OPTS"}:
        resolved = re.sub(r"\$\{[A-Z_]+:-([^}]+)\}", r"\1", str(have[k]))
        assert resolved == want[k], k


def test_rabbitmq_file_is_the_launchers_config():
    from brokers.rabbitmq.spec import CONFIG
    command = "\n".join(services("rabbitmq.yml")["rabbitmq"]["command"])
    for line in CONFIG.format(host="127.0.0.1", port="%s").splitlines():
        if line and not line.startswith("#"):
            assert line in command.replace("\\n", "\n"), line


def test_every_binding_is_loopback():
    for name in FILES:
        text = open(os.path.join(COMPOSE, name)).read()
        assert "0.0.0.0" not in text
        for svc in services(name).values():
            assert "ports" not in svc  # host network: nothing published


# -- with the tool and an engine ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def tool():
    engine_or_skip()
    t = compose_tool()
    if not t:
        if REQUIRED:
            pytest.fail("TESTBED_REQUIRE_DOCKER=1 but neither `docker compose` nor docker-compose is installed")
        pytest.skip("no compose tool installed (docker compose v2 or docker-compose v1)")
    return t


def image_env() -> dict:
    """Local images where the official ones are absent; free ports for everything."""
    from testbed.launchers import engine as docker_engine, images as docker_images
    client = docker_engine.client()
    env = docker_engine.env_for_tools()
    for spec in IMAGES.values():
        present = docker_images._image_id(client, spec.official)
        env[spec.env_var] = spec.official if present else spec.local
    for name in FILES:  # every port variable the files read
        for var in PORT_VAR_RE.findall(open(os.path.join(COMPOSE, name)).read()):
            env.setdefault(var, str(free_port()))
    return env


def compose(tool, name, project, env, *args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([*tool, "-p", project, "-f", os.path.join(COMPOSE, name), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def project_containers(project: str) -> list:
    from testbed.launchers import engine as docker_engine
    return docker_engine.client().containers.list(
        all=True, filters={"label": f"com.docker.compose.project={project}"})


def urls(env: dict) -> dict:
    """broker -> its URL, from its recipe's URL and the files' port variables: TESTBED_<BROKER>_PORT for
    the first named port, TESTBED_<BROKER>_<NAME>_PORT for the others."""
    out = {}
    for name in BROKER_FILES:
        broker = FILES[name][0]
        recipe = brokers.spec(broker).impl().local
        ports = {p: env[f"TESTBED_{broker.upper()}_PORT" if i == 0 else f"TESTBED_{broker.upper()}_{p.upper()}_PORT"]
                 for i, p in enumerate(recipe.ports)}
        out[broker] = recipe.url.format(host="127.0.0.1", **ports)
    return out


def wait_answers(broker: str, url: str, timeout_s: float = 90.0) -> str:
    import brokers
    from brokers.base import Endpoint
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            b = brokers.get(broker)(Endpoint(broker, url))
            b.connect(3)
            b.close()
            return url
        except Exception as exc:  # noqa: BLE001 - not up yet
            last = exc
            time.sleep(0.3)
    raise AssertionError(f"{broker} at {url} did not answer: {last}")


@pytest.mark.parametrize("name", BROKER_FILES)
def test_up_run_down(tool, name, tmp_path):
    env = image_env()
    broker = FILES[name][0]
    project = f"testbed-test-{uuid.uuid4().hex[:6]}"
    up = compose(tool, name, project, env, "up", "-d")
    try:
        assert up.returncode == 0, up.stderr[-2000:]
        url = wait_answers(broker, urls(env)[broker])
        r = subprocess.run([sys.executable, "-m", "testbed.run", "--broker", broker, "--launcher", "external",
                            "--broker-url", url, "--duration", "2", "--warmup", "0.5", "--rate", "20",
                            "--message-bytes", "2000", "--out", str(tmp_path / "run")],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "lost 0" in r.stdout, r.stdout
    finally:
        down = compose(tool, name, project, env, "down", "-t", "5")
    assert down.returncode == 0, down.stderr[-2000:]
    assert not project_containers(project)


def test_all_brings_up_the_three(tool):
    env = image_env()
    project = f"testbed-test-{uuid.uuid4().hex[:6]}"
    up = compose(tool, "all.yml", project, env, "up", "-d")
    try:
        assert up.returncode == 0, up.stderr[-2000:]
        for broker, url in urls(env).items():
            if broker in FILES["all.yml"]:
                wait_answers(broker, url)
    finally:
        down = compose(tool, "all.yml", project, env, "down", "-t", "5")
    assert down.returncode == 0, down.stderr[-2000:]
    assert not project_containers(project)


@pytest.mark.parametrize("name", sorted(FILES))
def test_tool_accepts_the_file(tool, name):
    r = compose(tool, name, "testbed-config-check", image_env(), "config", "-q")
    assert r.returncode == 0, r.stderr


def test_a_file_the_tool_rejects_fails_clearly_and_starts_nothing(tool, tmp_path):
    bad = load("redis.yml")
    bad["services"]["redis"]["network_mode"] = ["host"]  # a list where a string belongs
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump(bad))
    project = f"testbed-test-{uuid.uuid4().hex[:6]}"
    r = subprocess.run([*tool, "-p", project, "-f", str(path), "up", "-d"], env=image_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "network_mode" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not project_containers(project)
