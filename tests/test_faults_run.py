"""Faults under load, end to end on real brokers (local launcher): each fault kind acts on the run, the
stages survive it, the delivery columns count what was lost, and faults that cannot apply are refused.

Runs are short (a few seconds, low rates): they check behaviour, not figures (docs/faults.md has those).
"""
import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

from testbed.config import RunConfig, validate
from testbed.errors import ConfigError
from testbed.faults import toxiproxy_bin
from testbed.orchestration.execute import execute

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
needs_proxy = pytest.mark.skipif(toxiproxy_bin.find() is None,
                                 reason="no Toxiproxy server (bash scripts/setup.d/70-toxiproxy.sh)")


def run(tmp_path, name, **kw):
    base = dict(broker="redis", launcher="local", arrival="constant", rate=20.0, fanout="2", producer_rate=5000.0,
                consumer_rate=1000.0, message_bytes=1024, duration=6.0, warmup=1.0, drain=3.0, seed=3,
                out=str(tmp_path / name))
    base.update(kw)
    cfg = RunConfig(**base)
    validate(cfg)
    r = execute(cfg)
    with open(os.path.join(r.run_dir, "run.json")) as fh:
        meta = json.load(fh)
    with open(os.path.join(r.run_dir, "faults.csv"), newline="") as fh:
        faults = list(csv.DictReader(fh))
    with open(os.path.join(r.run_dir, "timeseries.csv"), newline="") as fh:
        ts = list(csv.DictReader(fh))
    return r, meta, faults, ts


def actions(meta):
    return [(e["target"].split(":")[0], e["action"], e["error"]) for e in meta["faults"]["events"]]


@needs_redis
def test_bounce_at_least_once_loses_nothing_acknowledged(tmp_path):
    # stage B 10 ms a message (rho 0.4): a backlog builds while the broker is down and stage B reconnects
    r, meta, faults, ts = run(tmp_path, "bounce", delivery="at-least-once", consumer_rate=100.0,
                              faults=["bounce-broker@2s:1s"])
    s = r.summary
    assert r.complete and s["delivery"] == "at-least-once"
    assert actions(meta) == [("broker", "kill", ""), ("broker", "restart", "")]
    assert meta["broker"]["launch"]["restarts"] == 1
    assert s["lost_acked"] == 0
    # only what stage A could not publish is lost; a publish whose reply the kill cut off may still have
    # reached the broker (counted as an error, then delivered), so errors can exceed the loss
    assert s["lost"] == s["lost_unacked"] <= s["publish_errors"]
    assert s["publish_errors"] > 0 and sum(meta["faults"]["publish_errors"].values()) == s["publish_errors"]
    assert s["received"] > 0.5 * s["sent"]
    (row,) = faults
    assert row["kind"] == "bounce-broker" and float(row["end_s"]) >= 3.0
    assert row["recovered"] == "True" or row["recovered"] == "true"
    assert float(row["throughput_dip"]) == 1.0 and int(row["backlog_peak"]) > 0
    assert s["recovered"] and s["recovery_s"] >= 0
    assert any(t["fault"] == "bounce-broker@2s:1s" for t in ts) and ts[0]["fault"] == ""


@needs_redis
def test_bounce_at_most_once_counts_the_acknowledged_loss(tmp_path):
    # stage B slower than the offered load: a backlog sits in the broker's memory when it is killed
    r, meta, faults, _ = run(tmp_path, "amo", delivery="at-most-once", consumer_rate=30.0,
                             faults=["bounce-broker@3s:1s"])
    s = r.summary
    assert r.complete and s["delivery"] == "at-most-once"
    assert s["lost_acked"] > 0, "the backlog in memory died with the broker"
    assert s["lost"] == s["lost_acked"] + s["lost_unacked"]
    assert int(faults[0]["lost_acked"]) == s["lost_acked"]  # all of it this fault's


@needs_redis
def test_pause_broker_and_consumer_faults(tmp_path):
    r, meta, faults, _ = run(tmp_path, "mixed", replicas=2, duration=8.0, broker_opt={"claim_idle_ms": "1000"},
                             faults=["pause-broker@1.5s:1s", "kill-consumer:0@3.5s", "pause-consumer:1@5.5s:1s"])
    s = r.summary
    assert r.complete, s["error"]
    assert actions(meta) == [("broker", "pause", ""), ("broker", "resume", ""), ("consumer", "kill", ""),
                             ("consumer", "restart", ""), ("consumer", "pause", ""), ("consumer", "resume", "")]
    assert [f["kind"] for f in faults] == ["pause-broker", "kill-consumer", "pause-consumer"]
    assert float(faults[0]["throughput_dip"]) >= 0.9  # (almost) nothing comes out of a stopped broker
    assert s["lost_acked"] <= 2, "redis keeps a killed replica's entries pending: its restart reads them back"
    assert s["publish_errors"] == 0  # a paused broker delays publishes, it does not fail them


@needs_redis
def test_kill_broker_then_restart_broker(tmp_path):
    r, meta, faults, _ = run(tmp_path, "kr", delivery="at-least-once",
                             faults=["kill-broker@2s", "restart-broker@3s"])
    assert r.complete and actions(meta) == [("broker", "kill", ""), ("broker", "restart", "")]
    assert [f["end_s"] for f in faults][0] == ""  # a kill alone never ends
    assert r.summary["lost_acked"] == 0


