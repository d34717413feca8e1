"""Fault schedules: every kind parses to typed fields on the run's clock, and every bad value is one
line that names it and says what is allowed."""
import pytest

from testbed.errors import ConfigError
from testbed.faults import KINDS, Fault, Schedule, parse, parse_all
from testbed.faults.schedule import parse_entry, refusal

KINDS_PARSED = [
    ("kill-broker@10s", Fault("kill-broker", 10.0)),
    ("restart-broker@12.5s", Fault("restart-broker", 12.5)),
    ("bounce-broker@10s:2s", Fault("bounce-broker", 10.0, 2.0)),
    ("pause-broker@10:3", Fault("pause-broker", 10.0, 3.0)),
    ("kill-consumer:1@20s", Fault("kill-consumer", 20.0, replica=1)),
    ("pause-consumer:0@5s:1500ms", Fault("pause-consumer", 5.0, 1.5, replica=0)),
    ("net-delay@10s:5s:20ms", Fault("net-delay", 10.0, 5.0, latency_ms=20)),
    ("net-jitter@10s:5s:20ms", Fault("net-jitter", 10.0, 5.0, latency_ms=20, jitter_ms=20)),
    ("net-jitter@10s:5s:20ms:5ms", Fault("net-jitter", 10.0, 5.0, latency_ms=20, jitter_ms=5)),
    ("net-bandwidth@25s:5s:8mbit", Fault("net-bandwidth", 25.0, 5.0, rate_bps=8e6)),
    ("net-reset@500ms", Fault("net-reset", 0.5)),
    ("net-blackhole@10s:2s", Fault("net-blackhole", 10.0, 2.0)),
    ("kill-leader@10s", Fault("kill-leader", 10.0)),
    ("pause-leader@10s:5s", Fault("pause-leader", 10.0, 5.0)),
    ("bounce-leader@10s:3s", Fault("bounce-leader", 10.0, 3.0)),
    ("kill-node:2@10s", Fault("kill-node", 10.0, node=2)),
    ("pause-node:0@4s:2s", Fault("pause-node", 4.0, 2.0, node=0)),
    ("bounce-node:1@10s:3s", Fault("bounce-node", 10.0, 3.0, node=1)),
    ("partition-host:mq@10s:3s", Fault("partition-host", 10.0, 3.0, host="mq")),
]


@pytest.mark.parametrize("text,fault", KINDS_PARSED, ids=[t for t, _ in KINDS_PARSED])
def test_every_kind_parses(text, fault):
    got = parse(text)
    assert got == fault
    assert parse(str(got)) == got  # the canonical spelling reads back
    assert got.needs_proxy == text.startswith("net-")


def test_every_kind_is_covered():
    assert {f.kind for _, f in KINDS_PARSED} == set(KINDS)


def test_units_and_spelling():
    assert parse("net-delay@1.5s:0.25s:0.02s").latency_ms == 20
    assert parse("net-bandwidth@1s:1s:512kbit").rate_bps == 512e3
    assert parse("net-bandwidth@1s:1s:1gbit").rate_bps == 1e9
    assert parse(" Bounce-Broker@10S:2S ").kind == "bounce-broker"
    assert str(parse("pause-consumer:2@250ms:1s")) == "pause-consumer:2@250ms:1s"
    assert str(parse("net-bandwidth@10:5:8000kbit")) == "net-bandwidth@10s:5s:8mbit"


def test_yaml_entries_strings_and_mappings():
    s = parse_all(["net-delay@20s:5s:20ms",
                   {"kind": "bounce-broker", "at": "10s", "duration": 2},
                   {"kind": "kill-consumer", "replica": 1, "at": 30},
                   {"kind": "net-jitter", "at": "1s", "duration": "2s", "latency": "20ms", "jitter": "5ms"}])
    assert [str(f) for f in s] == ["net-jitter@1s:2s:20ms:5ms", "bounce-broker@10s:2s", "net-delay@20s:5s:20ms",
                                   "kill-consumer:1@30s"]
    assert s.needs_proxy
    assert not parse_all(["bounce-broker@1s:1s", "kill-consumer:0@3s"]).needs_proxy
    assert not parse_all(None) and len(parse_all([])) == 0
    assert parse_all("net-reset@1s").faults == (Fault("net-reset", 1.0),)
    assert s.to_list()[0] == {"fault": "net-jitter@1s:2s:20ms:5ms", "kind": "net-jitter", "target": "network",
                              "at_s": 1.0, "duration_s": 2.0, "latency_ms": 20, "jitter_ms": 5}


