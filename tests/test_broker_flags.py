"""Broker flags (testbed/broker_flags.py): every value is checked whatever the broker; a --broker-url means
an external broker with --launcher auto; a flag the run's broker or launcher cannot use is refused (it
picks which broker: --broker-url, --broker-impl) or named in one warning line as ignored (a setting of a
broker the testbed starts), from one table."""
import dataclasses
import subprocess
import sys

import pytest

from testbed import broker_flags, config
from testbed.config import RunConfig, resolve
from testbed.errors import ConfigError
from testbed.orchestration import grid

BASE = RunConfig(broker="inproc", duration=3, warmup=1, fanout="1")


def cfg(**over) -> RunConfig:
    c = dataclasses.replace(BASE, **over)
    config.validate(c)
    return c


def test_a_url_with_launcher_auto_means_external():
    c = cfg(broker="redis", broker_url="redis://127.0.0.1:1/0")
    assert c.launcher == "external"
    from testbed.launchers import resolve_launcher
    assert resolve_launcher(c) == "external"  # no local broker is started, no engine asked


@pytest.mark.parametrize("broker, url", [("redis", "rediss://h:1/0"), ("nats", "tls://h:4222"),
                                         ("kafka", "kafka://h:1,h:2"), ("rabbitmq", "amqps://u:p@h:1/%2F"),
                                         ("zeromq", "ipc:///tmp/x.sock")])
def test_every_scheme_the_adapter_takes_is_accepted(broker, url):
    cfg(broker=broker, broker_url=url)


@pytest.mark.parametrize("over, words", [
    (dict(broker="kafka", broker_url="http://x"), "use kafka://HOST:PORT"),
    (dict(broker="redis", broker_url="127.0.0.1:6379"), "use redis://"),
    (dict(broker="redis", launcher="local", broker_url="redis://h:1/0"), "with --launcher local"),
    (dict(broker="rabbitmq", launcher="docker", broker_url="amqp://u:p@h:1/%2F"), "with --launcher docker"),
    (dict(broker="inproc", broker_url="redis://h:1/0"), "with --broker inproc"),
    (dict(broker="redis", broker_impl="apache"), "with --broker redis"),
    (dict(broker="inproc", broker_cpus="99"), "this machine offers CPUs"),
    (dict(broker="inproc", broker_cpus="x"), "CPU numbers"),
    (dict(broker="zeromq", broker_heap="lots"), "JVM size"),
    (dict(broker="inproc", broker_memory="2 GB"), "size such as"),
])
def test_refused_whatever_the_broker(over, words):
    with pytest.raises(ConfigError, match=words):
        cfg(**over)


def test_a_password_in_a_refused_url_is_not_printed():
    with pytest.raises(ConfigError) as e:
        cfg(broker="kafka", broker_url="http://user:secret@h:1")
    assert "secret" not in str(e.value)


@pytest.mark.parametrize("over, flag, words", [
    (dict(broker="inproc", broker_cpus="0"), "--broker-cpus", "with --broker inproc"),
    (dict(broker="inproc", broker_heap="1g"), "--broker-heap", "with --broker inproc"),
    (dict(broker="zeromq", launcher="local"), "--launcher", "with --broker zeromq"),
    (dict(broker="redis", broker_heap="1g", launcher="local"), "--broker-heap", "with --broker redis"),
    (dict(broker="kafka", broker_impl="tansu", broker_heap="1g", launcher="local"), "--broker-heap",
     "--broker-impl tansu"),
    (dict(broker="redis", broker_memory="1g", launcher="local"), "--broker-memory", "with --launcher local"),
    (dict(broker="redis", no_build=True, launcher="local"), "--no-build", "with --launcher local"),
    (dict(broker="redis", broker_cpus="0", broker_url="redis://h:1/0"), "--broker-cpus", "--launcher external"),
])
def test_a_flag_that_does_not_apply_is_one_warning_line(over, flag, words):
    lines = broker_flags.ignored(cfg(**over))
    assert len(lines) == 1 and lines[0].startswith(f"testbed: warning: {flag}") and words in lines[0], lines
    assert "is ignored" in lines[0]


@pytest.mark.parametrize("over", [
    dict(broker="redis", broker_cpus="0", launcher="local"), dict(broker="redis", broker_memory="1g"),
    dict(broker="kafka", broker_heap="1g"), dict(broker="kafka", broker_heap="1g", launcher="docker"),
    dict(broker="redis", no_build=True), dict(broker="zeromq", broker_url="tcp://127.0.0.1:1"),
    dict(broker="kafka", broker_impl="tansu"), dict(broker="redis", launcher="local"), dict(),
])
def test_a_flag_that_applies_is_not_warned_about(over):
    assert broker_flags.ignored(cfg(**over)) == []


def test_the_table_names_real_flags_and_actions():
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    for name, scope in broker_flags.SCOPES.items():
        assert name in fields, name
        assert scope.action in ("refuse", "warn") and scope.needs
        assert set(scope.launchers) <= set(broker_flags.KINDS), name


def test_resolve_prints_each_warning_once(capsys):
    from testbed.run import build_parser
    ns = build_parser().parse_args(["--broker", "inproc", "--broker-cpus", "0", "--launcher", "local"])
    resolve(ns)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("testbed: warning:") for line in err), err


def test_a_sweep_lists_an_ignored_flag_once(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("grid:\n  broker: [inproc, zeromq]\n  rate: [10, 20]\nfixed:\n  broker_cpus: '0'\n"
                 "  duration: 2\n  warmup: 0.5\n")
    sweep = grid.load(str(f))
    assert len(sweep.points) == 4
    assert [line.split(" is ignored")[0] for line in sweep.ignored] == ["testbed: warning: --broker-cpus '0'"] * 2
    p = subprocess.run([sys.executable, "-m", "testbed.sweep", str(f), "--out", str(tmp_path / "o"), "--dry-run"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stderr.count("is ignored") == 2, p.stderr
