"""Hosts files (testbed/hosts/spec.py) and the command line's bad input: parsed, checked, one line each."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from testbed.errors import ConfigError
from testbed.hosts import spec as hosts_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_shipped_files():
    three = hosts_spec.load(os.path.join(ROOT, "hosts", "three.yaml"))
    assert three.simulated and three.names == ["cam", "mq", "gpu1"]
    assert three.hosts["cam"].clock_offset_ns == 1_000_000_000_000
    assert three.hosts["gpu1"].clock_offset_ns == -37_500_000_000 and three.hosts["gpu1"].link_mbit == 200
    assert three.hosts["mq"].link_mbit is None and three.hosts["mq"].cpus == 1
    four = hosts_spec.load(os.path.join(ROOT, "hosts", "four.yaml"))
    assert four.names == ["cam", "mq1", "mq2", "mq3"]
    assert len({h.clock_offset_s for h in four.hosts.values()}) == 4, "every clock its own"
    assert hosts_spec.parse(three.to_dict()).to_dict() == three.to_dict()


def test_existing_cluster_file():
    s = hosts_spec.parse({"ray": "10.0.0.5:6379", "hosts": {"gpu1": {"cpus": 4}, "cam": None}})
    assert not s.simulated and s.ray == "10.0.0.5:6379" and s.hosts["gpu1"].cpus == 4 and s.hosts["cam"].cpus == 1


@pytest.mark.parametrize("data, words", [
    ("just text", ["mapping"]),
    ({"host": {"a": {}}}, ["'host'", "did you mean 'hosts'"]),
    ({"hosts": {}}, ["'hosts' must be a mapping"]),
    ({"ray": "somewhere", "hosts": {"a": {}}}, ["'somewhere'", "HEAD:PORT"]),
    ({"ray": "h:99999", "hosts": {"a": {}}}, ["'h:99999'"]),
    ({"hosts": {"bad name": {}}}, ["'bad name'", "1-32 letters"]),
    ({"hosts": {"x" * 33: {}}}, ["1-32 letters"]),
    ({"hosts": {"-lead": {}}}, ["'-lead'"]),
    ({"hosts": {"a": {"clock_ofset_s": 3}}}, ["'clock_ofset_s'", "did you mean 'clock_offset_s'"]),
    ({"hosts": {"a": {"cpus": 0}}}, ["cpus = 0", "whole number >= 1"]),
    ({"hosts": {"a": {"cpus": 1.5}}}, ["cpus = 1.5"]),
    ({"hosts": {"a": {"cpus": True}}}, ["cpus = True"]),
    ({"hosts": {"a": {"link_mbit": 0}}}, ["link_mbit = 0", "> 0"]),
    ({"hosts": {"a": {"link_mbit": "fast"}}}, ["link_mbit = 'fast'"]),
    ({"hosts": {"a": {"clock_offset_s": float("nan")}}}, ["clock_offset_s = nan", "finite"]),
    ({"hosts": {"a": {"clock_offset_s": float("inf")}}}, ["clock_offset_s = inf"]),
    ({"hosts": {"a": {"clock_offset_s": "soon"}}}, ["clock_offset_s = 'soon'"]),
    ({"hosts": {"a": []}}, ["host 'a'", "mapping"]),
    ({"ray": "10.0.0.5:6379", "hosts": {"a": {"clock_offset_s": 3}}}, ["only for simulated hosts"]),
    ({"ray": "10.0.0.5:6379", "hosts": {"a": {"link_mbit": 100}}}, ["link_mbit is only for simulated"]),
    ({"hosts": {f"h{i}": {} for i in range(65)}}, ["65 hosts", "at most 64"]),
])
def test_bad_hosts_file(data, words):
    with pytest.raises(ConfigError) as e:
        hosts_spec.parse(data, "f.yaml")
    text = str(e.value)
    assert "\n" not in text and "f.yaml" in text
    for w in words:
        assert w in text, text


def test_bad_files_on_disk(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        hosts_spec.load(str(tmp_path / "none.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("hosts: {a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        hosts_spec.load(str(bad))


def test_place_against_hosts():
    three = hosts_spec.load(os.path.join(ROOT, "hosts", "three.yaml"))
    ok = {"stage_a": ["cam"], "stage_b": ["gpu1", "mq"], "broker": ["mq"]}
    assert hosts_spec.check_place(ok, three) is ok
    with pytest.raises(ConfigError) as e:
        hosts_spec.check_place({"stage_b": ["gpu1", "gpu2"]}, three)
    text = str(e.value)
    assert "\n" not in text and "'gpu2'" in text and "did you mean 'gpu1'" in text and "cam, mq, gpu1" in text
    with pytest.raises(ConfigError, match="role 'stage_c'"):
        hosts_spec.check_place({"stage_c": ["cam"]}, three)


def _cli(*args, user=None, timeout=60):
    cmd = [sys.executable, "-m", "testbed.hosts", *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def test_cli_bad_input(tmp_path):
    helped = _cli("--help")
    assert helped.returncode == 0 and "up FILE" in helped.stdout and "status" in helped.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("hosts: {cam: {cpus: 0}}\n")
    r = _cli("up", str(bad))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "cpus = 0" in r.stderr, r.stderr
    r = _cli("sideways")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "invalid choice" in r.stderr
    existing = tmp_path / "existing.yaml"
    existing.write_text("ray: 10.0.0.5:6379\nhosts: {gpu1: {}}\n")
    r = _cli("up", str(existing))
    assert r.returncode == 2 and "nothing to bring up" in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root to become another user (setpriv)")
def test_without_root_refused_in_one_line():
    r = _cli("up", os.path.join(ROOT, "hosts", "three.yaml"), user=65534)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "need root" in r.stderr, r.stderr


def test_placement_deals_workers_over_hosts():
    from testbed.hosts.clock import IdentityClock
    from testbed.hosts.placement import Placement
    clocks = {n: IdentityClock() for n in ("cam", "cam2", "gpu1", "gpu2", "mq")}
    p = Placement({"stage_a": ["cam", "cam2"], "stage_b": ["gpu1", "gpu2"], "broker": ["mq"]}, clocks)
    assert [p.replica_host(r) for r in range(3)] == ["gpu1", "gpu2", "gpu1"]
    assert [p.stage_a_host(s) for s in range(3)] == ["cam", "cam2", "cam"]
    assert p.broker_host() == "mq" and p.hosts_used() == ["cam", "cam2", "gpu1", "gpu2", "mq"]
    assert p.b_clocks(3)[2] is clocks["gpu1"] and p.a_clocks(2)[1] is clocks["cam2"]
    alone = Placement({"stage_b": ["gpu1"]}, clocks)
    assert alone.stage_a_host() is None and alone.broker_host() is None, "unplaced: this machine"
    assert isinstance(alone.a_clocks(4), IdentityClock) and alone.b_clocks(1)[0] is clocks["gpu1"]
    assert alone.describe() == {"stage_a": [""], "stage_b": ["gpu1"], "broker": [""]}
