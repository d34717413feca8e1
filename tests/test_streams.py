"""Camera streams (``--streams N``) and closed-loop load (``--arrival closed:K``): one stream is exactly
the run without streams, each stream has its own seeds, order and loss are counted per stream (short runs
on ZeroMQ, Redis and Apache Kafka), a closed-loop run never has more than K frames in flight and measures
latency from each frame's release, and bad values are refused with one line."""
from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest

from testbed.analysis import columns
from testbed.analysis.metrics import account, frames_in_flight
from testbed.config import RunConfig, validate
from testbed.harness.records import FRAME_DTYPE, frame_of, message_dtype
from testbed.load import offered_schedule, schedule, stream_config, stream_schedule, stream_seed
from testbed.load.distributions import Fanout, rng_for
from testbed.orchestration.execute import Run

BASE = dict(arrival="constant", fanout="2", producer_rate=float("inf"), consumer_rate=float("inf"),
            message_bytes=1024, duration=2.5, warmup=0.5, drain=3.0, seed=5)


def run(tmp_path, name, **kw):
    cfg = RunConfig(**{**BASE, "out": str(tmp_path / name), **kw})
    validate(cfg)
    r = Run(cfg)
    res = r.execute()
    return res, r.collector.frames_array(), r.collector.messages_array(), r.state.t0


# -- one stream is today's run; each stream its own seeds (no run needed) -------------------------------
def test_one_stream_is_the_run_without_streams_and_streams_have_their_own_seeds():
    cfg = RunConfig(arrival="poisson", rate=40.0, duration=5.0, seed=9)
    assert stream_config(cfg, 0) is cfg and stream_seed(9, 0) == 9
    assert np.array_equal(offered_schedule(cfg), schedule("poisson", 40.0, 5.0, 9))
    many = RunConfig(arrival="poisson", rate=40.0, duration=5.0, seed=9, streams=4)
    seeds = [stream_seed(9, s) for s in range(4)]
    assert seeds[0] == 9 and len(set(seeds)) == 4
    scheds = [stream_schedule(many, s) for s in range(4)]
    assert np.array_equal(scheds[0], schedule("poisson", 10.0, 5.0, 9))  # stream 0: the run's seed, its share
    assert all(not np.array_equal(scheds[0][:10], x[:10]) for x in scheds[1:])
    assert np.array_equal(offered_schedule(many), np.sort(np.concatenate(scheds)))
    each = RunConfig(rate_per_stream=7.0, streams=3)
    assert stream_config(each, 2).rate == 7.0 and each.offered_message_rate == pytest.approx(21.0 * 4)


def test_accounting_is_per_stream():
    # two streams: stream s's k-th message has seq 2k + s; stream 0 sends 3 (seqs 0, 2, 4), stream 1 two (1, 3)
    f = np.zeros(3, FRAME_DTYPE)
    f["stream"], f["frame_id"], f["n"], f["first_seq"] = [0, 1, 0], [0, 0, 1], [2, 2, 1], [0, 1, 4]
    assert frame_of(f, [0, 1, 2, 3, 4, 6], 2).tolist() == [0, 1, 0, 1, 2, -1]
    m = np.zeros(5, message_dtype((), ()))
    # replica 0 finishes 3 then 0 (different streams: in order) then 4 then 2 (stream 0: 2 after 4, reordered)
    m["seq"], m["replica"] = [3, 0, 4, 2, 3], [0, 0, 0, 0, 1]
    acc = account(f, m, streams=2)
    assert (acc.sent, acc.received, acc.lost, acc.duplicated, acc.reordered) == (5, 4, 1, 1, 1)
    assert acc.lost_seqs.tolist() == [1]


