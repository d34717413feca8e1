"""The run's phases and their undoing, the progress figures, and the campaign that keeps one broker
across runs."""
from __future__ import annotations

import os

import numpy as np
import pytest

import brokers
from testbed.config import RunConfig
from testbed.errors import BrokerError, StageError
from testbed.harness import records
from testbed.orchestration import campaign as campaign_mod
from testbed.orchestration import execute as ex
from testbed.orchestration.campaign import Campaign, broker_key
from testbed.orchestration.collector import Collector
from testbed.orchestration.live import parse_tick

DTYPE = records.message_dtype((), ())
QUICK = dict(rate=20.0, arrival="constant", fanout="1", consumer_rate=1000.0, duration=1.5, warmup=0.5, drain=1.0, no_trace=True)


def _frames(first_seq: int, n: int) -> bytes:
    arr = np.zeros(n, records.FRAME_DTYPE)
    arr["frame_id"] = np.arange(first_seq, first_seq + n)
    arr["first_seq"] = arr["frame_id"]
    arr["n"] = 1
    return records.FRAMES + arr.tobytes()


def _messages(seqs) -> bytes:
    arr = np.zeros(len(seqs), DTYPE)
    arr["seq"] = seqs
    return records.MESSAGES + arr.tobytes()


def test_backlog_is_never_negative_when_stage_b_reports_first():
    """Stage B's records of messages 0..9 arrive before stage A's frame records of them."""
    col = Collector([], DTYPE)
    col.handle(1, _messages(range(10)))
    assert col.sent == 0 and col.distinct == 10
    assert col.backlog == 0
    col.handle(0, _frames(0, 5))       # stage A's report is still behind
    assert col.backlog == 0
    col.handle(0, _frames(5, 10))      # stage A caught up: 15 sent, 10 finished
    assert col.backlog == 5
    col.handle(1, _messages([3, 3, 12]))  # a duplicate and one more
    assert col.finished == 13 and col.distinct == 11 and col.backlog == 4
    line = ex.progress_line(3, "load", 15, 10, col.backlog)
    assert parse_tick(line)["backlog"] == 4
    assert parse_tick(ex.progress_line(1, "load", 0, 10, -5))["backlog"] == 0


def test_hooks_see_the_load_and_are_undone(tmp_path):
    seen = []

    class Hook(ex.RunHook):
        def on_start(self, run):
            seen.append(("start", run.state.t0 > 0))

        def on_tick(self, run, now_ns):
            if len(seen) < 3:
                seen.append(("tick", now_ns >= run.state.t0 - ex.START_DELAY_NS))

        def on_stop(self, run):
            seen.append(("stop", run.stages.stop_evt.is_set()))

    cfg = RunConfig(broker="inproc", out=str(tmp_path / "run"), **QUICK)
    r = ex.execute(cfg, hooks=[Hook()])
    assert r.complete
    assert seen[0] == ("start", True) and ("tick", True) in seen
    assert seen[-1] == ("stop", False)  # before the stages are told to stop


def test_a_failing_phase_undoes_what_was_done(tmp_path, monkeypatch):
    """Topic made, stages started, then the wait for ready fails: the stages are stopped, the topic
    deleted, the admin closed, the broker we started stopped; partial results say why."""
    calls = []
    real = brokers.get("zeromq")

    class Watched(real):
        def delete_topic(self, topic):
            calls.append("delete_topic")
            return super().delete_topic(topic)

        def close(self):
            calls.append("close")
            return super().close()

    monkeypatch.setattr(ex.brokers, "get", lambda name: Watched if name == "zeromq" else real)
    stopped = []
    orig_launch = ex.launch

    def launch(cfg, run_id, run_dir):
        h = orig_launch(cfg, run_id, run_dir)
        orig_stop = h.stop
        h.stop = lambda: (stopped.append(True), orig_stop())
        return h
    monkeypatch.setattr(ex, "launch", launch)
    monkeypatch.setattr(ex, "READY_TIMEOUT_S", 0.0)

    class NeverReady(ex.Collector):  # the stages' "ready" reports are dropped: the phase must time out
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.ready = _Forgetful()
    monkeypatch.setattr(ex, "Collector", NeverReady)
    cfg = RunConfig(broker="zeromq", out=str(tmp_path / "run"), connect_timeout=0.2, **QUICK)
    run = ex.Run(cfg)
    with pytest.raises(StageError, match="not ready"):
        run.execute()
    assert calls[:2] == ["delete_topic", "close"] and stopped == [True]
    assert not any(w.is_alive() for w in run.stages.workers)
    assert os.path.exists(tmp_path / "run" / "summary.csv")
    assert "not ready" in open(tmp_path / "run" / "summary.csv").read()


