"""Experiment files and sweeps: every schema error names its key and line; a resumed sweep skips finished
runs, redoes an incomplete one (keeping the old one aside) and records a failed one."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap

import pytest

import brokers
from testbed.orchestration import grid
from testbed.orchestration import sweep
from testbed.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
FAST = ["--set", "duration=2", "--set", "warmup=0.5", "--set", "drain=1"]


def write(tmp_path, text: str, name: str = "exp.yaml") -> str:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(p)


def error_of(path: str, **kw) -> str:
    with pytest.raises(ConfigError) as e:
        grid.load(path, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


GOOD = """
name: t
grid:
  broker: [inproc]
  rate: [10, 20]
fixed:
  duration: 3
"""


@pytest.mark.parametrize("text, line, words", [
    ("name: t\ngrid:\n  broker: [inproc]\nrepetitons: 2\n", 4, ["'repetitons'", "did you mean 'repetitions'"]),
    ("grid:\n  broker: [inproc]\n  brokr_opt: [{}]\n", 3, ["grid.brokr_opt", "unknown key", "did you mean 'broker_opt'"]),
    ("grid:\n  broker: [inproc]\nfixed:\n  duraton: 3\n", 4, ["fixed.duraton", "did you mean 'duration'"]),
    ("grid:\n  broker: [inproc]\n  rate:\n    - 10\n    - fast\n", 5, ["grid.rate", "'fast' is not a number"]),
    ("grid:\n  broker: [inproc]\n  replicas: [1, 2.5]\n", 3, ["grid.replicas", "not a whole number"]),
    ("grid:\n  broker: [inproc]\nfixed:\n  no_trace: yes please\n", 4, ["fixed.no_trace", "not true or false"]),
    ("grid:\n  broker: [inproc]\n  rate: 50\n", 3, ["grid.rate", "must be a list"]),
    ("grid:\n  broker: [inproc]\n  rate: []\n", 3, ["grid.rate", "empty list"]),
    ("name: t\ngrid: {}\n", 2, ["grid", "is empty"]),
    ("name: t\ngrid:\n", 2, ["grid", "is empty"]),
    ("grid:\n  broker: [inproc]\n  rate: [10]\nfixed:\n  rate: 10\n", 5, ["fixed.rate", "both grid (line 3)"]),
    ("grid:\n  broker: [inproc]\n  rate: [10]\n  rate: [20]\n", 4, ["'rate' appears twice", "lines 3 and 4"]),
    ("grid:\n  broker: [inproc]\n  rate: [10, 10]\n", 3, ["grid.rate", "listed twice"]),
    ("grid:\n  broker: [inproc]\nfixed:\n  duration: 1\n  warmup: 2\n", 4, ["fixed.duration", "longer than"]),
    ("grid:\n  broker: [inproc]\n  rate: [10, -5]\n", 3, ["grid.rate", "--rate -5", "rate=-5"]),
    ("grid:\n  broker: [inproc, rabbit]\n", 2, ["grid.broker", "'rabbit'", "did you mean 'rabbitmq'"]),
    ("grid:\n  broker: [inproc]\n  consumer_capacity: [1.0]\nfixed:\n  consumer_rate: 10\n", 3,
     ["give only one of consumer_rate, consumer_capacity"]),
    ("grid:\n  broker: [inproc]\n  pipeline: [synthetic, movies]\n", 3, ["grid.pipeline", "'movies'"]),
    ("grid:\n  broker: [inproc\n", 3, ["not valid YAML"]),
    ("- broker\n- rate\n", 1, ["must hold a mapping"]),
])
def test_schema_errors_name_the_key_and_the_line(tmp_path, text, line, words):
    path = write(tmp_path, text)
    msg = error_of(path)
    assert msg.startswith(path)
    assert f"line {line}:" in msg, msg
    for w in words:
        assert w in msg, msg


def test_a_broker_whose_adapter_does_not_import_fails_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(brokers.REGISTRY, "nosuch", "brokers.nosuch_adapter:NoSuch")
    path = write(tmp_path, "grid:\n  broker:\n    - inproc\n    - nosuch\n")
    msg = error_of(path)
    assert "line 4:" in msg and "'nosuch'" in msg and "brokers.nosuch_adapter does not exist" in msg


def test_empty_file_and_no_grid(tmp_path):
    assert "empty" in error_of(write(tmp_path, "\n"))
    assert "no 'grid'" in error_of(write(tmp_path, "name: x\n"))


def test_cli_bad_file_is_one_line_exit_2_and_writes_nothing(tmp_path):
    path = write(tmp_path, "grid:\n  broker: [inproc]\n  rate: [fast]\n")
    out = tmp_path / "out"
    p = subprocess.run([PY, "-m", "testbed.sweep", path, "--out", str(out)], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "line 3" in p.stderr and "Traceback" not in p.stderr
    assert not out.exists()


def test_expansion_blocks_names_seeds_and_derived_consumer_rate(tmp_path):
    path = write(tmp_path, """
        name: t
        repetitions: 2
        grid:
          rate: [10, 20]
          broker: [inproc, zeromq]
          consumer_capacity: [0.5, 2]
        fixed:
          fanout: 4
          replicas: 2
          seed: 7
        """)
    s = grid.load(path)
    assert len(s.points) == 2 * 2 * 2 * 2
    # runs sharing a broker are consecutive: one block per broker
    order = [p.cfg.broker for p in s.points]
    assert order == sorted(order, key=["inproc", "zeromq"].index)
    names = [p.name for p in s.points]
    assert len(set(names)) == len(names)
    assert names == [p.name for p in grid.load(path).points]  # deterministic
    p = next(p for p in s.points if p.cfg.rate == 20 and p.values["consumer_capacity"] == 0.5)
    # capacity 0.5 x (20 frames/s x 4) = 40 msg/s over 2 replicas
    assert p.cfg.consumer_rate == pytest.approx(20.0)
    assert {q.cfg.seed for q in s.points} == {7, 8}
    # the broker list can be narrowed, fixed values overridden
    s2 = grid.load(path, brokers_override=["inproc"], overrides={"duration": "4"})
    assert {q.cfg.broker for q in s2.points} == {"inproc"} and {q.cfg.duration for q in s2.points} == {4.0}


def test_shipped_experiment_files_validate():
    for name in ("smoke", "broker_compare", "multi_dnn", "preprocessing"):
        path = os.path.join(ROOT, "experiments", f"{name}.yaml")
        data, _ = grid.read(path)
        assert "grid" in data
    s = grid.load(os.path.join(ROOT, "experiments", "smoke.yaml"), brokers_override=["inproc", "zeromq"])
    assert [p.cfg.broker for p in s.points] == ["inproc", "zeromq"]
    bc = grid.load(os.path.join(ROOT, "experiments", "broker_compare.yaml"), brokers_override=["inproc"])
    assert len(bc.points) == 2 * 4 * bc.repetitions
    assert {round(p.cfg.consumer_rate) for p in bc.points} == {80, 100, 120, 200}


def _statuses(out) -> dict:
    with open(os.path.join(out, "sweep.csv"), newline="") as fh:
        return {r["name"]: r["status"] for r in csv.DictReader(fh)}


def test_resumed_sweep_skips_finished_runs_and_redoes_an_incomplete_one(tmp_path):
    out = str(tmp_path / "res")
    smoke = os.path.join(ROOT, "experiments", "smoke.yaml")
    argv = [smoke, "--out", out, "--brokers", "inproc,zeromq", "--quiet", *FAST]
    assert sweep.main(argv) == 0
    first = _statuses(out)
    assert sorted(first.values()) == ["complete", "complete"]
    inproc, zmq = sorted(first)
    for name in first:
        assert sweep.run_complete(os.path.join(out, name))
        meta = json.load(open(os.path.join(out, name, "sweep.json")))
        assert meta["status"] == "complete" and meta["point"]["broker"] in ("inproc", "zeromq")
    kept = os.path.join(out, inproc, "summary.csv")
    mtime = os.stat(kept).st_mtime_ns
    # make the zeromq run look interrupted
    summ = os.path.join(out, zmq, "summary.csv")
    text = open(summ).read()
    open(summ, "w").write(text.replace(",true,", ",false,", 1))
    assert not sweep.run_complete(os.path.join(out, zmq))

    assert sweep.main(argv) == 0
    second = _statuses(out)
    assert second[inproc].startswith("skipped") and second[zmq] == "complete"
    assert os.stat(kept).st_mtime_ns == mtime  # the finished run was not touched
    assert sweep.run_complete(os.path.join(out, zmq))
    aside = os.listdir(os.path.join(out, sweep.ASIDE))
    assert aside == [f"{zmq}.1"]  # the old attempt is kept, not lost
    assert "false" in open(os.path.join(out, sweep.ASIDE, aside[0], "summary.csv")).read()


def test_a_failed_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    # zeromq cannot bind a socket in a folder that does not exist: that run fails, the next still runs
    path = write(tmp_path, f"""
        grid:
          broker: [zeromq]
          broker_url: [ipc://{tmp_path}/missing/dir/sock, ipc://{tmp_path}/sock]
        fixed:
          rate: 10
          fanout: 1
          duration: 1.5
          warmup: 0.5
          drain: 0.5
        """)
    out = str(tmp_path / "res")
    assert sweep.main([path, "--out", out, "--quiet"]) == 1
    st = _statuses(out)
    failed = [n for n, s in st.items() if s == "failed"]
    done = [n for n, s in st.items() if s == "complete"]
    assert len(failed) == 1 and failed[0].startswith("zeromq") and len(done) == 1
    meta = json.load(open(os.path.join(out, failed[0], "sweep.json")))
    assert meta["status"] == "failed" and "bind" in meta["error"]


def test_progress_lines_are_read_back():
    from testbed.orchestration.live import parse_tick
    t = parse_tick("[   3s load] in    200 msg/s  out    198 msg/s  backlog 2")
    assert t == {"t_s": 3, "phase": "load", "in": 200, "out": 198, "backlog": 2}
    assert parse_tick("starting broker redis") is None
