"""The command line: bad input is one clear line and exit 2 with nothing written; Ctrl-C stops
everything, keeps what was measured (complete=false) and exits 130."""
import csv
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "testbed.run", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


BAD = [
    (["--broker", "kafak"], "kafak"),
    (["--broker", "nosuch"], "nosuch"),
    (["--rate", "-5"], "--rate"),
    (["--rate", "0"], "--rate"),
    (["--producer-rate", "0"], "--producer-rate"),
    (["--consumer-rate", "-1"], "--consumer-rate"),
    (["--duration", "1", "--warmup", "2"], "--duration"),
    (["--message-bytes", "10"], "--message-bytes"),
    (["--fanout", "zipf:3"], "--fanout"),
    (["--arrival", "sometimes"], "--arrival"),
    (["--replicas", "0"], "--replicas"),
    (["--broker", "zeromq", "--broker-opt", "hwn=5"], "hwn"),
    (["--rate", "fast"], "fast"),
    (["--seed", "-1"], "--seed -1"),
    (["--seed", "4294967296"], "--seed 4294967296"),
    (["--duration", "1e9"], "--duration 1e+09"),
    (["--rate", "1e300"], "--rate 1e+300"),
    (["--rate", "1e-300"], "at least one frame"),
    # broker flags: values checked whatever the broker; a URL picks the broker (testbed/broker_flags.py)
    (["--broker", "inproc", "--broker-cpus", "99"], "--broker-cpus '99'"),
    (["--broker", "inproc", "--broker-heap", "lots"], "--broker-heap 'lots'"),
    (["--broker", "zeromq", "--broker-memory", "lots"], "--broker-memory 'lots'"),
    (["--broker", "kafka", "--broker-url", "http://x"], "--broker-url 'http://x' is not allowed for kafka"),
    (["--broker", "redis", "--launcher", "local", "--broker-url", "redis://127.0.0.1:1/0"], "--launcher local"),
    (["--broker", "nats", "--launcher", "docker", "--broker-url", "nats://127.0.0.1:1"], "--launcher docker"),
    (["--broker", "inproc", "--broker-url", "tcp://127.0.0.1:1"], "--broker inproc"),
    (["--broker", "zeromq", "--broker-url", "redis://127.0.0.1:1/0"], "tcp://HOST:PORT"),
    (["--broker", "redis", "--broker-impl", "tansu"], "--broker-impl 'tansu'"),
    (["--broker", "kafka", "--broker-impl", "nope"], "apache, tansu"),
    (["--broker", "redis", "--broker-url", "redis://127.0.0.1:1/0", "--fault", "kill-broker@1s"], "external"),
]


@pytest.mark.parametrize("args,named", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, args, named):
    out = tmp_path / "run"
    p = cli(*args, "--out", str(out))
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert named in lines[0]
    assert "Traceback" not in p.stderr
    assert not out.exists(), "nothing half-written"


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    p = cli("--out", str(blocker / "run"), "--duration", "2", "--warmup", "1")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "--out" in p.stderr


def test_existing_run_is_never_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.csv").write_text("keep me")
    p = cli("--out", str(out), "--duration", "2", "--warmup", "1")
    assert p.returncode == 2 and "already holds a run" in p.stderr
    assert (out / "summary.csv").read_text() == "keep me"


@pytest.mark.parametrize("content,named", [
    ("rate: [1, 2\n", "not valid YAML"),
    ("rate: 10\nbogus_key: 1\n", "bogus_key"),
    ("rate: lots\n", "rate"),
    ("- just\n- a list\n", "mapping"),
])
def test_bad_config_file(tmp_path, content, named):
    f = tmp_path / "c.yaml"
    f.write_text(content)
    p = cli("--config", str(f), "--out", str(tmp_path / "run"))
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert named in p.stderr
    assert not (tmp_path / "run").exists()


def test_missing_config_file(tmp_path):
    p = cli("--config", str(tmp_path / "nope.yaml"))
    assert p.returncode == 2 and "nope.yaml" in p.stderr


def test_config_file_and_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("broker: inproc\nrate: 30\nconsumer-rate: 500\nduration: 2\nwarmup: 0.5\nfanout: 2\n")
    out = tmp_path / "run"
    p = cli("--config", str(f), "--rate", "40", "--out", str(out), "--quiet")
    assert p.returncode == 0, p.stderr
    row = next(csv.DictReader(open(out / "summary.csv")))
    assert float(row["offered_rate"]) == 40.0  # the flag overrides the file
    assert float(row["consumer_rate"]) == 500.0 and row["fanout"] == "2"  # the file overrides defaults
    assert "e2e p50" in p.stdout and "lost 0" in p.stdout


def test_help_explains():
    p = cli("--help")
    assert p.returncode == 0
    for flag in ("--broker", "--rate", "--arrival", "--producer-rate", "--consumer-rate", "--fanout",
                 "--replicas", "--batch-max", "--batch-wait-ms", "--service-dist", "--service-mode",
                 "--message-bytes", "--duration", "--warmup", "--drain", "--seed", "--out", "--no-trace",
                 "--config"):
        assert flag in p.stdout


def test_ctrl_c_stops_everything_and_keeps_partial_results(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "testbed.run", "--broker", "zeromq", "--replicas", "2",
                             "--duration", "60", "--warmup", "1", "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 60
        children = []
        while time.monotonic() < deadline:
            children = parent.children(recursive=True)
            if len(children) >= 3 and (out / "summary.csv").exists() is False and time.monotonic():
                break
            time.sleep(0.2)
        time.sleep(3)  # let the load run a little
        children = parent.children(recursive=True)
        assert len(children) >= 3, "stage A and two stage B processes"
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"left running: {alive}"
    row = next(csv.DictReader(open(out / "summary.csv")))
    assert row["complete"] == "false"
    assert int(row["sent"]) > 0
    assert (out / "run.json").exists() and (out / "timeseries.csv").exists()