@needs_redis
@needs_proxy
def test_network_faults_through_the_proxy(tmp_path):
    r, meta, faults, _ = run(tmp_path, "net", duration=9.0,
                             faults=["net-delay@1.5s:1s:30ms", "net-reset@3s", "net-blackhole@4s:1s",
                                     "net-bandwidth@6s:1s:1mbit", "net-jitter@7.5s:0.5s:20ms:10ms"])
    s = r.summary
    assert r.complete, s["error"]
    proxy = meta["faults"]["proxy"]
    assert proxy["proxy"] == "toxiproxy" and proxy["upstream"] != proxy["listen"]
    assert [a for a in actions(meta) if a[2]] == []
    # the stages reached the broker through the proxy: the delay shows in the e2e latency
    assert s["e2e_max_ms"] >= 60
    assert s["lost_acked"] == 0
    assert len(faults) == 5


@needs_redis
def test_no_proxy_without_a_network_fault(tmp_path):
    r, meta, _, _ = run(tmp_path, "noproxy", faults=["pause-consumer:0@2s:0.5s"])
    assert "proxy" not in meta["faults"]
    assert meta["broker"]["url"].endswith("/0")


@pytest.mark.parametrize("args, words", [
    (["--broker", "inproc", "--fault", "kill-broker@1s"], "no broker process"),
    (["--broker", "inproc", "--fault", "kill-consumer:0@1s"], "threads of one process"),
    (["--broker", "zeromq", "--fault", "net-delay@1s:1s:10ms"], "no broker connection"),
    (["--broker", "redis", "--launcher", "external", "--broker-url", "redis://127.0.0.1:1/0",
      "--fault", "pause-broker@1s:1s"], "external"),
    (["--broker", "zeromq", "--delivery", "at-least-once"], "at-most-once only"),
    (["--broker", "redis", "--delivery", "exactly-once"], "use one of at-most-once, at-least-once"),
    (["--broker", "redis", "--fault", "bounce-broker@9s:5s"], "after the run ends"),
    (["--broker", "redis", "--fault", "kill-consumer:3@1s"], "out of range"),
    (["--broker", "redis", "--consumer-restart-s", "-1", "--fault", "kill-consumer:0@1s"], ">= 0"),
    (["--broker", "redis", "--fault", "bounce@1s"], "did you mean"),
])
def test_refusals_are_one_line_and_exit_2(tmp_path, args, words):
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "testbed.run", *args, "--duration", "10", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], lines
    assert not out.exists()


def test_faults_from_a_config_file_and_canonical_spelling(tmp_path):
    cfg = RunConfig(broker="redis", launcher="local", duration=20.0,
                    faults=[{"kind": "pause-broker", "at": "10s", "duration": "3000ms"}, "kill-consumer:0@12s"])
    validate(cfg)
    assert cfg.faults == ["pause-broker@10s:3s", "kill-consumer:0@12s"]
    cfg = RunConfig(broker="rabbitmq", delivery="at-least-once", broker_opt={"confirms": "false"})
    validate(cfg)
    assert cfg.broker_opt == {"durable": "True", "persistent": "True", "confirms": "false"}  # explicit wins
    with pytest.raises(ConfigError):
        validate(RunConfig(broker="redis", faults=["net-delay@1s:1s"]))



def test_broker_faults_on_the_docker_launcher(tmp_path):
    from tests.docker_required import engine_or_skip, our_containers
    engine_or_skip()
    before = {c.id for c in our_containers()}
    r, meta, faults, _ = run(tmp_path, "docker", launcher="docker", delivery="at-least-once", duration=9.0,
                             faults=["bounce-broker@2s:1s", "pause-broker@4s:1s"])
    assert r.complete and meta["broker"]["launcher"] == "docker"
    assert actions(meta) == [("broker", "kill", ""), ("broker", "restart", ""), ("broker", "pause", ""),
                             ("broker", "resume", "")]
    assert r.summary["lost_acked"] == 0  # the container's filesystem (its append-only file) survives the kill
    assert all(f["recovered"] in ("True", "true") for f in faults)
    assert {c.id for c in our_containers()} == before


def test_experiment_file_faults_grid(tmp_path):
    from testbed.orchestration import grid
    sweep = grid.load(os.path.join(ROOT, "experiments", "faults.yaml"))
    points = sweep.points if hasattr(sweep, "points") else grid.expand(sweep, None)
    assert {p.cfg.delivery for p in points} == {"at-least-once", "at-most-once"}
    assert all(len(p.cfg.faults) == 5 and p.cfg.faults[0] == "bounce-broker@5s:1s" for p in points)
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid:\n  broker: [redis]\nfixed:\n  faults: [bounce-broker@99s:1s]\n  duration: 10\n")
    with pytest.raises(ConfigError, match="after the run ends|not before the run ends"):
        grid.load(str(bad))


def test_what_a_returned_publish_means_per_adapter():
    import brokers
    from brokers.base import Endpoint

    def adapter(name, **opts):
        return brokers.get(name)(Endpoint(name, "x://127.0.0.1:1", {k: str(v) for k, v in opts.items()}))
    assert adapter("redis").acknowledged  # the XADD reply
    assert not adapter("zeromq").acknowledged
    assert adapter("rabbitmq", confirms=True).acknowledged and not adapter("rabbitmq").acknowledged
    assert adapter("kafka", acks="all").acknowledged and not adapter("kafka", acks="0").acknowledged
    k = adapter("kafka")
    assert k.reconnects_itself and not adapter("redis").reconnects_itself
    assert k.take_failed() == []