# -- real runs --------------------------------------------------------------------------------------
def test_one_stream_run_follows_the_runs_own_schedule_and_draws(tmp_path):
    res, frames, msgs, t0 = run(tmp_path, "one", broker="zeromq", arrival="poisson", rate=60.0,
                                fanout="poisson:2", producer_rate=500.0)
    cfg = RunConfig(**{**BASE, "arrival": "poisson", "rate": 60.0, "fanout": "poisson:2"})
    want = schedule("poisson", 60.0, cfg.duration, cfg.seed)
    frames = np.sort(frames, order="frame_id")
    assert np.array_equal(frames["intended"] - t0, want)
    draw = Fanout.parse("poisson:2").sampler(rng_for(cfg.seed, "fanout"))
    assert frames["n"].tolist() == [draw() for _ in range(len(want))]
    assert np.array_equal(frames["first_seq"], np.r_[0, np.cumsum(frames["n"])[:-1]])
    assert res.summary["streams"] == 1 and set(msgs["stream"].tolist()) == {0}


def _per_stream_checks(frames, msgs, streams):
    """Every stream sent its own frames 0..F-1 and every message of it arrived once, in order per consumer."""
    for s in range(streams):
        fs = frames[frames["stream"] == s]
        assert sorted(fs["frame_id"].tolist()) == list(range(len(fs))), "own frame numbers"
        ms = msgs[msgs["seq"] % streams == s]
        assert (ms["stream"] == s).all()
        assert sorted(ms["seq"].tolist()) == list(range(s, int(fs["n"].sum()) * streams, streams)), "no loss"
        for r in np.unique(ms["replica"]):
            seqs = ms["seq"][ms["replica"] == r]
            assert np.all(np.diff(seqs.astype(np.int64)) > 0), f"stream {s} in order at replica {r}"