BAD = [
    ("bounse-broker@10s:2s", ["'bounse-broker'", "did you mean 'bounce-broker'", "kill-broker"]),
    ("net-dealy@1s:1s:20ms", ["did you mean 'net-delay'"]),
    ("explode@1s", ["unknown fault kind 'explode'", "use one of"]),
    ("kill-broker", ["needs a time", "kill-broker@T"]),
    ("kill-broker@", ["needs a time"]),
    ("kill-broker@10x", ["time '10x'", "10s or 500ms"]),
    ("kill-broker@-1s", ["time '-1s'"]),
    ("kill-broker@10s:2s", ["2 values", "kill-broker@T"]),
    ("bounce-broker@10s", ["1 value", "bounce-broker@T:D"]),
    ("bounce-broker@10s:0s", ["duration '0s'", "> 0"]),
    ("bounce-broker@10s:soon", ["duration 'soon'"]),
    ("kill-broker:1@10s", ["takes no replica"]),
    ("kill-consumer@10s", ["needs a replica", "kill-consumer:R@T"]),
    ("kill-consumer:one@10s", ["replica 'one'", "whole number"]),
    ("kill-consumer:-1@10s", ["replica '-1'"]),
    ("net-delay@10s:5s", ["net-delay@T:D:LAT"]),
    ("net-delay@10s:5s:20", ["latency '20'", "20ms"]),
    ("net-delay@10s:5s:0ms", ["latency '0ms'", ">= 1ms"]),
    ("net-delay@10s:5s:0.5ms", ["latency '0.5ms'", "whole number of milliseconds"]),
    ("net-jitter@10s:5s:20ms:30ms", ["jitter 30ms", "at most the latency"]),
    ("net-jitter@10s:5s:20ms:5ms:1ms", ["5 values"]),
    ("net-bandwidth@10s:5s:8mb", ["rate '8mb'", "8mbit"]),
    ("net-bandwidth@10s:5s:1kbit", ["rate '1kbit'", "at least 8kbit"]),
    ("net-reset@10s:1s", ["net-reset@T"]),
]


@pytest.mark.parametrize("text,needles", BAD, ids=[t for t, _ in BAD])
def test_bad_fault_is_one_line_naming_it(text, needles):
    with pytest.raises(ConfigError) as err:
        parse(text)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"--fault {text!r}")
    for needle in needles:
        assert needle in msg


BAD_ENTRIES = [
    (42, ["42", "bounce-broker@10s:2s"]),
    ({"kind": "kill-broker"}, ["needs kind and at"]),
    ({"kind": "kill-broker", "at": "1s", "durration": "1s"}, ["unknown key 'durration'", "did you mean 'duration'"]),
    ({"kind": "kill-broker", "at": "1s", "duration": "1s"}, ["kill-broker takes no duration"]),
    ({"kind": "net-delay", "at": "1s", "duration": "1s", "rate": "8mbit"}, ["net-delay takes no rate"]),
    ({"kind": "net-delay", "at": 1, "duration": 1, "latency": 20}, ["latency '20'"]),
]


