"""`python -m testbed.run --broker kafka` end to end with the local launcher: Apache Kafka by default,
tansu with --broker-impl tansu. What the run folder says about the broker, and that no JVM or tansu
process outlives a run or a Ctrl-C. Short runs (2 s of load): behaviour, not speed."""
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

from brokers.kafka.dist import KAFKA_VERSION

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT = ["--broker", "kafka", "--launcher", "local", "--duration", "2", "--warmup", "0.5", "--drain", "5",
         "--rate", "100", "--arrival", "constant", "--fanout", "1", "--producer-rate", "inf",
         "--consumer-rate", "inf", "--message-bytes", "1024"]


def gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def read_run(out: str) -> tuple[dict, dict]:
    with open(os.path.join(out, "summary.csv")) as fh:
        row = next(csv.DictReader(fh))
    with open(os.path.join(out, "run.json")) as fh:
        meta = json.load(fh)
    return row, meta


@pytest.mark.parametrize("impl, label, extra", [
    ("", f"apache-kafka {KAFKA_VERSION}", ["--replicas", "2"]),
    ("tansu", "tansu 0.6.0 (kafka protocol)", []),
])
def test_short_run_reports_the_implementation_and_leaves_nothing(tmp_path, impl, label, extra):
    out = str(tmp_path / "run")
    args = SHORT + extra + (["--broker-impl", impl] if impl else []) + ["--out", out]
    done = subprocess.run([sys.executable, "-m", "testbed.run", "--quiet", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    row, meta = read_run(out)
    assert row["broker_impl"] == label and meta["broker"]["impl"] == label
    assert row["complete"] in ("True", "true", "1")
    assert int(row.get("lost", 0) or 0) == 0
    launch = meta["broker"]["launch"]
    assert gone(launch["pid"]), f"broker process {launch['pid']} outlived the run"
    assert not os.path.exists(launch["tmp_dir"]), "the broker's temporary folder was left behind"
    log = os.path.join(out, "broker-tansu.log" if impl else "broker-kafka.log")
    assert os.path.isfile(log)
    if not impl:
        assert f"Kafka version: {KAFKA_VERSION}" in open(log).read()  # the JVM said so itself


def _kafka_jvm(pid: int):
    """The pid of the Kafka broker JVM under ``pid``, or None (a short-lived java step, such as the
    storage format, may be a zombie or gone by the time we look: skip it)."""
    for p in psutil.Process(pid).children(recursive=True):
        try:
            if p.name() == "java" and "kafka.Kafka" in p.cmdline():
                return p.pid
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
    return None


def test_ctrl_c_during_a_kafka_run_leaves_no_jvm(tmp_path):
    out = str(tmp_path / "run")
    err_path = str(tmp_path / "stderr")
    args = SHORT[:]
    args[args.index("--duration") + 1] = "60"
    with open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "testbed.run", *args, "--out", out], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=err, text=True, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 90
        jvm = None
        while time.monotonic() < deadline:
            if jvm is None:
                jvm = _kafka_jvm(proc.pid)
            if "load]" in open(err_path).read():
                break
            assert proc.poll() is None, open(err_path).read()
            time.sleep(0.2)
        assert jvm is not None, "no Kafka JVM was seen under the run"
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C does: the whole foreground group
        assert proc.wait(60) == 130, open(err_path).read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert gone(jvm), f"the Kafka JVM {jvm} outlived a Ctrl-C"
    _, meta = read_run(out)
    assert meta["complete"] is False
