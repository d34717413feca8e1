"""Runs over hosts, what needs no hosts up: every refusal of --hosts / --ray-address / --place /
partition-host is one line naming the value before anything starts (no root needed: a hosts file of an
existing cluster is checked without connecting to it), the partition-host fault's spelling and events,
the printed summary's hosts lines, and a run on one machine imports nothing of Ray."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from testbed.analysis import columns, report
from testbed.config import RunConfig, validate
from testbed.errors import ConfigError
from testbed.faults.schedule import parse, parse_all, parse_entry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_ray = pytest.mark.skipif(__import__("importlib").util.find_spec("ray") is None,
                               reason="needs the hosts extra (ray)")


@pytest.fixture
def existing(tmp_path):
    """A hosts file naming an existing cluster (nothing is reached until a run starts)."""
    p = tmp_path / "cluster.yaml"
    p.write_text(yaml.safe_dump({"ray": "10.0.0.5:6379", "hosts": {"cam": {}, "mq": {}, "gpu1": {}, "gpu2": {}}}))
    return str(p)


def refused(**kw) -> str:
    with pytest.raises(ConfigError) as err:
        validate(RunConfig(**kw))
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@needs_ray
@pytest.mark.parametrize("kw, says", [
    ({"broker": "zeromq", "place": {"broker": ["mq"]}}, "no broker process (stage A binds the transport)"),
    ({"broker": "inproc"}, "threads of the orchestrator"),
    ({"broker": "redis", "place": {"stage_a": ["cam", "mq"]}}, "names 2 hosts for 1 camera stream"),
    ({"broker": "redis", "place": {"stage_b": ["gpu1", "gpu2"]}}, "names 2 hosts for 1 stage B replica"),
    ({"broker": "redis", "place": {"broker": ["mq", "cam"]}}, "add --broker-nodes 2"),
    ({"broker": "redis", "place": {"stage_b": ["gpu7"]}}, "stage_b=gpu7: there is no host 'gpu7'"),
    ({"broker": "redis", "launcher": "docker"}, "is not allowed with --launcher docker"),
    ({"broker": "redis", "broker_url": "redis://127.0.0.1:6379", "place": {"broker": ["mq"]}}, "external broker"),
    ({"broker": "redis", "faults": ["partition-host:mq@1s:1s"]}, "partition-host needs simulated hosts"),
])
def test_refusals_are_one_line(existing, kw, says):
    assert says in refused(hosts=existing, **kw)


@needs_ray
def test_what_is_allowed_passes_and_counts_match(existing):
    cfg = RunConfig(broker="redis", hosts=existing, replicas=2, streams=2,
                    place={"stage_a": ["cam", "mq"], "stage_b": ["gpu1", "gpu2"], "broker": ["mq"]})
    validate(cfg)
    validate(RunConfig(broker="zeromq", hosts=existing, place={"stage_a": ["cam"], "stage_b": ["gpu1"]}))


def test_partition_host_needs_a_simulated_host(tmp_path, monkeypatch):
    sim = tmp_path / "sim.yaml"
    sim.write_text(yaml.safe_dump({"hosts": {"cam": {}, "mq": {}}}))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # simulated hosts without root: refused, saying why
    msg = refused(broker="redis", hosts=str(sim))
    assert "simulated hosts need root" in msg and "--ray-address" in msg
    monkeypatch.undo()
    if os.geteuid() == 0 and __import__("importlib").util.find_spec("ray") is not None:
        assert "there is no host 'mx'; the hosts are cam, mq" in refused(broker="redis", hosts=str(sim),
                                                                       faults=["partition-host:mx@1s:1s"])
        validate(RunConfig(broker="redis", hosts=str(sim), faults=["partition-host:mq@1s:1s"]))
    assert "--place needs --hosts" in refused(broker="redis", place={"stage_a": ["cam"]})
    assert "HEAD:PORT" in refused(broker="redis", ray_address="nowhere")


def test_partition_host_spelling_and_events():
    f = parse("partition-host:mq@2s:500ms")
    assert (f.host, f.at_s, f.duration_s, f.target, str(f)) == ("mq", 2.0, 0.5, "host:mq", "partition-host:mq@2s:500ms")
    assert parse_entry({"kind": "partition-host", "host": "mq", "at": 2, "duration": "500ms"}) == f
    assert f.to_dict()["host"] == "mq"
    evs = parse_all(["partition-host:mq@2s:1s", "partition-host:mq@3s:1s"]).validate(10, 1).events()
    assert [(e.at_s, e.action) for e in evs] == [(2, "partition"), (3, "heal"), (3, "partition"), (4, "heal")]
    for bad, says in (("partition-host@1s:1s", "needs a host"), ("partition-host:m q@1s:1s", "is not allowed"),
                      ("partition-host:mq@1s", "has 1 value")):
        with pytest.raises(ConfigError, match=says):
            parse(bad)
    with pytest.raises(ConfigError, match="overlaps"):
        parse_all(["partition-host:mq@2s:2s", "partition-host:mq@3s:1s"]).validate(10, 1)


def test_summary_columns_and_printed_lines(tmp_path):
    names = columns.names()
    assert names.index("clock_uncertainty_us") == names.index("hosts") + 1 == names.index("error") - 1
    assert columns.by_name()["clock_uncertainty_us"].unit == "us"
    (tmp_path / "run.json").write_text(json.dumps({"hosts": {"negative_latencies": {
        "transit": {"count": 3, "worst_us": -250.5}, "e2e": {"count": 0, "worst_us": 0.0}}}}))
    row = {"hosts": "stage_a=cam stage_b=gpu1", "clock_uncertainty_us": 30.0, "e2e_p50_ms": 2.0}
    lines = report.hosts_lines(row, str(tmp_path))
    assert lines[0] == "  hosts: stage_a=cam stage_b=gpu1; clock uncertainty +-30 us"
    assert "more than 1% of the e2e p50 (2.000 ms)" in lines[1]
    assert "3 transit latencies below zero" in lines[2] and "-250.5 us" in lines[2] and len(lines) == 3
    assert len(report.hosts_lines({**row, "e2e_p50_ms": 4.0}, str(tmp_path / "none"))) == 1  # 30 us < 1% of 4 ms
    assert report.hosts_lines({"clock_uncertainty_us": ""}, str(tmp_path)) == []  # a run on one machine


def test_a_run_on_one_machine_imports_nothing_of_ray(tmp_path):
    code = ("import sys\nfrom testbed.config import RunConfig, validate\nfrom testbed.orchestration.execute import "
            "execute\ncfg = RunConfig(broker='inproc', rate=50, duration=0.6, warmup=0.1, drain=1, fanout='1', "
            f"out={str(tmp_path / 'run')!r})\nvalidate(cfg)\nr = execute(cfg)\n"
            "print(r.summary['hosts'] == '' and r.summary['clock_uncertainty_us'] == '', "
            "[m for m in sys.modules if m == 'ray' or m.startswith(('ray.', 'testbed.hosts.cluster', "
            "'testbed.hosts.runs', 'testbed.hosts.agent'))])")  # the start-up sweep reads hosts' state files only
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "True []"