@pytest.mark.parametrize("entry,needles", BAD_ENTRIES, ids=[str(e) for e, _ in BAD_ENTRIES])
def test_bad_yaml_entry_is_one_line(entry, needles):
    with pytest.raises(ConfigError) as err:
        parse_entry(entry)
    msg = str(err.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg


def schedule(*texts):
    return parse_all(list(texts))


def test_valid_schedules():
    schedule("kill-broker@5s", "restart-broker@8s", "bounce-broker@10s:2s", "pause-broker@12s:1s",
             "restart-broker@20s").validate(40, 1)
    # back to back on one target, and different targets overlapping freely
    schedule("net-delay@5s:5s:20ms", "net-bandwidth@10s:5s:8mbit", "bounce-broker@6s:2s",
             "pause-consumer:0@6s:2s", "pause-consumer:1@6s:2s", "kill-consumer:1@9s").validate(40, 2)
    schedule("kill-broker@30s").validate(40, 1)  # down to the end: allowed (the loss is measured)


SCHEDULE_ERRORS = [
    (("kill-consumer:2@10s",), 2, ["kill-consumer:2@10s", "replica 2 is out of range", "2 stage B replicas",
                                   "0 to 1"]),
    (("pause-consumer:1@10s:1s",), 1, ["replica 1 is out of range", "1 stage B replica ", "use 0"]),
    (("kill-broker@40s",), 1, ["kill-broker@40s", "starts at 40s", "--duration 40"]),
    (("bounce-broker@38s:5s",), 1, ["bounce-broker@38s:5s", "ends at 43s", "--duration 40"]),
    (("kill-consumer:0@39.5s",), 1, ["restart ends at 40.5s"]),
    (("net-delay@10s:5s:20ms", "net-reset@12s"), 1, ["net-reset@12s overlaps --fault net-delay@10s:5s:20ms",
                                                     "start it at 15s or later"]),
    (("bounce-broker@10s:5s", "pause-broker@14s:1s"), 1, ["pause-broker@14s:1s overlaps", "same broker"]),
    (("pause-consumer:1@10s:5s", "kill-consumer:1@11s"), 2, ["same consumer replica 1"]),
    (("kill-consumer:0@10s", "pause-consumer:0@10.5s:1s"), 1, ["overlaps --fault kill-consumer:0@10s"]),
    (("net-reset@10s", "net-reset@10s"), 1, ["overlaps"]),
    (("kill-broker@10s", "pause-broker@12s:1s"), 1, ["the broker is down from 10s", "restart-broker"]),
    (("kill-broker@10s", "kill-broker@12s"), 1, ["the broker is down"]),
]


@pytest.mark.parametrize("texts,replicas,needles", SCHEDULE_ERRORS, ids=[" ".join(t) for t, _, _ in SCHEDULE_ERRORS])
def test_schedule_errors_are_one_line(texts, replicas, needles):
    with pytest.raises(ConfigError) as err:
        schedule(*texts).validate(40, replicas)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("--fault ")
    for needle in needles:
        assert needle in msg


def test_events_on_the_runs_clock():
    s = schedule("net-delay@5s:5s:20ms", "bounce-broker@2s:1s", "pause-broker@3s:1s", "kill-consumer:0@1s",
                 "net-reset@10s", "net-blackhole@11s:1s")
    got = [(e.at_s, e.target, e.action) for e in s.validate(20, 1).events(consumer_restart_s=0.5)]
    assert got == [(1.0, "consumer:0", "kill"), (1.5, "consumer:0", "restart"), (2.0, "broker", "kill"),
                   (3.0, "broker", "restart"), (3.0, "broker", "pause"), (4.0, "broker", "resume"),
                   (5.0, "network", "add-toxics"), (10.0, "network", "remove-toxics"), (10.0, "network", "reset"),
                   (11.0, "network", "add-toxics"), (12.0, "network", "remove-toxics")]


SERVER = {"needs_server": True, "in_process": False}
BROKERLESS = {"needs_server": False, "in_process": False}   # a peer-to-peer transport
IN_PROCESS = {"needs_server": False, "in_process": True}


class Caps:  # a spec object works as well as a mapping
    needs_server, in_process = True, False


def test_faults_apply_where_they_can():
    every = schedule(*(t for t, _ in KINDS_PARSED if not t.startswith(("net-jitter@10s:5s:20ms:", "restart"))))
    for f in every:
        cluster = f.target.startswith(("leader", "node"))  # one node of a cluster (tests/test_clusters.py)
        hosts = ["mq"] if f.target.startswith("host") else None  # a simulated host (tests/test_hosts_runs.py)
        assert refusal(f, "local", SERVER, nodes=3 if cluster else 1, hosts=hosts) is None
        assert refusal(f, "docker", Caps(), nodes=3 if cluster else 1, hosts=hosts) is None
    for f in schedule("net-delay@1s:1s:20ms", "kill-consumer:0@1s", "net-reset@1s"):
        assert refusal(f, "external", SERVER) is None  # a proxy fits in front of an external broker
    assert refusal(parse("kill-consumer:0@1s"), "embedded", BROKERLESS) is None


REFUSED = [
    ("kill-broker@1s", "external", SERVER, ["--launcher external", "did not start"]),
    ("pause-broker@1s:1s", "external", SERVER, ["--launcher external"]),
    ("pause-broker@1s:1s", "embedded", IN_PROCESS, ["no broker process"]),
    ("bounce-broker@1s:1s", "embedded", BROKERLESS, ["no broker process"]),
    ("kill-consumer:0@1s", "embedded", IN_PROCESS, ["threads of one process"]),
    ("net-delay@1s:1s:20ms", "embedded", BROKERLESS, ["no broker connection"]),
    ("net-reset@1s", "embedded", IN_PROCESS, ["no broker connection"]),
    ("partition-host:mq@1s:1s", "local", SERVER, ["needs simulated hosts"]),
]


@pytest.mark.parametrize("text,launcher,caps,needles", REFUSED, ids=[f"{t}-{c}" for t, c, _, _ in REFUSED])
def test_refusals_are_one_line(text, launcher, caps, needles):
    with pytest.raises(ConfigError) as err:
        schedule("net-delay@20s:1s:5ms", text).check_applies(launcher, caps)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"--fault {text} is not possible here: ")
    for needle in needles:
        assert needle in msg


def test_empty_schedule_applies_everywhere():
    assert Schedule().check_applies("embedded", IN_PROCESS) == Schedule()
    assert not Schedule().needs_proxy and Schedule().events() == []
