"""The docker launcher, its engine and its images, against a real engine (skipped where none can be had;
a failure in CI, where TESTBED_REQUIRE_DOCKER=1).

The images are built by make setup (scripts/setup.d/60-docker.sh), not here: these tests only start
containers, except the one that checks a recipe that cannot be built fails cleanly.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.docker_required import engine_or_skip, our_containers
from testbed.config import RunConfig
from testbed.errors import BrokerError, ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


@pytest.fixture(scope="module", autouse=True)
def engine():
    engine_or_skip()
    yield
    left = [c.name for c in our_containers()]
    assert not left, f"containers of this test process left behind: {left}"


def cli(*args, env=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([PY, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def containers_of(pid: int) -> list:
    return our_containers(pid)


def launch(tmp_path, **kw):
    from testbed.launchers import docker
    cfg = RunConfig(**{"broker": "redis", "launcher": "docker", **kw})
    return docker.launch(cfg, f"test-{os.getpid()}", str(tmp_path))


# -- engine -----------------------------------------------------------------------------------------
def test_engine_status_names_the_engine():
    r = cli("-m", "testbed.brokers", "engine", "status")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "answers at unix://" in r.stdout or "answers at" in r.stdout


def test_no_engine_is_one_clear_line(tmp_path):
    """Nowhere to reach an engine: the run fails in one line naming what was tried; auto picks local."""
    if os.path.exists("/var/run/docker.sock"):
        pytest.skip("a system engine socket exists here: cannot make 'no engine' without touching it")
    env = {"DOCKER_HOST": f"unix://{tmp_path}/none.sock", "TESTBED_DOCKER_DIR": str(tmp_path / "none")}
    r = cli("-m", "testbed.run", "--broker", "redis", "--launcher", "docker", "--duration", "3",
            "--out", str(tmp_path / "run"), env=env)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "no Docker engine answers" in lines[0] and "none.sock" in lines[0], r.stderr
    r = cli("-m", "testbed.brokers", "engine", "status", env=env)
    assert r.returncode == 1 and "no Docker engine answers" in r.stdout
    r = cli("-c", "from testbed.config import RunConfig; from testbed.launchers import resolve_launcher;"
                  "print(resolve_launcher(RunConfig(broker='redis')))", env=env)
    assert r.stdout.strip() == "local", r.stderr


def test_engine_start_and_stop_a_private_engine(tmp_path):
    """`engine start` with nothing answering starts ours (own data-root, socket, pidfile); `stop` ends it."""
    import shutil
    if os.geteuid() != 0 or not shutil.which("dockerd") or os.path.exists("/var/run/docker.sock"):
        pytest.skip("needs root, dockerd, and no system engine socket")
    run_dir = f"/run/testbed-docker-test-{os.getpid()}"
    data = str(tmp_path / "data")
    env = {"DOCKER_HOST": f"unix://{tmp_path}/none.sock", "TESTBED_DOCKER_DIR": run_dir,
           "TESTBED_DOCKER_DATA": data}
    try:
        r = cli("-m", "testbed.brokers", "engine", "start", env=env)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f"export DOCKER_HOST=unix://{run_dir}/docker.sock"
        r = cli("-m", "testbed.brokers", "engine", "status", env=env)
        assert r.returncode == 0 and "(ours, private)" in r.stdout
        r = cli("-m", "testbed.brokers", "engine", "stop", env=env)
        assert r.returncode == 0 and "stopped the private dockerd" in r.stderr
        r = cli("-m", "testbed.brokers", "engine", "status", env=env)
        assert r.returncode == 1
    finally:
        cli("-m", "testbed.brokers", "engine", "stop", env=env)
        shutil.rmtree(run_dir, ignore_errors=True)


def test_auto_picks_docker_when_an_engine_answers():
    from testbed.launchers import resolve_launcher
    assert resolve_launcher(RunConfig(broker="redis")) == "docker"


# -- a run ------------------------------------------------------------------------------------------
def test_run_records_engine_image_and_container_stats(tmp_path):
    out = tmp_path / "run"
    r = cli("-m", "testbed.run", "--broker", "redis", "--launcher", "docker", "--duration", "3",
            "--warmup", "1", "--rate", "20", "--message-bytes", "2000", "--out", str(out), timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    run = json.loads((out / "run.json").read_text())
    launch_facts = run["broker"]["launch"]
    assert run["broker"]["launcher"] == "docker"
    assert launch_facts["engine"].startswith(("unix://", "tcp://", "npipe://", "ssh://"))
    assert launch_facts["image_id"].startswith("sha256:")
    assert run["broker"]["impl"].startswith("redis 7.")
    rows = (out / "timeseries.csv").read_text().splitlines()
    header = rows[0].split(",")
    cpu, rss = header.index("broker_cpu_pct"), header.index("broker_rss_mb")
    values = [row.split(",") for row in rows[1:]]
    assert any(v[rss] and float(v[rss]) > 0 for v in values), rows
    assert any(v[cpu] != "" for v in values), rows
    assert (out / "broker-redis.log").read_text().strip()  # the container's log, saved before removal
    assert not [c for c in our_containers(all_owners=True) if c.labels.get("testbed.run_id") == run["run_id"]]


def _sigint(args, tmp_path, wait_for_text: str = "") -> tuple[subprocess.Popen, str]:
    """Start a run, send SIGINT once its container exists (and its output shows ``wait_for_text``)."""
    log = tmp_path / "output.txt"
    with open(log, "w") as out:
        proc = subprocess.Popen([PY, "-m", "testbed.run", *args, "--out", str(tmp_path / "run")], cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and not containers_of(proc.pid):
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.05)
        assert containers_of(proc.pid), "the run started no container"
        while wait_for_text and time.monotonic() < deadline and wait_for_text not in log.read_text():
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        return proc, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigint_during_a_run_leaves_no_container(tmp_path):
    args = ["--broker", "redis", "--launcher", "docker", "--duration", "60", "--rate", "20"]
    proc, output = _sigint(args, tmp_path, wait_for_text="load]")
    assert proc.returncode == 130, output[-2000:]
    assert not containers_of(proc.pid)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["complete"] is False


def test_sigint_during_start_up_leaves_no_container(tmp_path):
    """RabbitMQ takes seconds to boot: Ctrl-C while the launcher waits for it."""
    args = ["--broker", "rabbitmq", "--launcher", "docker", "--duration", "60"]
    proc, output = _sigint(args, tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in output and "load]" not in output, output[-2000:]
    # the launcher removes what it created; a create the Ctrl-C cut short is the run's watchdog's to
    # remove once the run has exited: give it a few seconds
    deadline = time.monotonic() + 10
    while containers_of(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not containers_of(proc.pid)


# -- the launcher itself ------------------------------------------------------------------------------
def test_limits_labels_and_sample(tmp_path):
    h = launch(tmp_path, broker_cpus="0", broker_memory="256m")
    try:
        from testbed.launchers import engine as docker_engine
        c = docker_engine.client().containers.get(h.endpoint.extra["container_id"])
        assert c.attrs["HostConfig"]["CpusetCpus"] == "0"
        assert c.attrs["HostConfig"]["Memory"] == 256 * 2**20
        assert c.labels["testbed.run_id"] == f"test-{os.getpid()}"
        first = h.sample()
        time.sleep(0.3)
        second = h.sample()
        assert first["broker_rss_mb"] > 0 and "broker_cpu_pct" in second
    finally:
        h.stop()
    assert not containers_of(os.getpid())
    h.stop()  # twice is fine


def test_tansu_image_answers(tmp_path):
    h = launch(tmp_path, broker="kafka", broker_impl="tansu")
    try:
        assert h.endpoint.impl.startswith("tansu ") and h.endpoint.impl.endswith("(kafka protocol)")
        assert "tansu" in h.endpoint.extra["image"]
    finally:
        h.stop()


def test_bad_limits_fail_before_anything_starts(tmp_path):
    with pytest.raises(ConfigError, match="--broker-memory 'lots'"):
        launch(tmp_path, broker_memory="lots")
    with pytest.raises(ConfigError, match="--broker-cpus"):
        launch(tmp_path, broker_cpus="99")
    assert not containers_of(os.getpid())


def test_port_in_use_is_one_clear_line(tmp_path, monkeypatch):
    import socket

    from testbed.launchers import docker
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        monkeypatch.setattr(docker, "_ports", lambda n: [s.getsockname()[1]] * n)
        with pytest.raises(BrokerError, match=r"port \d+ on 127.0.0.1 is in use"):
            launch(tmp_path)
    assert not containers_of(os.getpid())


def test_container_exiting_during_start_up_shows_its_log(tmp_path, monkeypatch):
    from testbed.launchers import docker
    real = docker.container_spec

    def broken(cfg, spec):
        kwargs, url, port = real(cfg, spec)
        return {"command": ["redis-server", "--port", "not-a-port"]}, url, port
    monkeypatch.setattr(docker, "container_spec", broken)
    with pytest.raises(BrokerError) as err:
        launch(tmp_path)
    msg = str(err.value)
    assert "exited during start-up" in msg and "last log lines" in msg and "not-a-port" in msg, msg
    assert "\n" not in msg
    assert not containers_of(os.getpid())
    assert "not-a-port" in (tmp_path / "broker-redis.log").read_text()


def test_no_build_names_the_command(tmp_path, monkeypatch, capsys):
    """The official image cannot be pulled and the local one is missing: --no-build says what to run."""
    from testbed.launchers import engine as docker_engine, images as docker_images
    spec = docker_images.ImageSpec("redis", "redis", "", "testbed-absent/none:0", "testbed/absent:0", "7.0.15",
                                   ("redis-server",))
    with pytest.raises(BrokerError, match=r"images --build"):
        docker_images.ensure(docker_engine.client(), spec, no_build=True)
    err = capsys.readouterr().err
    assert "pulling testbed-absent/none:0 failed" in err and len(err.strip().splitlines()) == 1


def test_image_that_cannot_be_built_is_one_clear_line(tmp_path):
    from testbed.launchers import engine as docker_engine, images as docker_images
    client = docker_engine.client()
    spec = docker_images.ImageSpec("redis", "redis", "", "testbed-absent/none:0", "testbed/unbuildable:0",
                                   "0", ("testbed-no-such-package",))
    def stopped():
        return {c.id for c in client.containers.list(all=True, filters={"status": "exited"})}
    before = stopped()
    lines = []
    with pytest.raises(BrokerError) as err:
        docker_images.build_image(client, spec, progress=lines.append, force=True)
    msg = str(err.value)
    assert msg.startswith("building testbed/unbuildable:0 failed") and "\n" not in msg, msg
    assert "testbed-no-such-package" in msg
    with pytest.raises(Exception):
        client.images.get("testbed/unbuildable:0")
    assert stopped() <= before  # the failed step's container was removed (forcerm)


def test_images_build_is_cached():
    """make setup built them; a second --build builds nothing and is quick."""
    t = time.monotonic()
    r = cli("-m", "testbed.brokers", "images", "--build", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "building" not in r.stderr
    from testbed.launchers.images import IMAGES
    for spec in IMAGES.values():
        assert spec.local in r.stdout
    assert time.monotonic() - t < 30


def test_cleanup_removes_leftovers_not_live_runs(tmp_path):
    from testbed.launchers import docker, engine as docker_engine, images as docker_images
    client = docker_engine.client()
    image, _ = docker_images.ensure(client, docker_images.IMAGES["redis"], no_build=True)
    dead = subprocess.run([PY, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    base = {"testbed": "1", "testbed.run_id": f"cleanup-{os.getpid()}"}
    left = client.containers.run(image, ["sleep", "60"], detach=True, network_mode="host",
                                 labels={**base, "testbed.owner_pid": dead.stdout.strip(),
                                         "testbed.owner_start": "1"})
    live = client.containers.run(image, ["sleep", "60"], detach=True, network_mode="host",
                                 labels={**base, **docker._owner_labels()})
    try:
        lines = docker.cleanup()
        names = client.containers.list(all=True, filters={"label": f"testbed.run_id=cleanup-{os.getpid()}"})
        assert [c.id for c in names] == [live.id], lines
        assert any("left alone" in ln for ln in lines) and any(left.name in ln for ln in lines)
        r = cli("-m", "testbed.brokers", "cleanup")
        assert r.returncode == 0 and "docker:" in r.stdout, r.stdout + r.stderr
    finally:
        for c in (left, live):
            try:
                c.remove(force=True)
            except Exception:  # noqa: BLE001 - already removed by the cleanup
                pass
