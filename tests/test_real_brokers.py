"""Redis and RabbitMQ end to end through the command line, with private local brokers: what a run folder
records about the broker, and every bad input the issue lists (one line, non-zero exit, nothing left
running). Short runs (2 s of load): behaviour, not speed."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from testbed.config import RunConfig
from testbed.errors import BrokerError, ConfigError
from testbed.launchers import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BROKER_BINARIES = ("redis-server", "beam.smp", "epmd", "erl_child_setup")
SHORT = ["--duration", "2", "--warmup", "0.5", "--drain", "3", "--rate", "50", "--arrival", "constant",
         "--fanout", "1", "--producer-rate", "inf", "--consumer-rate", "inf", "--message-bytes", "1024"]
IMPL = {"redis": "redis 7", "rabbitmq": "rabbitmq 3"}


def cli(*args, timeout=90):
    return subprocess.run([sys.executable, "-m", "testbed.run", "--quiet", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def start_cli(*args, stderr_path):
    """A run in the background, in its own session (so our SIGINT reaches only it)."""
    return subprocess.Popen([sys.executable, "-m", "testbed.run", *args], cwd=ROOT, text=True,
                            stdout=subprocess.DEVNULL, stderr=open(stderr_path, "w"), start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert lines, "no error message"
    assert "Traceback" not in stderr, stderr
    assert lines[-1].startswith("testbed.run: error: "), stderr
    return lines[-1]


def broker_processes(root_pid: int) -> list[psutil.Process]:
    try:
        return [c for c in psutil.Process(root_pid).children(recursive=True) if c.name() in BROKER_BINARIES]
    except psutil.NoSuchProcess:
        return []


def wait_for(path: str, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and text in open(path).read():
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared in {path}: {open(path).read() if os.path.exists(path) else ''}")


def assert_gone(procs, tmp_dir=None):
    gone, alive = psutil.wait_procs(procs, timeout=5)
    assert not alive, f"still running: {[(p.pid, p.name()) for p in alive]}"
    if tmp_dir:
        assert not os.path.exists(tmp_dir), f"{tmp_dir} was not removed"


def read_run(out: str):
    summary = list(csv.DictReader(open(os.path.join(out, "summary.csv"))))[0]
    meta = json.load(open(os.path.join(out, "run.json")))
    return summary, meta


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory):
    """A private RabbitMQ for the external-launcher tests (started once: it takes seconds)."""
    from testbed.launchers.local import launch
    handle = launch(RunConfig(broker="rabbitmq", launcher="local"), "t-ext", str(tmp_path_factory.mktemp("tb-ext")))
    try:
        yield handle.endpoint
    finally:
        handle.stop()


# -- a good run ------------------------------------------------------------------------------------
@pytest.mark.parametrize("broker, opt", [("redis", "claim_idle_ms=5000"), ("rabbitmq", "prefetch=20")])
def test_local_run_records_the_broker(tmp_path, broker, opt):
    out = str(tmp_path / broker)
    r = cli("--broker", broker, "--launcher", "local", "--broker-opt", opt, "--broker-memory", "1g",
            *SHORT, "--out", out)
    assert r.returncode == 0, r.stderr
    summary, meta = read_run(out)
    assert summary["complete"] == "true"
    assert summary["broker_impl"].startswith(IMPL[broker]), summary["broker_impl"]
    assert summary["launcher"] == "local"
    assert int(summary["sent"]) == int(summary["received"]) == 100 and summary["lost"] == "0"
    b = meta["broker"]
    assert b["impl"] == summary["broker_impl"]
    import brokers
    assert set(b["options"]) == set(brokers.get(broker).OPTIONS), "every option, resolved, is recorded"
    key, value = opt.split("=")
    assert b["options"][key] == int(value)
    assert "not applied" in b["launch"]["broker_memory_applied"]
    assert os.path.exists(b["launch"]["log"]) and b["launch"]["log"].startswith(out)
    rows = list(csv.DictReader(open(os.path.join(out, "timeseries.csv"))))
    for col in ("broker_backlog", "broker_cpu_pct", "broker_rss_mb"):
        assert col in rows[0], f"timeseries.csv lacks {col}"
        assert any(row[col] not in ("", None) for row in rows), f"{col} never sampled"
    assert float(max(rows, key=lambda row: float(row["broker_rss_mb"] or 0))["broker_rss_mb"]) > 1.0
    # the broker and its folder are gone
    assert not psutil.pid_exists(b["launch"]["pid"]) or psutil.Process(b["launch"]["pid"]).status() == "zombie"
    assert not os.path.exists(b["launch"]["tmp_dir"])


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize("broker, url", [("redis", "redis://127.0.0.1:{port}/0"),
                                         ("rabbitmq", "amqp://guest:guest@127.0.0.1:{port}/%2F")])
def test_unreachable_external_broker(tmp_path, broker, url):
    out = str(tmp_path / "x")
    url = url.format(port=free_port())
    r = cli("--broker", broker, "--launcher", "external", "--broker-url", url, "--connect-timeout", "2",
            *SHORT, "--out", out)
    assert r.returncode == 1
    line = one_error_line(r.stderr)
    assert "unreachable" in line and str(url.split(":")[-1].split("/")[0]) in line, line
    if os.path.exists(os.path.join(out, "summary.csv")):  # the run folder says what happened
        summary, meta = read_run(out)
        assert summary["complete"] == "false" and "unreachable" in meta["error"]


def test_wrong_rabbitmq_credentials(tmp_path, rabbit):
    url = rabbit.url.replace("guest:guest@", "guest:wrong@")
    r = cli("--broker", "rabbitmq", "--launcher", "external", "--broker-url", url, *SHORT,
            "--out", str(tmp_path / "x"))
    assert r.returncode == 1
    line = one_error_line(r.stderr)
    assert "wrong user name or password" in line, line
    assert "wrong" not in line.split("@")[0].split("guest:")[-1], "the password is not printed"


def test_external_rabbitmq_run(tmp_path, rabbit):
    out = str(tmp_path / "ext")
    r = cli("--broker", "rabbitmq", "--launcher", "external", "--broker-url", rabbit.url, *SHORT, "--out", out)
    assert r.returncode == 0, r.stderr
    summary, meta = read_run(out)
    assert summary["launcher"] == "external" and summary["broker_impl"].startswith("rabbitmq 3")


def test_redis_block_ms_caps_an_idle_wait_and_still_delivers(tmp_path):
    """``block_ms`` caps XREADGROUP BLOCK: an idle receive gives up after it, not after the harness's
    timeout, and a message published later still arrives."""
    import dataclasses

    import brokers
    from testbed.harness.envelope import Envelope
    from testbed.launchers.local import launch
    handle = launch(RunConfig(broker="redis", launcher="local"), "t-block", str(tmp_path / "run"))
    try:
        waits = {}
        for block_ms in (0, 20):
            ep = dataclasses.replace(handle.endpoint, options={"block_ms": block_ms})
            b = brokers.get("redis")(ep)
            b.connect(10)
            b.ensure_topic(f"blk{block_ms}", 1)
            b.subscribe(f"blk{block_ms}", "g", "c0")
            t0 = time.monotonic()
            assert b.receive(4, 0.5) == []
            waits[block_ms] = time.monotonic() - t0
            b.publish_envelope(f"blk{block_ms}", Envelope(1, 1, 0, 1, time.monotonic_ns(), time.monotonic_ns(), b"x"))
            b.flush()
            got = []
            deadline = time.monotonic() + 5
            while not got and time.monotonic() < deadline:
                got = b.receive(4, 0.5)
            assert len(got) == 1
            b.close()
        assert waits[0] >= 0.45, waits      # blocked for the receive timeout
        assert waits[20] < 0.25, waits      # gave up after about 20 ms
    finally:
        handle.stop()


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_unknown_broker_option(tmp_path, broker):
    r = cli("--broker", broker, "--launcher", "local", "--broker-opt", "prefetchh=5", *SHORT,
            "--out", str(tmp_path / "x"))
    assert r.returncode == 2
    line = one_error_line(r.stderr)
    assert "'prefetchh'" in line and "allowed:" in line, line


def test_missing_binaries_name_the_package(monkeypatch, tmp_path):
    import dataclasses

    import brokers
    from testbed.launchers import local
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerError, match="redis-server"):
        local.launch(RunConfig(broker="redis", launcher="local"), "t", str(tmp_path))
    spec = brokers.spec("rabbitmq")
    impl = spec.impl()  # its server where none is
    server = dataclasses.replace(impl.local.server, path=str(tmp_path / "rabbitmq-server"))
    impl = dataclasses.replace(impl, local=dataclasses.replace(impl.local, server=server))
    with pytest.raises(BrokerError, match="Debian package 'rabbitmq-server'"):
        local.start(RunConfig(broker="rabbitmq", launcher="local"), "t", str(tmp_path), spec, impl)


def test_bad_broker_cpus_start_nothing(tmp_path):
    from testbed.launchers import local
    with pytest.raises(ConfigError, match="--broker-cpus '99'"):
        local.launch(RunConfig(broker="redis", launcher="local", broker_cpus="99"), "t", str(tmp_path))
    assert not os.listdir(tmp_path)


# -- failures during a run -------------------------------------------------------------------------
@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_broker_dies_mid_run(tmp_path, broker):
    out, err = str(tmp_path / "run"), str(tmp_path / "stderr")
    p = start_cli("--broker", broker, "--launcher", "local", *SHORT, "--duration", "30", "--out", out,
                  stderr_path=err)
    try:
        wait_for(err, "1s load", 60)
        procs = broker_processes(p.pid)
        victim = next(c for c in procs if c.name() in ("redis-server", "beam.smp"))
        victim.kill()
        rc = p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
    stderr = open(err).read()
    assert rc == 1, stderr
    line = one_error_line(stderr)
    assert "connection to the broker lost" in line, line
    summary, meta = read_run(out)
    assert summary["complete"] == "false"
    assert "connection to the broker lost" in meta["error"]
    assert_gone(procs, meta["broker"]["launch"]["tmp_dir"])


def test_sigint_during_a_run_stops_everything(tmp_path):
    out, err = str(tmp_path / "run"), str(tmp_path / "stderr")
    p = start_cli("--broker", "rabbitmq", "--launcher", "local", *SHORT, "--duration", "30", "--out", out,
                  stderr_path=err)
    try:
        wait_for(err, "1s load", 60)
        procs = broker_processes(p.pid)
        assert {c.name() for c in procs} >= {"beam.smp", "epmd"}
        p.send_signal(signal.SIGINT)
        rc = p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
    assert rc == 130, open(err).read()
    summary, meta = read_run(out)
    assert summary["complete"] == "false"
    assert_gone(procs, meta["broker"]["launch"]["tmp_dir"])


# -- leftovers of a run that was itself killed -------------------------------------------------------
# a broker that escaped both lifelines (lifeline.py): started from a worker thread (no parent-death
# signal), its owner's watchdog killed too; then the owner is SIGKILLed: no atexit, no stop()
ORPHAN = """
import json, os, signal, sys, threading
from testbed.config import RunConfig
from testbed.launchers import lifeline
from testbed.launchers.local import launch
got = {}
t = threading.Thread(target=lambda: got.update(h=launch(RunConfig(broker="redis", launcher="local"), "orphan",
                                                         sys.argv[1])))
t.start()
t.join()
os.kill(lifeline.watchdog_pid(), signal.SIGKILL)
print(json.dumps(got["h"].endpoint.extra), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_cleanup_removes_what_a_killed_run_left_and_spares_live_runs(tmp_path):
    from testbed.launchers.cleanup import cleanup_all
    from testbed.launchers.local import launch
    r = subprocess.run([sys.executable, "-c", ORPHAN, str(tmp_path / "orphan")], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    orphan = json.loads(r.stdout.splitlines()[0])
    assert psutil.pid_exists(orphan["pid"]), "the orphaned broker should still run before cleanup"
    live = launch(RunConfig(broker="redis", launcher="local"), "live", str(tmp_path))
    try:
        lines = cleanup_all()
        assert any(f"removed {orphan['tmp_dir']}" in ln for ln in lines), lines
        assert_gone([psutil.Process(orphan["pid"])] if psutil.pid_exists(orphan["pid"]) else [], orphan["tmp_dir"])
        assert live.processes[0].alive(), "a live run's broker was killed"
        assert os.path.isdir(live.endpoint.extra["tmp_dir"])
        assert any(ln.startswith("docker:") for ln in lines)
    finally:
        live.stop()
