"""A run leaves nothing behind, however it ends (testbed/launchers/lifeline.py, watchdog.py, cleanup.sweep).

20 runs of ``python -m testbed.run`` are interrupted at seeded random moments (start-up, load, or while
they stop) with SIGINT, SIGTERM, SIGKILL, or SIGINT then SIGKILL, over every broker with the local
launcher and, where an engine answers, a few with the docker launcher. Afterwards nothing of theirs is
left: no process (found by an environment token every process a run starts inherits, by command lines
and working directories naming the run's temporary folders, by the process tree seen while it ran), no
temporary folder (owner files), no listening port of the run, no container or network (owner labels).
Then the lifelines one at a time: the parent-death signal without the watchdog, the watchdog where there
is no parent-death signal, and the start-up sweep (folders, containers) for what escaped both.
"""
from __future__ import annotations

import glob
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

import psutil
import pytest

from tests.docker_required import engine_or_skip

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 13
TMP_PREFIX = os.path.join(tempfile.gettempdir(), "testbed-")
#: seconds from the start of the process over which the moment is drawn: start-up and the first seconds
#: of load (RabbitMQ and Kafka take a few seconds to start)
WINDOW_S = {"inproc": 3.0, "zeromq": 3.5, "redis": 3.5, "nats": 3.5, "rabbitmq": 7.0, "kafka": 8.0}
LOCAL = ["inproc", "zeromq", "redis", "rabbitmq", "kafka", "nats"] * 2 + ["zeromq", "redis", "rabbitmq", "nats"]
DOCKER = ["redis", "nats", "redis", "nats"]
SIGNALS = ("SIGINT", "SIGTERM", "SIGKILL", "SIGINT+SIGKILL")
RUN = ["--duration", "30", "--warmup", "0.5", "--drain", "1", "--rate", "50", "--replicas", "2"]
SETTLE_S = 20.0  # how long after the run's exit its watchdog may take to remove what is left
#: a container takes longer to come than a local process (the engine's round trips)
DOCKER_EXTRA_S = 2.5


def plan(brokers: list[str], launcher: str, seed: int) -> list[tuple[str, str, str, float]]:
    """(broker, launcher, signal, moment) per run: every signal once in every four runs, in a random
    order; the moment uniform over the broker's window."""
    rng = random.Random(seed)
    sigs: list[str] = []
    while len(sigs) < len(brokers):
        sigs += rng.sample(SIGNALS, len(SIGNALS))
    lo, extra = (1.0, DOCKER_EXTRA_S) if launcher == "docker" else (0.2, 0.0)
    return [(b, launcher, sig, round(rng.uniform(lo, WINDOW_S[b] + extra), 2)) for b, sig in zip(brokers, sigs)]


def _mine(d: str, pid: int) -> bool:
    try:
        with open(os.path.join(d, "owner")) as fh:
            return fh.read().split()[0] == str(pid)
    except (OSError, IndexError):
        return False


