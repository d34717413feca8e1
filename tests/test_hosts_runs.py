"""Runs over simulated hosts (root, a real Ray cluster on this machine): ``testbed.run --hosts FILE --place``.

One set of four hosts for the module, brought up once with ``python -m testbed.hosts up`` (runs attach to
it): cam (+1000 s), cam2 (+42.25 s, a 50 Mbit/s link), mq (0), gpu1 (-37.5 s). Stage A on cam, the broker
on mq, stage B on gpu1, for zeromq, redis and Apache Kafka: nothing lost, each host's estimated offset
within its stated uncertainty of the configured one, no negative latency, and e2e p50 within 10% + 0.5 ms
of the same seed on one host (the medians of three alternated pairs where the first pair misses); 150 KB
messages to the 50 Mbit/s host: hop p50 rises by at least the serialisation time; partition-host on the
broker's host with at-least-once Redis: nothing acknowledged is lost and the recovery is timed; two camera
streams on two hosts (issue 21): order and loss per stream; and, last, a host whose Ray node dies ends
the run naming it. Short runs: behaviour, not speed."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import yaml

from testbed.config import RunConfig, validate
from testbed import errors
from testbed.orchestration.execute import Run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="simulated hosts need root (namespaces, a bridge, tc)"),
    pytest.mark.skipif(__import__("importlib").util.find_spec("ray") is None, reason="needs the hosts extra (ray)"),
]

SPEC = {"ray": "simulated", "hosts": {"cam": {"cpus": 1, "clock_offset_s": 1000},
                                      "cam2": {"cpus": 1, "clock_offset_s": 42.25, "link_mbit": 50},
                                      "mq": {"cpus": 1},
                                      "gpu1": {"cpus": 1, "clock_offset_s": -37.5}}}
PLACE = {"stage_a": ["cam"], "broker": ["mq"], "stage_b": ["gpu1"]}
BASE = dict(arrival="poisson", rate=50.0, fanout="2", producer_rate=float("inf"), consumer_rate=500.0,
            message_bytes=2000, duration=3.0, warmup=1.0, drain=4.0, seed=5)


def cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "testbed.hosts", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


def leftovers(ident: str) -> list[str]:
    out = []
    if f"tbh{ident}" in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout:
        out.append("namespace")
    if f"tbh{ident}" in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout:
        out.append("link")
    procs = subprocess.run(["pgrep", "-af", f"tbh-{ident}"], capture_output=True, text=True).stdout
    return out + [ln for ln in procs.splitlines() if "pgrep" not in ln]


@pytest.fixture(scope="module")
def hosts_file(tmp_path_factory):
    from testbed import hosts
    if hosts.up_state() is not None:
        pytest.skip("simulated hosts are up already (python -m testbed.hosts status): this module brings its own")
    path = tmp_path_factory.mktemp("hosts") / "hosts.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    r = cli("up", str(path))
    assert r.returncode == 0, r.stderr
    st = hosts.up_state()
    try:
        yield {"path": str(path), "state": st}
    finally:
        r = cli("down")
        assert r.returncode == 0, r.stderr
        assert not leftovers(st.id), leftovers(st.id)


def run(tmp_path, name, hosts_file=None, place=None, progress=None, **kw):
    extra = {"hosts": hosts_file["path"], "place": dict(place or PLACE)} if hosts_file else {}
    cfg = RunConfig(**{**BASE, "out": str(tmp_path / name), **extra, **kw})
    validate(cfg)
    res = Run(cfg, progress=progress).execute()
    with open(os.path.join(res.run_dir, "run.json")) as fh:
        meta = json.load(fh)
    with open(os.path.join(res.run_dir, "summary.csv")) as fh:
        row = next(csv.DictReader(fh))
    return res, row, meta


def messages(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "messages.csv")) as fh:
        return list(csv.DictReader(fh))


def check_placed(res, row, meta, place=PLACE):
    """Nothing lost; each host's offset within its stated uncertainty of the configured one; every latency
    that crosses hosts non-negative beyond the uncertainty; the hosts columns filled."""
    s = res.summary
    assert res.complete and s["lost"] == 0 and s["sent"] == s["received"] > 0, (s["sent"], s["received"], s["error"])
    h = meta["hosts"]
    assert h["placement"] == {r: place.get(r, [""]) for r in ("stage_a", "stage_b", "broker")}
    for name, clock in h["clocks"].items():
        configured = round(SPEC["hosts"][name].get("clock_offset_s", 0) * 1e9)
        error_us = abs(clock["clock_offset_ns"] - configured) / 1e3
        assert error_us <= clock["clock_uncertainty_us"], (name, error_us, clock)
        assert clock["clock_samples"] >= 3 and clock["clock_rtt_us"]["min"] > 0  # start, during, end
    assert h["negative_latencies"] == {"transit": {"count": 0, "worst_us": 0.0}, "e2e": {"count": 0, "worst_us": 0.0}}
    unc = float(row["clock_uncertainty_us"])
    u = {n: c["clock_uncertainty_us"] for n, c in h["clocks"].items()}
    want = sum(max(u[x] for x in place[r]) for r in ("stage_a", "stage_b") if r in place)  # every pair ran
    assert unc == pytest.approx(want, abs=0.002) and 0 < unc < 1000
    assert row["hosts"] == " ".join(f"{r}={','.join(place[r])}" for r in ("stage_a", "stage_b", "broker") if r in place)
    rows = messages(res.run_dir)
    e2e = np.array([float(r["e2e_us"]) for r in rows if r["status"] != "lost"])
    assert e2e.min() > -unc and np.median(e2e) < 1e6, "on one timeline (the hosts are seconds apart)"
    return s


def alternated(first, second, fits) -> tuple[list[float], list[float]]:
    """``first(i)`` and ``second(i)`` measured one after the other, as pairs, on this shared 2-core machine:
    the first pair alone where ``fits(a, b)``; else two pairs more, for the caller to compare by medians (a
    CI run once read redis 150 KB at 6.33 ms over hosts against 5.19 ms on one host in a single pair; the
    same pair read 5.46 / 5.19 ms before)."""
    a, b = [first(0)], [second(0)]
    if not fits(a[0], b[0]):
        for i in (1, 2):
            a.append(first(i))
            b.append(second(i))
    return a, b


@pytest.mark.parametrize("broker, extra", [
    ("zeromq", {}),
    pytest.param("redis", {"launcher": "local", "message_bytes": 150528},
                 marks=pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")),
    # Apache Kafka on mq: it listens on, and advertises, mq's address (the recipe's ctx.host)
    pytest.param("kafka", {"launcher": "local", "drain": 6.0},
                 marks=pytest.mark.skipif(shutil.which("java") is None, reason="no Java runtime for Apache Kafka")),
])
def test_three_hosts_lose_nothing_and_match_one_host(hosts_file, tmp_path, broker, extra):
    place = PLACE if broker != "zeromq" else {"stage_a": ["cam"], "stage_b": ["gpu1"]}  # stage A binds it
    res, row, meta = run(tmp_path, "hosts", hosts_file, place, broker=broker, **extra)
    s = check_placed(res, row, meta, place)
    if broker == "redis":
        assert meta["broker"]["url"].startswith(f"redis://{hosts_file['state'].host('mq').address}:")
    if broker == "kafka":
        assert meta["broker"]["launch"]["host"] == "mq"
        # stage B on gpu1 could only fetch because the broker advertised mq's address, not 127.0.0.1
        assert meta["broker"]["url"].startswith(f"kafka://{hosts_file['state'].host('mq').address}:")
    def hosts(i):
        if i == 0:
            return s["e2e_p50_ms"]
        res, row, meta = run(tmp_path, f"hosts{i}", hosts_file, place, broker=broker, **extra)
        return check_placed(res, row, meta, place)["e2e_p50_ms"]

    def one_host(i):
        one, one_row, one_meta = run(tmp_path, f"one{i}", broker=broker, **extra)
        assert one.complete and one.summary["lost"] == 0 and one_meta["hosts"] is None and one_row["hosts"] == ""
        return one.summary["e2e_p50_ms"]

    def within(p50, p50_one):
        return abs(p50 - p50_one) <= 0.1 * p50_one + 0.5

    p50s, p50s_one = alternated(hosts, one_host, within)
    print(f"{broker}: e2e p50 {p50s} ms over hosts, {p50s_one} ms on one host; clock +-{row['clock_uncertainty_us']} us")
    assert within(float(np.median(p50s)), float(np.median(p50s_one))), (p50s, p50s_one)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_a_50_mbit_link_adds_the_serialisation_time_to_the_hop(hosts_file, tmp_path):
    """150,528 bytes at 50 Mbit/s take 24.1 ms on the wire: the consumer's host (cam2) has that link; the
    same run with the consumer on gpu1 (no cap) is the baseline."""
    serialisation_ms = 150528 * 8 / 50e6 * 1e3

    def hop(consumer):
        def measure(i):
            place = {"stage_a": ["cam"], "broker": ["mq"], "stage_b": [consumer]}
            res, row, meta = run(tmp_path, f"link-{consumer}{i}", hosts_file, place, broker="redis",
                                 launcher="local", message_bytes=150528, rate=8.0, fanout="1", duration=4.0)
            return check_placed(res, row, meta, place)["hop_p50_ms"]
        return measure

    def rises(base, shaped):
        return shaped - base >= serialisation_ms

    bases, shapeds = alternated(hop("gpu1"), hop("cam2"), rises)
    print(f"hop p50 {shapeds} ms at 50 Mbit/s, {bases} ms unshaped")
    assert rises(float(np.median(bases)), float(np.median(shapeds))), (shapeds, bases)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_partition_of_the_brokers_host_loses_nothing_acknowledged(hosts_file, tmp_path):
    res, row, meta = run(tmp_path, "partition", hosts_file, broker="redis", launcher="local",
                         delivery="at-least-once", duration=8.0, drain=6.0, faults=["partition-host:mq@2s:1s"])
    s = res.summary
    assert res.complete and s["lost_acked"] == 0 and s["lost"] == 0, s
    with open(os.path.join(res.run_dir, "faults.csv")) as fh:
        f = next(csv.DictReader(fh))
    assert f["kind"] == "partition-host" and f["target"] == "host:mq" and not f["error"], f
    assert float(f["end_s"]) - float(f["start_s"]) == pytest.approx(1.0, abs=0.3)
    assert f["recovered"].lower() == "true" and 0 <= float(f["recovery_s"]) < 5, f  # timed
    assert float(f["throughput_dip"]) > 0.5, "the broker's host was cut off"
    actions = [e["action"] for e in meta["faults"]["events"]]
    assert actions == ["partition", "heal"]
    assert meta["hosts"]["clocks"]["mq"]["clock_lost_exchanges"] >= 0


def test_two_camera_streams_on_two_hosts(hosts_file, tmp_path):
    """Issue 21 over hosts: stream 0 on cam, stream 1 on cam2 (each binds its own endpoint there); per stream,
    its own frames, nothing lost, in order."""
    place = {"stage_a": ["cam", "cam2"], "stage_b": ["gpu1"]}
    res, row, meta = run(tmp_path, "streams", hosts_file, place, broker="zeromq", streams=2, rate=60.0)
    s = check_placed(res, row, meta, place)
    assert s["streams"] == 2 and s["reordered"] == 0 and s["duplicated"] == 0
    assert meta["hosts"]["workers"] == {"stage A stream 0": "cam", "stage A stream 1": "cam2",
                                        "stage B replica 0": "gpu1", "broker": ""}
    st = hosts_file["state"]
    urls = meta["broker"]["url"].split(",")
    assert [u.split("//")[1].rsplit(":", 1)[0] for u in urls] == [st.host("cam").address, st.host("cam2").address]
    rows = [r for r in messages(res.run_dir) if r["status"] == "ok"]
    for stream in ("0", "1"):
        seqs = [int(r["seq"]) for r in rows if r["stream"] == stream]
        assert seqs and all(q % 2 == int(stream) for q in seqs)
        assert sorted(seqs) == list(range(int(stream), 2 * len(seqs), 2)), f"stream {stream}: nothing lost"
    # both hosts' clocks took part: their offsets are 957.75 s apart, and no e2e is anywhere near that
    assert max(float(r["e2e_us"]) for r in rows) < 1e6


def test_an_existing_ray_cluster_by_its_address(hosts_file, tmp_path):
    """--ray-address HEAD:PORT with the user's token (as on a real cluster): the hosts are the nodes'
    testbed_host resources; a host the cluster does not have is refused in one line, nothing written."""
    st = hosts_file["state"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=st.token_path)
    out = str(tmp_path / "ray")
    base = [sys.executable, "-m", "testbed.run", "--quiet", "--broker", "zeromq", "--ray-address", st.ray_address,
            "--duration", "2", "--warmup", "0.5", "--rate", "40", "--fanout", "1", "--message-bytes", "1024",
            "--producer-rate", "inf", "--consumer-rate", "inf"]
    bad = subprocess.run(base + ["--place", "stage_b=gpu7", "--out", out], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "gpu7" in bad.stderr, bad.stderr
    assert not os.path.exists(out)
    r = subprocess.run(base + ["--place", "stage_a=cam", "--place", "stage_b=gpu1", "--out", out], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "hosts: stage_a=cam stage_b=gpu1; clock uncertainty" in r.stdout
    meta = json.load(open(os.path.join(out, "run.json")))
    h = meta["hosts"]
    assert h["ray_address"] == st.ray_address and not h["simulated"] and h["orchestrator_address"] == st.bridge_address
    assert sorted(h["clocks"]) == sorted(SPEC["hosts"])
    for name, clock in h["clocks"].items():  # a real cluster's offsets are measured: here we know the truth
        error_us = abs(clock["clock_offset_ns"] - round(SPEC["hosts"][name].get("clock_offset_s", 0) * 1e9)) / 1e3
        assert error_us <= clock["clock_uncertainty_us"], (name, clock)
    with open(os.path.join(out, "summary.csv")) as fh:
        row = next(csv.DictReader(fh))
    assert row["lost"] == "0" and int(row["sent"]) > 0 and row["hosts"] == "stage_a=cam stage_b=gpu1"


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_a_host_whose_node_dies_ends_the_run_naming_it(hosts_file, tmp_path):
    """Last (it kills gpu1's Ray node): the run ends with one line naming gpu1 and writes what it measured."""
    from testbed.hosts import ray_nodes
    st = hosts_file["state"]
    lines, t = [], []

    def progress(line):  # the second second of load: gpu1's node goes
        lines.append(line)
        if len(lines) == 2:
            t.append(time.monotonic())
            threading.Thread(target=ray_nodes.stop_sessions, args=({"gpu1": st.nodes["gpu1"]},)).start()
    with pytest.raises(errors.TestbedError) as err:
        run(tmp_path, "dies", hosts_file, progress=progress, broker="redis", launcher="local", duration=20.0)
    took = time.monotonic() - t[0]
    msg = str(err.value)
    assert msg.startswith("host gpu1 is down") and "\n" not in msg, msg
    assert took < 10, "it ended soon after, not at the end of the load"
    with open(os.path.join(str(tmp_path / "dies"), "summary.csv")) as fh:
        row = next(csv.DictReader(fh))
    assert row["complete"].lower() == "false" and row["error"].startswith("host gpu1 is down") and int(row["sent"]) > 0
    meta = json.load(open(os.path.join(str(tmp_path / "dies"), "run.json")))
    assert meta["hosts"]["dead_hosts"] == ["gpu1"]