def test_campaign_starts_a_broker_once_and_again_only_when_needed(tmp_path, monkeypatch):
    started, stopped = [], []

    class Handle:
        def __init__(self, cfg):
            self.cfg = cfg

        def stop(self):
            stopped.append(self.cfg.broker)

    def launch(cfg, run_id, run_dir):
        if cfg.broker_opt.get("fail"):
            raise BrokerError("no such binary\nmore")
        started.append((cfg.broker, run_id, run_dir))
        return Handle(cfg)
    import testbed.launchers
    monkeypatch.setattr(testbed.launchers, "launch", launch)
    a, b = RunConfig(broker="zeromq", rate=10.0), RunConfig(broker="zeromq", rate=99.0, replicas=3)
    c = RunConfig(broker="zeromq", broker_opt={"x": "1"})
    assert broker_key(a) == broker_key(b) != broker_key(c)
    with Campaign(str(tmp_path), "t") as camp:
        h = camp.broker(a)
        assert camp.broker(b) is h and len(started) == 1       # same broker settings: kept
        assert started[0][2].startswith(str(tmp_path))
        h2 = camp.broker(c)
        assert h2 is not h and stopped == ["zeromq"]            # other options: a fresh broker
        camp.reset()
        assert camp.handle is None and len(stopped) == 2
        bad = RunConfig(broker="zeromq", broker_opt={"fail": "1"})
        with pytest.raises(BrokerError, match="broker zeromq did not start: no such binary$"):
            camp.broker(bad)
        n = len(started)
        with pytest.raises(BrokerError, match="did not start"):  # not tried again for the same settings
            camp.broker(bad)
        camp.broker(a)
        assert len(started) == n + 1
    assert len(stopped) == 3  # closing the campaign stops the last broker


def test_campaign_runs_configurations_on_one_broker(tmp_path):
    with Campaign(str(tmp_path / "_brokers"), "t") as camp:
        r1 = camp.run(RunConfig(broker="zeromq", out=str(tmp_path / "a"), **QUICK))
        h = camp.handle
        r2 = camp.run(RunConfig(broker="zeromq", out=str(tmp_path / "b"), **{**QUICK, "rate": 30.0}))
        assert camp.handle is h and camp.launches == 1
    assert r1.complete and r2.complete
    assert r1.summary["sent"] == 30 and r2.summary["sent"] == 45


def test_grid_blocks_agree_with_the_campaign(tmp_path):
    from testbed.orchestration import grid
    p = tmp_path / "e.yaml"
    p.write_text("grid:\n  broker: [inproc, zeromq]\n  rate: [10, 20]\n")
    pts = grid.load(str(p)).points
    assert [pt.block == broker_key(pt.cfg) for pt in pts] == [True] * 4
    assert len({pt.block for pt in pts}) == 2
    assert campaign_mod.BROKER_KEYS[0] == "broker"


def test_a_stage_b_replica_killed_and_restarted_mid_run(tmp_path):
    """The place a fault schedule uses: a replica killed on purpose is not an error, and the replica
    started in its place reports under the same slot until the end."""
    class Bounce(ex.RunHook):
        done = []

        def on_tick(self, run, now_ns):
            t = (now_ns - run.state.t0) / 1e9
            if t > 0.5 and not self.done:
                run.kill_replica(1)
                self.done.append("killed")
            elif t > 0.8 and self.done == ["killed"]:
                run.restart_replica(1)
                self.done.append("restarted")

        def on_stop(self, run):
            self.ready_again = 2 in run.collector.ready  # slot 2: stage B replica 1

    cfg = RunConfig(broker="redis", launcher="local", replicas=2, out=str(tmp_path / "run"),
                    **{**QUICK, "duration": 3.0})
    hook = Bounce()
    r = ex.execute(cfg, hooks=[hook])
    assert hook.done == ["killed", "restarted"] and hook.ready_again
    assert r.complete, r.summary["error"]
    assert r.summary["received"] > 0


class _Forgetful(dict):
    """A dict that keeps nothing set in it."""

    def __setitem__(self, key, value):
        pass