STREAM_BROKERS = [
    ("zeromq", {}),
    pytest.param("redis", {"launcher": "local"},
                 marks=pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")),
    pytest.param("kafka", {"launcher": "local", "drain": 6.0}, marks=pytest.mark.skipif(
        shutil.which("java") is None, reason="no Java runtime for Apache Kafka")),
]


@pytest.mark.parametrize("broker, extra", STREAM_BROKERS)
def test_streams_keep_order_and_lose_nothing_per_stream(tmp_path, broker, extra):
    res, frames, msgs, t0 = run(tmp_path, broker, broker=broker, streams=3, replicas=2, rate=150.0, **extra)
    s = res.summary
    assert res.complete and s["streams"] == 3 and s["offered_rate"] == 150.0
    assert s["lost"] == 0 and s["duplicated"] == 0 and s["reordered"] == 0
    assert s["sent"] == s["received"] == len(msgs) == 2 * len(frames)
    _per_stream_checks(frames, msgs, 3)
    # each stream offered its share (50 frames/s over 2.5 s, constant): its own schedule
    for st in range(3):
        assert len(frames[frames["stream"] == st]) == pytest.approx(125, abs=1)
    if broker == "kafka":  # a key per stream: all of a stream's messages on one partition, so one consumer
        for st in range(3):
            assert len(np.unique(msgs["replica"][msgs["stream"] == st])) == 1
    with open(os.path.join(res.run_dir, "summary.csv")) as fh:
        assert next(csv.DictReader(fh))["streams"] == "3"
    meta = json.load(open(os.path.join(res.run_dir, "run.json")))
    assert meta["load"]["streams"] == 3 and len(set(meta["load"]["stream_seeds"])) == 3
    assert {"producer-0", "producer-1", "producer-2", "consumer-0", "consumer-1"} <= set(meta["stages"])
    with open(os.path.join(res.run_dir, "messages.csv")) as fh:
        rows = list(csv.DictReader(fh))
    assert {r["stream"] for r in rows} == {"0", "1", "2"}


def test_summary_streams_column_is_declared():
    col = columns.by_name()["streams"]
    assert col.doc and columns.names().index("streams") == columns.names().index("offered_rate") + 1


# -- closed loop ------------------------------------------------------------------------------------
@pytest.mark.parametrize("broker", ["inproc", "zeromq"])
def test_closed_loop_keeps_k_frames_in_flight_and_counts_latency_from_the_release(tmp_path, broker, capsys):
    k = 3
    res, frames, msgs, t0 = run(tmp_path, broker, broker=broker, arrival="closed:3", streams=2, replicas=2,
                                fanout="poisson:2", consumer_rate=400.0, duration=3.0)
    s = res.summary
    assert res.complete and s["arrival"] == "closed:3" and s["lost"] == 0
    live = frames_in_flight(frames, msgs, 2)
    assert live.max() <= k, live
    assert (live == k).all(), "each stream filled its window"
    assert (frames["n"] == 0).any(), "frames without messages finish at once and free their slot"
    finish = {}  # (stream, frame) -> when its last message's service ended (or stage A published it)
    for m in msgs:
        key = (int(m["stream"]), int(m["frame_id"]))
        finish[key] = max(finish.get(key, 0), int(m["end"]))
    for st in range(2):
        fs = np.sort(frames[frames["stream"] == st], order="frame_id")
        assert (fs["intended"][:k] == t0).all(), "K frames released at the start"
        done = np.sort([finish.get((st, int(f["frame_id"])), int(f["published"])) for f in fs])
        # frame j >= K is released after j - K + 1 of its stream's frames finished, and soon after
        rel = fs["intended"][k:].astype(np.int64)
        assert np.all(rel > done[:len(rel)])
        assert np.median(rel - done[:len(rel)]) < 5e6, "released when a frame finished, not on a schedule"
        # latency is from the release: stage A (no service time) takes a frame right after its release
        assert np.median(fs["start"][k:] - fs["intended"][k:]) < 2e6
    e2e = msgs["end"].astype(np.int64) - msgs["intended"].astype(np.int64)
    assert np.all(e2e > 0)
    meta = json.load(open(os.path.join(res.run_dir, "run.json")))
    assert meta["load"]["loop"] == "closed" and meta["load"]["frames_in_flight_per_stream"] == k
    from testbed.analysis.report import human
    assert "no coordinated-omission correction" in human(s, res.run_dir)


# -- bad input: one line each ------------------------------------------------------------------------
@pytest.mark.parametrize("args, says", [
    (["--arrival", "closed:0"], "closed:K"),
    (["--arrival", "closed:x"], "closed:K"),
    (["--arrival", "closed"], "closed:K"),
    (["--arrival", "closed:4", "--find-max-rate"], "closed-loop run has none"),
    (["--broker", "zeromq", "--broker-url", "tcp://127.0.0.1:5999", "--streams", "2"], "one endpoint per stream"),
])
def test_bad_load_values_are_one_line(tmp_path, capsys, args, says):
    from testbed.run import main
    out = tmp_path / "never"
    rc = main(["--quiet", "--duration", "2", "--warmup", "0.5", "--out", str(out), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and says in err, err
    assert not os.path.exists(out / "summary.csv")


# -- stage A's pieces -------------------------------------------------------------------------------
def test_pacer_never_returns_before_the_deadline_and_keeps_its_margin_in_bounds():
    import time

    from testbed.load.pacing import MARGIN_MAX_NS, MARGIN_MIN_NS, Pacer
    p = Pacer()
    late = []
    for _ in range(20):
        deadline = time.monotonic_ns() + 1_000_000
        p.wait_until(deadline)
        late.append(time.monotonic_ns() - deadline)
        assert MARGIN_MIN_NS <= p.margin_ns <= MARGIN_MAX_NS
    assert min(late) >= 0
    t = time.monotonic_ns()
    p.wait_until(t - 5_000_000)  # already due: at once
    assert time.monotonic_ns() - t < 5_000_000


def test_flat_records_round_trip():
    from testbed.harness import records

    class Pipe:
        chunks = []

        def send_bytes(self, b):
            self.chunks.append(bytes(b))
    pipe = Pipe()
    rep = records.FlatReporter(pipe, records.FRAME_DTYPE, records.FRAMES, max_rows=2)
    add = rep.add  # the loop holds it across flushes
    add((3, 7, 2, 0, 100, 110, 120, 130, 40, 1))
    add((4, 11, 0, 1, 200, 210, 220, 230, -5, 1))
    rep.flush(1)
    add((5, 11, 1, 0, 300, 310, 320, 330, 6, 0))
    rep.flush(2)
    got = np.concatenate([records.parse(c, None)[1] for c in pipe.chunks])
    assert got["frame_id"].tolist() == [3, 4, 5] and got["first_seq"].tolist() == [7, 11, 11]
    assert got["a_harness"].tolist() == [40, -5, 6] and got["stream"].tolist() == [1, 1, 0]
    assert got["failed"].tolist() == [0, 1, 0]


# -- streams in sweeps and the max-rate search ------------------------------------------------------
def test_a_sweep_takes_streams_like_any_other_key(tmp_path):
    """``streams`` in an experiment grid: one run per value, each with that many camera streams (ZeroMQ:
    one endpoint per stream, made by the launcher for every run), summary.csv's ``streams`` says which."""
    import textwrap

    from testbed.orchestration import grid, sweep
    path = tmp_path / "exp.yaml"
    path.write_text(textwrap.dedent("""
        name: streams
        grid:
          broker: [zeromq]
          streams: [1, 3]
        fixed:
          arrival: constant
          rate: 60
          fanout: 1
          producer_rate: inf
          consumer_rate: inf
          duration: 2
          warmup: 0.5
          drain: 1
        """).lstrip())
    points = grid.load(str(path)).points
    assert sorted(p.cfg.streams for p in points) == [1, 3] and len({p.name for p in points}) == 2
    out = tmp_path / "res"
    assert sweep.main([str(path), "--out", str(out), "--quiet"]) == 0
    seen = {}
    for p in points:
        with open(out / p.name / "summary.csv") as fh:
            row = next(csv.DictReader(fh))
        seen[int(row["streams"])] = row
        assert row["complete"] == "true" and row["lost"] == "0" and float(row["offered_rate"]) == 60.0
    assert sorted(seen) == [1, 3]


def test_the_max_rate_search_splits_each_probe_over_the_streams(tmp_path):
    """``--find-max-rate --streams 2``: every probe runs two camera streams and its rate is their total
    (each stream offers half); the search still finds the known capacity band (inproc, 5 ms per message)."""
    from testbed.orchestration import maxrate
    cfg = RunConfig(broker="inproc", rate=1, arrival="constant", fanout="1", producer_rate=float("inf"),
                    consumer_rate=200.0, service_dist="fixed", service_mode="sleep", message_bytes=1024,
                    duration=3.0, warmup=1.0, drain=0.5, no_trace=True, streams=2)
    out = str(tmp_path / "search")
    res = maxrate.find(cfg, maxrate.Search(slo_p99_ms=100, min_rate=100, max_rate=400, max_probes=3,
                                           tolerance=0.3), out)
    with open(os.path.join(out, "maxrate.csv"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and rows[0]["passed"] == "true" and any(r["passed"] == "false" for r in rows)
    assert res.rate is not None and res.rate <= 220
    for r in rows:
        with open(os.path.join(r["run_dir"], "summary.csv")) as fh:
            s = next(csv.DictReader(fh))
        assert s["streams"] == "2" and float(s["offered_rate"]) == float(r["rate"])
        meta = json.load(open(os.path.join(r["run_dir"], "run.json")))
        assert meta["load"]["streams"] == 2
        assert {"producer-0", "producer-1"} <= set(meta["stages"])


@pytest.mark.parametrize("args, says", [
    (["--streams", "0"], "--streams 0 is not allowed"),
    (["--streams", "65"], "from 1 to 64"),
    (["--rate-per-stream", "-3"], "--rate-per-stream -3 is not allowed"),
    (["--rate-per-stream", "nan"], "--rate-per-stream"),
])
def test_bad_stream_values_are_one_line(tmp_path, capsys, args, says):
    from testbed.run import main
    out = tmp_path / "never"
    rc = main(["--quiet", "--duration", "2", "--warmup", "0.5", "--out", str(out), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and says in err and "Traceback" not in err, err
    assert not os.path.exists(out / "summary.csv")