def run_dirs(pid: int) -> set[str]:
    return {d for d in glob.glob(TMP_PREFIX + "*") if _mine(d, pid)}


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def listening_ports(procs) -> set[int]:
    ports = set()
    for p in procs:
        try:
            ports |= {c.laddr.port for c in p.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
        except psutil.Error:
            pass
    return ports


def tokened(token: str) -> list[str]:
    """Processes whose environment carries ``token`` (every process a run starts inherits it)."""
    found = []
    for p in psutil.process_iter(["name"]):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and p.environ().get("TESTBED_TEST_TOKEN") == token:
                found.append(f"{p.info['name']} pid {p.pid}")
        except psutil.Error:
            continue
    return found


def naming(dirs: set[str]) -> list[str]:
    """Processes whose command line or working directory names one of ``dirs``."""
    found = []
    for p in psutil.process_iter(["name", "cmdline", "cwd"]):
        texts = [*(p.info["cmdline"] or []), p.info["cwd"] or ""]
        if any(d in t for d in dirs for t in texts):
            found.append(f"{p.info['name']} pid {p.pid}")
    return found


def listeners(ports: set[int]) -> list[str]:
    return [f"127.0.0.1:{c.laddr.port} (pid {c.pid})" for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port in ports]


def docker_left(pid: int) -> list[str]:
    from testbed.launchers import engine
    client = engine.client()
    try:
        label = {"label": f"testbed.owner_pid={pid}"}
        return [f"container {c.name}" for c in client.containers.list(all=True, filters=label)] + \
               [f"network {n.name}" for n in client.networks.list(filters=label)]
    finally:
        client.close()


def interrupt(tmp_path, i: int, broker: str, launcher: str, sig: str, at_s: float) -> tuple[str, bool]:
    """One run, interrupted ``at_s`` seconds after it started: (what it left, '' if nothing; whether its
    load had started then)."""
    token = f"interrupts-{SEED}-{i}-{os.getpid()}"
    err = tmp_path / f"run{i}.err"
    with open(err, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "testbed.run", "--broker", broker, "--launcher", launcher,
                                 *RUN, "--out", str(tmp_path / f"run{i}")], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=fh, env={**os.environ, "TESTBED_TEST_TOKEN": token},
                                start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    root = psutil.Process(proc.pid)
    seen: dict[int, tuple[psutil.Process, str]] = {}  # every process of the run's tree, with its name
    dirs: set[str] = set()
    ports: set[int] = set()
    start = time.monotonic()
    try:
        while time.monotonic() - start < at_s and proc.poll() is None:  # what the run has, as it grows
            try:
                kids = root.children(recursive=True)
            except psutil.Error:
                kids = []
            for k in kids:
                if k.pid not in seen:
                    try:
                        seen[k.pid] = (k, k.name())
                    except psutil.Error:
                        continue
            dirs |= run_dirs(proc.pid)
            ports |= listening_ports(kids)
            time.sleep(0.1)
        assert proc.poll() is None, f"run {i} ({broker}) ended by itself: {err.read_text()[-500:]}"
        loading = "s load]" in err.read_text()  # the progress line of the first second of load
        first, _, then = sig.partition("+")
        proc.send_signal(getattr(signal, first))
        if then:
            time.sleep(random.Random(SEED + i).uniform(0.1, 1.0))  # while it stops
            if proc.poll() is None:
                proc.send_signal(getattr(signal, then))
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    dirs |= run_dirs(proc.pid)
    deadline = time.monotonic() + SETTLE_S
    while True:
        left = [f"process {name} pid {p.pid}" for p, name in seen.values() if _alive(p)]
        left += [f"folder {d}" for d in sorted(dirs | run_dirs(proc.pid)) if os.path.exists(d)]
        left += [f"process (token) {w}" for w in tokened(token)]
        left += [f"process (names a folder) {w}" for w in naming(dirs)]
        left += [f"listener {w}" for w in listeners(ports)]
        if launcher == "docker":
            left += docker_left(proc.pid)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    what = f"run {i}: {broker}/{launcher} {sig} at {at_s}s (exit {proc.returncode}) left {left}"
    return (what if left else ""), loading


def _interrupt_all(tmp_path, runs) -> list[bool]:
    """Every run interrupted and checked; whether each one's load had started at its moment."""
    results = [interrupt(tmp_path, i, *run) for i, run in enumerate(runs)]
    problems = [p for p, _ in results if p]
    assert not problems, "\n".join(problems)
    return [had for _, had in results]


@pytest.mark.slow
def test_interrupted_local_runs_leave_nothing(tmp_path):
    runs = plan(LOCAL, "local", SEED)
    loading = _interrupt_all(tmp_path, runs)
    assert any(loading) and not all(loading), f"moments should hit both start-up and load: {loading}"


@pytest.mark.slow
def test_interrupted_docker_runs_leave_nothing(tmp_path):
    engine_or_skip()
    runs = plan(DOCKER, "docker", SEED + 1)
    loading = _interrupt_all(tmp_path, runs)
    assert any(loading), f"at least one run should be interrupted during its load: {loading}"


def test_plan_mixes_signals_brokers_and_moments():
    runs = plan(LOCAL, "local", SEED) + plan(DOCKER, "docker", SEED + 1)
    assert len(runs) == 20
    assert {r[2] for r in runs} == set(SIGNALS)
    assert {r[0] for r in runs} == set(WINDOW_S)
    moments = [r[3] for r in runs]
    assert min(moments) < 1.0 < 3.0 < max(moments) and len(set(moments)) >= 15, "start-up and load both hit"


# -- the lifelines one at a time ----------------------------------------------------------------------
OWNER = """
import json, os, signal, sys, threading
from testbed.config import RunConfig
from testbed.launchers import lifeline
from testbed.launchers.local import launch
got = {}
if sys.argv[4] == "docker":
    from testbed.launchers.docker import launch
start = lambda: got.update(h=launch(RunConfig(broker="redis", launcher=sys.argv[4]), "owner", sys.argv[1]))
if sys.argv[2] == "thread":  # from a worker thread: no parent-death signal
    t = threading.Thread(target=start)
    t.start()
    t.join()
else:
    start()
if sys.argv[3] == "no-watchdog":
    os.kill(lifeline.watchdog_pid(), signal.SIGKILL)
print(json.dumps(got["h"].endpoint.extra), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_owner(tmp_path, thread: bool, watchdog: bool, launcher: str = "local") -> dict:
    """A process that starts a redis and is SIGKILLed; the broker's launch facts."""
    r = subprocess.run([sys.executable, "-c", OWNER, str(tmp_path), "thread" if thread else "main",
                        "watchdog" if watchdog else "no-watchdog", launcher], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stderr
    return json.loads(r.stdout.splitlines()[0])


def gone_within(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_the_broker_dies_with_its_killed_owner_and_the_sweep_removes_its_folder(tmp_path):
    """Parent-death signal alone (the watchdog killed first): the broker dies at once; its folder is
    left to the next run's sweep, which spares a live run's broker."""
    from testbed.launchers.cleanup import sweep
    from testbed.launchers.local import launch
    from testbed.config import RunConfig
    facts = killed_owner(tmp_path, thread=False, watchdog=False)
    assert gone_within(facts["pid"], 2.0), "the broker outlived its SIGKILLed owner"
    assert os.path.isdir(facts["tmp_dir"]), "no watchdog: the folder is the sweep's to remove"
    live = launch(RunConfig(broker="redis", launcher="local"), "live", str(tmp_path / "live"))
    try:
        lines = sweep()
        assert any(facts["tmp_dir"] in ln for ln in lines), lines
        assert not os.path.exists(facts["tmp_dir"])
        assert live.server.alive() and os.path.isdir(live.endpoint.extra["tmp_dir"]), "a live run was swept"
        assert not [ln for ln in lines if live.endpoint.extra["tmp_dir"] in ln]
    finally:
        live.stop()


def test_the_watchdog_removes_what_the_parent_death_signal_does_not_reach(tmp_path):
    """Started from a worker thread (no parent-death signal): the owner's watchdog kills the broker's
    process group and removes its folder once the owner is SIGKILLed, then exits."""
    facts = killed_owner(tmp_path, thread=True, watchdog=True)
    assert gone_within(facts["pid"], 10.0), "the watchdog did not kill the broker"
    deadline = time.monotonic() + 5.0
    while os.path.exists(facts["tmp_dir"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(facts["tmp_dir"])


def test_a_broker_started_off_the_main_thread_outlives_that_thread(tmp_path):
    """The parent-death signal fires when the starting thread ends: off the main thread it is not set,
    so a broker a worker thread started keeps running after the thread is gone."""
    from testbed.config import RunConfig
    from testbed.launchers.local import launch
    got = {}
    t = threading.Thread(target=lambda: got.update(h=launch(RunConfig(broker="redis", launcher="local"), "t",
                                                            str(tmp_path))))
    t.start()
    t.join()
    h = got["h"]
    try:
        time.sleep(0.5)
        assert h.server.alive()
    finally:
        h.stop()


def test_the_sweep_removes_the_container_of_a_killed_owner_whose_watchdog_died_too(tmp_path):
    """Labels decide: the container of a dead owner goes, the container of a live one stays."""
    engine_or_skip()
    from testbed.config import RunConfig
    from testbed.launchers import docker
    from testbed.launchers.cleanup import sweep
    facts = killed_owner(tmp_path, thread=False, watchdog=False, launcher="docker")
    time.sleep(1.0)  # no watchdog: nothing removes it meanwhile
    client = docker.engine.client()
    try:
        assert client.containers.get(facts["container"]).status == "running"
        live = docker.launch(RunConfig(broker="redis", launcher="docker"), "live", str(tmp_path / "live"))
        try:
            lines = sweep(docker=True)
            assert any(facts["container"] in ln for ln in lines), lines
            names = [c.name for c in client.containers.list(all=True, filters={"label": "testbed=1"})]
            assert facts["container"] not in names
            assert live.endpoint.extra["container"] in names, "a live run's container was swept"
        finally:
            live.stop()
    finally:
        client.close()
