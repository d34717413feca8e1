"""--ack: each broker's modes and default come from its spec; the config resolves "" to the default (what
run.json records) and refuses, with one line, a mode the broker does not have. What each mode redelivers
after a crash is tested against real servers in tests/conformance/features/ack_modes.py."""
from __future__ import annotations

import pytest

import brokers
from brokers.spec import ACK_MODES, NO_ACK
from testbed.config import RunConfig, validate
from testbed.errors import ConfigError
from testbed.run import main


def test_every_broker_declares_its_modes_and_a_default_among_them():
    for name in brokers.names():
        spec = brokers.spec(name)
        for impl in spec.impl_names() or [""]:
            caps = spec.caps(impl)
            assert set(caps.ack_modes) <= set(ACK_MODES)
            if caps.redelivers and caps.needs_server:
                assert caps.ack_default == "per-batch", name  # the safest: one confirmed ack per batch
            assert (caps.ack_default in caps.ack_modes) if caps.ack_modes else caps.ack_default == ""
            assert brokers.get(name).ack_modes == spec.capabilities.ack_modes


@pytest.mark.parametrize("broker, given, resolved", [
    ("redis", "", "per-batch"), ("redis", "async", "async"), ("kafka", "per-message", "per-message"),
    ("nats", "", "per-batch"), ("rabbitmq", "async", "async"), ("zeromq", "", NO_ACK), ("inproc", "", NO_ACK),
])
def test_config_records_the_mode_the_run_uses(broker, given, resolved):
    cfg = RunConfig(broker=broker, ack=given)
    validate(cfg)
    assert cfg.ack == resolved
    validate(cfg)  # validating again keeps it
    assert cfg.to_dict()["ack"] == resolved


@pytest.mark.parametrize("argv, says", [
    (["--broker", "zeromq", "--ack", "per-batch"], "no acknowledgements"),
    (["--broker", "inproc", "--ack", "async"], "no acknowledgements"),
    (["--broker", "redis", "--ack", "eventually"], "use one of per-message, per-batch, async"),
    (["--broker", "nats", "--ack", "none"], "it has per-message, per-batch, async"),  # what run.json says of zeromq
])
def test_a_mode_the_broker_lacks_is_refused_with_one_line(argv, says, capsys, tmp_path):
    out = tmp_path / "run"
    assert main([*argv, "--duration", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0] and "--ack" in err[0]
    assert not out.exists()


def test_an_adapter_refuses_a_mode_it_lacks_and_takes_the_default_for_none():
    from brokers.base import Endpoint
    cls = brokers.get("redis")
    b = cls(Endpoint("redis", "redis://127.0.0.1:1/0"))
    assert b.ack_mode == "per-batch"
    b.use_ack("async")
    assert b.ack_mode == "async"
    b.use_ack("")
    assert b.ack_mode == "per-batch"
    with pytest.raises(ConfigError, match="per-message, per-batch, async"):
        b.use_ack("sometimes")


def test_a_run_in_async_mode_against_a_real_server_records_it_and_loses_nothing(tmp_path):
    """A short Redis run with ``--ack async`` (XACKs pipelined with the next read): run.json's config says
    async, and every message came once."""
    import csv
    import json
    import shutil
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server on this machine")
    out = tmp_path / "run"
    assert main(["--broker", "redis", "--launcher", "local", "--ack", "async", "--rate", "40", "--duration", "3",
                 "--warmup", "1", "--drain", "2", "--quiet", "--out", str(out)]) == 0
    assert json.loads((out / "run.json").read_text())["config"]["ack"] == "async"
    row = next(csv.DictReader((out / "summary.csv").open()))
    assert int(row["sent"]) > 0 and row["received"] == row["sent"]
    assert row["lost"] == "0" and row["duplicated"] == "0"
