"""End-to-end runs on the embedded brokers: rate matching, accounting, the files of a run folder."""
import csv
import json
import os

import pytest

import brokers
from testbed.config import RunConfig, validate
from testbed.orchestration.execute import execute

EMBEDDED = ["inproc", "zeromq"]


def run(tmp_path, name, **kw):
    base = dict(arrival="constant", fanout="1", producer_rate=2000.0, message_bytes=1024, duration=6.0,
                warmup=1.5, drain=1.0, seed=3, out=str(tmp_path / name))
    base.update(kw)
    cfg = RunConfig(**base)
    validate(cfg)
    return execute(cfg)


@pytest.mark.parametrize("broker", EMBEDDED)
def test_stable_run_at_rho_half(tmp_path, broker):
    r = run(tmp_path, broker, broker=broker, rate=50.0, consumer_rate=100.0)
    s = r.summary
    assert r.complete and s["complete"]
    assert s["rho"] == pytest.approx(0.5)
    assert s["stable"] is True
    assert s["backlog_max"] <= 10
    assert abs(s["backlog_growth"]) < 2.5
    assert s["lost"] == 0 and s["duplicated"] == 0 and s["reordered"] == 0
    assert s["sent"] == s["received"] == 300
    assert s["throughput_out"] == pytest.approx(50, rel=0.1)
    # service is a fixed 10 ms and the consumer is idle half the time: e2e p50 a little over 10 ms
    assert 10.0 <= s["e2e_p50_ms"] < 20.0
    assert s["service_p50_ms"] == pytest.approx(10.0, abs=1.0)
    assert s["limited_by"] == "none"
    assert s["rho_measured"] >= s["rho"]


@pytest.mark.parametrize("broker", EMBEDDED)
def test_overloaded_run_at_rho_one_and_a_half(tmp_path, broker):
    r = run(tmp_path, broker, broker=broker, rate=150.0, consumer_rate=100.0)
    s = r.summary
    assert s["rho"] == pytest.approx(1.5)
    assert s["stable"] is False
    # the backlog grows at (1.5 - 1) x the consumer's rate
    assert s["backlog_growth"] == pytest.approx(50.0, rel=0.2)
    assert s["throughput_out"] == pytest.approx(100.0, rel=0.1)
    assert s["throughput_in"] == pytest.approx(150.0, rel=0.1)
    assert s["stage_a_backlog_growth"] < 2  # stage A keeps up: the queue is in the broker
    assert s["limited_by"] == "stage_b"
    assert s["queue_p50_ms"] > 10 * s["hop_p50_ms"]  # the messages wait for stage B, not for the broker


def test_accounting_end_to_end_with_a_faulty_broker(tmp_path, monkeypatch):
    monkeypatch.setitem(brokers.REGISTRY, "faulty", "tests.faulty_broker:FaultyInproc")
    r = run(tmp_path, "faulty", broker="faulty", rate=50.0, consumer_rate=1000.0, duration=2.0, warmup=0.5)
    s = r.summary
    assert s["sent"] == 100
    assert s["lost"] == 1
    assert s["duplicated"] == 1
    assert s["received"] == 99
    rows = list(csv.DictReader(open(os.path.join(r.run_dir, "messages.csv"))))
    status = {}
    for row in rows:
        status.setdefault(int(row["seq"]), []).append(row["status"])
    assert status[5] == ["lost"]
    assert sorted(status[9]) == ["duplicate", "ok"]


def test_run_folder_contents(tmp_path):
    r = run(tmp_path, "files", broker="zeromq", rate=40.0, fanout="poisson:3", consumer_rate=500.0,
            duration=3.0, warmup=1.0)
    d = r.run_dir
    assert sorted(os.listdir(d)) == ["messages.csv", "run.json", "summary.csv", "timeseries.csv"]
    summary = list(csv.DictReader(open(os.path.join(d, "summary.csv"))))
    assert len(summary) == 1
    required = """run_id, broker, broker_impl, launcher, arrival, offered_rate, producer_rate, consumer_rate,
        fanout_mean, replicas, batch_max, message_bytes, duration_s, seed, sent, received, lost, duplicated,
        reordered, throughput_in, throughput_out, rho, backlog_max, backlog_growth, stable, e2e_p50_ms,
        e2e_p90_ms, e2e_p99_ms, e2e_p999_ms, e2e_max_ms, frame_p99_ms, publish_delay_p99_ms, transit_p50_ms,
        transit_p99_ms, wait_p50_ms, wait_p99_ms, service_p50_ms, service_p99_ms"""
    for col in (c.strip() for c in required.split(",")):
        assert col in summary[0], col
    assert summary[0]["broker_impl"].startswith("pyzmq")
    ts = list(csv.DictReader(open(os.path.join(d, "timeseries.csv"))))
    assert len(ts) >= 3
    assert {"t_s", "offered_frames", "produced", "consumed", "backlog", "e2e_p99_ms"} <= set(ts[0])
    meta = json.load(open(os.path.join(d, "run.json")))
    assert meta["config"]["fanout"] == "poisson:3" and meta["seed"] == 3
    assert meta["environment"]["cpu_count"] >= 1 and "numpy" in meta["environment"]["packages"]
    assert meta["broker"]["impl"] == summary[0]["broker_impl"]
    msgs = list(csv.DictReader(open(os.path.join(d, "messages.csv"))))
    assert len(msgs) == int(summary[0]["sent"])
    for m in msgs[:50]:
        t = [int(m[k]) for k in ("intended_ns", "published_ns", "received_ns", "start_ns", "end_ns")]
        assert t == sorted(t), "timestamps in causal order"


def test_competing_replicas_and_batches(tmp_path):
    r = run(tmp_path, "replicas", broker="inproc", rate=100.0, fanout="4", consumer_rate=150.0, replicas=4,
            batch_max=8, batch_wait_ms=5.0, duration=3.0, warmup=1.0)
    s = r.summary
    assert s["lost"] == 0 and s["stable"] is True
    assert s["rho"] == pytest.approx(400 / 600, rel=1e-3)
    msgs = list(csv.DictReader(open(os.path.join(r.run_dir, "messages.csv"))))
    assert len({m["replica"] for m in msgs}) == 4, "every replica did work"
    assert max(int(m["batch"]) for m in msgs) > 1, "batches formed"
