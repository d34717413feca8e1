"""The twin's simulation against closed forms and the exact recursions, its profile's inputs and errors,
and its command lines. (A short real run checked against the twin: tests/test_twin_run.py.)"""
import csv
import json
import math
import os
import shutil

import numpy as np
import pytest

from testbed.analysis import queueing as q
from testbed.config import RunConfig
from testbed.errors import ConfigError
from testbed.load import schedule
from testbed.load.distributions import Fanout, rng_for, service_sampler
from testbed.orchestration import maxrate
from testbed.twin import profile as tprof
from testbed.twin.dists import Dist
from testbed.twin.figures import figures
from testbed.twin.predict import choose_entry, stages_for
from testbed.twin.simulate import Model, fanout_draws, service_draws, simulate

LONG = dict(producer_rate=math.inf, fanout="1", arrival="poisson", duration=6000.0, warmup=10.0, drain=100.0,
            seed=7)


def ideal(dispatch="shared", **kw):
    """A simulation with no broker or harness costs at all: the ideal queue the closed forms describe."""
    cfg = RunConfig(**{**LONG, **kw})
    sim = simulate(Model(cfg, dispatch, {}))
    keep = sim.intended >= cfg.warmup * 1e9
    return (sim.end - sim.intended)[keep] / 1e9, cfg


def close(got, want, tol):
    assert abs(got - want) <= tol * want, f"{got:.5f} vs {want:.5f} (tolerance {tol:.0%})"


def test_mm1_matches_closed_form():
    e2e, _ = ideal(rate=80.0, consumer_rate=100.0, service_dist="exponential")
    close(e2e.mean(), q.mm1_mean(80, 100), 0.03)
    close(np.percentile(e2e, 50), q.mm1_quantile(80, 100, 0.5), 0.03)
    close(np.percentile(e2e, 99), q.mm1_quantile(80, 100, 0.99), 0.08)


def test_md1_matches_closed_form():
    e2e, _ = ideal(rate=80.0, consumer_rate=100.0, service_dist="fixed")
    close(e2e.mean(), q.md1_mean(80, 0.01), 0.03)
    close(np.percentile(e2e, 50), q.md1_quantile(80, 0.01, 0.5), 0.03)
    close(np.percentile(e2e, 99), q.md1_quantile(80, 0.01, 0.99), 0.08)


def test_mmc_shared_and_round_robin_match_their_closed_forms_and_differ():
    shared, _ = ideal(rate=160.0, consumer_rate=100.0, service_dist="exponential", replicas=2, duration=3000.0)
    close(shared.mean(), q.mmc_mean(160, 100, 2), 0.03)
    close(np.percentile(shared, 99), q.mmc_quantile(160, 100, 2, 0.99), 0.08)
    dealt, _ = ideal("dealt", rate=160.0, consumer_rate=100.0, service_dist="exponential", replicas=2,
                     duration=3000.0)
    close(dealt.mean(), q.dealt_mm_mean(160, 100, 2), 0.03)
    close(np.percentile(dealt, 99), q.dealt_mm_quantile(160, 100, 2, 0.99), 0.08)
    assert np.percentile(dealt, 99) > 1.3 * np.percentile(shared, 99)


@pytest.mark.parametrize("dispatch,replicas,batch,wait_ms", [
    ("shared", 1, 8, 5.0), ("shared", 3, 4, 0.0), ("shared", 2, 1, 0.0), ("dealt", 3, 4, 3.0), ("dealt", 2, 1, 0.0)])
def test_batching_and_dispatch_equal_the_exact_recursions(dispatch, replicas, batch, wait_ms):
    cfg = RunConfig(**{**LONG, "duration": 60.0, "rate": 60.0, "fanout": "poisson:3", "replicas": replicas,
                       "consumer_rate": 70.0 * replicas, "service_dist": "exponential", "batch_max": batch,
                       "batch_wait_ms": wait_ms})
    sim = simulate(Model(cfg, dispatch, {}))
    offsets = schedule(cfg.arrival, cfg.rate, cfg.duration, cfg.seed)
    counts = fanout_draws(cfg.fanout, rng_for(cfg.seed, "fanout"), len(offsets))
    arr = np.repeat(offsets, counts)
    n = len(arr)
    streams = [service_draws(cfg.service_dist, cfg.consumer_rate, rng_for(cfg.seed, f"service-b-{r}"), n)
               for r in range(replicas)]
    wait = int(wait_ms * 1e6)
    if dispatch == "shared":
        want = q.shared(arr, q.PerServer(streams), replicas, batch, wait)
    else:
        want = q.dealt(arr, q.PerServer(streams), replicas, None, batch, wait)
    assert np.array_equal(sim.end, want.departure)
    assert np.array_equal(sim.start, want.start)


def test_an_idle_replica_takes_work_while_another_fills_its_batch():
    # messages at 0, 1 and 2 ms; two idle replicas, batches of up to 4 within 10 ms, 1 ms per message
    cfg = RunConfig(rate=1000.0, arrival="constant", fanout="1", producer_rate=math.inf, replicas=2,
                    consumer_rate=1000.0, service_dist="fixed", batch_max=4, batch_wait_ms=10.0, duration=0.003,
                    warmup=0.0, drain=1.0, seed=1)
    sim = simulate(Model(cfg, "shared", {}))
    assert sim.server.tolist() == [0, 1, 0]  # the second message goes to the replica that asked first
    assert sim.end.tolist() == [12_000_000, 12_000_000, 12_000_000]  # 10 + 2 ms, 11 + 1 ms
    assert sim.batch.tolist() == [2, 1, 2]


def test_shared_batches_equal_a_simpy_model_of_the_same_queue():
    import simpy  # noqa: F401 (the dev extra has it: a missing one fails here, it is not skipped)
    import importlib.util
    import sys
    bench_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks")
    if bench_dir not in sys.path:
        sys.path.append(bench_dir)
    spec = importlib.util.spec_from_file_location("twin_bench", os.path.join(bench_dir, "twin_simulation.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cfg = bench.config(5000, 3, 4, 3.0)
    sim = simulate(Model(cfg, "shared", {}))
    assert np.array_equal(bench.with_simpy(cfg, sim.intended), sim.end)


def test_same_seed_gives_the_arrivals_and_fanouts_a_run_gets():
    cfg = RunConfig(rate=30.0, fanout="poisson:4", arrival="bursty", duration=20.0, seed=11, producer_rate=500.0)
    sim = simulate(Model(cfg, "shared", {}))
    offsets = schedule("bursty", 30.0, 20.0, 11)
    draw = Fanout.parse("poisson:4").sampler(rng_for(11, "fanout"))
    counts = np.array([draw() for _ in offsets])
    assert np.array_equal(sim.offsets, offsets) and np.array_equal(sim.counts, counts)
    assert np.array_equal(sim.intended, np.repeat(offsets, counts))
    a = service_sampler("fixed", 500.0, rng_for(11, "service-a"))()
    assert np.all(sim.a_end - offsets >= a)  # stage A spends at least its draw on every frame


def test_overload_is_predicted_unstable_and_light_load_stable():
    cfg = RunConfig(**{**LONG, "duration": 30.0, "warmup": 2.0, "drain": 2.0, "rate": 120.0,
                       "consumer_rate": 100.0})
    assert figures(simulate(Model(cfg, "shared", {})), cfg)["stable"] is False
    cfg = RunConfig(**{**LONG, "duration": 30.0, "warmup": 2.0, "drain": 2.0, "rate": 50.0, "consumer_rate": 100.0})
    f = figures(simulate(Model(cfg, "shared", {})), cfg)
    assert f["stable"] is True and f["lost"] == 0 and abs(f["throughput_out"] - 50) < 5


def test_hundred_thousand_messages_take_seconds():
    import time
    cfg = RunConfig(**{**LONG, "duration": 100.0, "rate": 250.0, "fanout": "poisson:4", "replicas": 2,
                       "consumer_rate": 700.0, "service_dist": "lognormal", "batch_max": 4, "batch_wait_ms": 2.0})
    t = time.perf_counter()
    sim = simulate(Model(cfg, "shared", {"hop": Dist.of(np.arange(1000) * 100)}))
    assert len(sim.end) > 95_000
    assert time.perf_counter() - t < 30  # a generous bound on a busy machine; the benchmark has the figure


# -- distributions, tables, the profile's errors ------------------------------------------------------

def test_dist_keeps_the_tail_and_samples_it():
    x = np.random.default_rng(1).lognormal(0, 1, 50_000)
    d = Dist.from_json(json.loads(json.dumps(Dist.of(x).to_json())))
    s = d.sample(np.random.default_rng(2), 200_000)
    close(np.percentile(s, 99), np.percentile(x, 99), 0.05)
    close(d.mean, x.mean(), 0.03)


def test_stage_table_and_perf_analyzer_csv(tmp_path):
    table = tmp_path / "gpu.yaml"
    table.write_text("stage: b\nname: gpu\nunit: ms\nbatches:\n  1: {p50: 4, p99: 6}\n  8: {p50: 10, p90: 11, p99: 12}\n")
    stage, name, t = tprof.read_stage_table(str(table))
    assert (stage, name, sorted(t)) == ("b", "gpu", [1, 8])
    assert t[8].quantile(0.5) == pytest.approx(10e6) and t[1].quantile(0.99) == pytest.approx(6e6)
    pa = tmp_path / "perf.csv"
    pa.write_text("Concurrency,Inferences/Second,p50 latency,p90 latency,p95 latency,p99 latency\n"
                  "2,400,5000,5500,5800,6000\n1,250,4000,4400,4600,5000\n")
    name, t = tprof.read_perf_analyzer(f"{pa}:batch=4")
    assert name == "perf" and list(t) == [4] and t[4].quantile(0.5) == pytest.approx(4e6)  # concurrency 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("batches:\n  one: {p50: 4}\n")
    with pytest.raises(ConfigError, match="batch size 'one'"):
        tprof.read_stage_table(str(bad))
    with pytest.raises(ConfigError, match="batch=N"):
        tprof.read_perf_analyzer(f"{pa}:size=4")


def _profile_with_table(tmp_path):
    table = tmp_path / "gpu.yaml"
    table.write_text("name: gpu\nbatches:\n  1: {p50: 4, p99: 6}\n  4: {p50: 8, p99: 10}\n")
    return tprof.build([], [str(table)])


def test_missing_broker_and_batch_size_say_which_runs_would_provide_them(tmp_path):
    prof = _profile_with_table(tmp_path)
    cfg = RunConfig(broker="zeromq", rate=30.0, batch_max=8)
    with pytest.raises(ConfigError, match=r"no run of broker 'zeromq'.*python -m testbed.run --broker zeromq"):
        choose_entry(prof, cfg)
    with pytest.raises(ConfigError, match=r"batch sizes 1, 4 only; --batch-max 8 .*--batch-max 8"):
        stages_for(prof, cfg, stage_b="gpu")
    with pytest.raises(ConfigError, match="no stage B 'cpu'"):
        stages_for(prof, cfg, stage_b="cpu")
    a, b, _ = stages_for(prof, RunConfig(batch_max=3), stage_b="gpu")
    assert a is None and sorted(b) == [1, 4]


def _fake_run(path, machine="vm", seed=1):
    """A small run folder: constant arrivals, one replica, fixed service of 5 ms, no queueing."""
    os.makedirs(path)
    cfg = RunConfig(broker="inproc", rate=20.0, arrival="constant", fanout="2", producer_rate=1000.0,
                    consumer_rate=400.0, duration=5.0, warmup=1.0, seed=seed, message_bytes=1024)
    with open(os.path.join(path, "run.json"), "w") as fh:
        json.dump({"run_id": os.path.basename(path), "complete": True, "config": cfg.to_dict(),
                   "broker": {"name": "inproc", "impl": "q", "launcher": "embedded", "options": {}},
                   "environment": {"machine": machine, "cpu_count": 2, "platform": "linux"}}, fh)
    offsets = schedule("constant", 20.0, 5.0, seed)
    head = ["seq", "frame_id", "index", "count", "replica", "batch", "intended_ns", "published_ns", "received_ns",
            "start_ns", "end_ns", "e2e_us", "status", "free_ns", "recv_call_ns", "ack_call_ns", "b_harness_ns",
            "publish_call_ns", "a_harness_ns"]
    rows, seq, free = [], 0, 0
    for f, t in enumerate(offsets.tolist()):
        for i in range(2):
            pub = t + 1_050_000 + i * 10_000
            rec = max(pub + 50_000, free + 5_000)
            start = rec + 3_000
            end = start + 2_500_000 + 20_000
            rows.append([seq, f, i, 2, 0, 1, t, pub, rec, start, end, (end - t) / 1e3, "ok", free, 5_000, 1_000,
                         10_000, 2_000, 5_000])
            free = end + 15_000
            seq += 1
    with open(os.path.join(path, "messages.csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(head)
        w.writerows(rows)
    e2e = np.array([r[11] for r in rows]) / 1e3
    with open(os.path.join(path, "summary.csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["run_id", "stable", "e2e_p50_ms", "e2e_p99_ms", "throughput_out"])
        w.writerow([os.path.basename(path), "true", np.percentile(e2e, 50), np.percentile(e2e, 99), 40.0])


def test_profile_measures_a_run_and_refuses_to_mix_machines(tmp_path):
    _fake_run(str(tmp_path / "a"))
    prof = tprof.build([str(tmp_path / "a")])
    e = prof.brokers["inproc"][0]
    assert e["hop"].quantile(0.5) == pytest.approx(50_000, rel=0.01)
    assert e["b_post"][1].quantile(0.5) == pytest.approx(15_000, rel=0.01)
    assert e["b_over"].quantile(0.5) == pytest.approx(20_000, rel=0.01)  # measured 2.52 ms vs the 2.5 ms drawn
    assert e["a_over"].quantile(0.5) == pytest.approx(50_000, rel=0.01)  # 1.05 ms to the first publish vs 1 ms
    assert prof.sources[0]["machine"]["machine"] == "vm"
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    meta = json.loads((tmp_path / "b" / "run.json").read_text())
    meta["environment"]["machine"] = "other"
    (tmp_path / "b" / "run.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="different machines.*--allow-mixed-machines"):
        tprof.build([str(tmp_path)])
    mixed = tprof.build([str(tmp_path)], allow_mixed=True)
    assert mixed.mixed_machines and len(mixed.machines) == 2
    path = tmp_path / "p.json"
    tprof.save(mixed, str(path))
    again = tprof.load(str(path))
    assert again.mixed_machines and len(again.brokers["inproc"]) == 2


# -- command lines ------------------------------------------------------------------------------------------

def _cli(module, args, capsys):
    import importlib
    rc = importlib.import_module(module).main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_predict_and_advise_cli_write_json_keyed_like_summary(tmp_path, capsys):
    _fake_run(str(tmp_path / "run"))
    p = str(tmp_path / "p.json")
    assert _cli("testbed.profile", [str(tmp_path / "run"), "--out", p, "--quiet"], capsys)[0] == 0
    out = str(tmp_path / "pred.json")
    rc, text, _ = _cli("testbed.predict", ["--profile", p, "--broker", "inproc", "--rate", "20", "--fanout", "2",
                                           "--consumer-rate", "400", "--producer-rate", "1000", "--arrival", "constant",
                                           "--duration", "20", "--reps", "2",
                                           "--json", out], capsys)
    assert rc == 0 and "e2e_p99_ms" in text
    d = json.loads(open(out).read())
    for k in ("e2e_p50_ms", "e2e_p99_ms", "frame_p99_ms", "throughput_out", "stable"):
        assert k in d and k in d["band"]
    assert d["stable"] is True and 3.5 < d["e2e_p50_ms"] < 8  # 1 ms + hop + 2.5 ms (+2.5 ms)
    rc, _, _ = _cli("testbed.predict", ["--profile", p, "--check", str(tmp_path / "run"), "--json", out], capsys)
    d = json.loads(open(out).read())
    assert rc == 0 and d["measured"]["e2e_p50_ms"] > 0 and "e2e_p99_ms" in d["error_pct"]
    adv = str(tmp_path / "adv.json")
    rc, text, _ = _cli("testbed.advise", ["--profile", p, "--rate", "40", "--fanout", "2", "--consumer-rate", "50",
                                          "--slo-p99-ms", "300", "--batch-sizes", "1", "--max-replicas", "4", "--producer-rate", "1000",
                                          "--json", adv], capsys)
    picks = json.loads(open(adv).read())["picks"]
    assert rc == 0 and picks[0]["replicas"] == 2  # 80 msg/s at 50 msg/s per replica needs two
    assert all(picks[i]["replicas"] <= picks[i + 1]["replicas"] for i in range(len(picks) - 1))


@pytest.mark.parametrize("module,args,needle", [
    ("testbed.predict", ["--profile", "PROFILE", "--reps", "0"], "--reps"),
    ("testbed.predict", ["--profile", "/nonexistent.json"], "cannot be read"),
    ("testbed.predict", ["--profile", "PROFILE", "--broker", "kafka"], "no run of broker 'kafka'"),
    ("testbed.predict", ["--profile", "PROFILE", "--check", "RUN", "--rate", "5"], "leave out --rate"),
    ("testbed.advise", ["--profile", "PROFILE", "--slo-p99-ms", "50", "--batch-sizes", "x"], "--batch-sizes"),
    ("testbed.advise", ["--profile", "PROFILE", "--slo-p99-ms", "50", "--replicas", "2"], "--max-replicas"),
    ("testbed.advise", ["--profile", "PROFILE", "--slo-p99-ms", "-1"], "--slo-p99-ms"),
    ("testbed.profile", ["--out", "X"], "at least one run folder"),
    ("testbed.profile", ["/nonexistent", "--out", "X"], "neither a run folder"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, module, args, needle):
    _fake_run(str(tmp_path / "run"))
    p = str(tmp_path / "p.json")
    tprof.save(tprof.build([str(tmp_path / "run")]), p)
    args = [a.replace("PROFILE", p).replace("RUN", str(tmp_path / "run")) for a in args]
    if "X" in args:
        args[args.index("X")] = str(tmp_path / "never.json")
    rc, _, err = _rc(module, args, capsys)
    assert rc == 2
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "never.json")


def _rc(module, args, capsys):
    import importlib
    try:
        rc = importlib.import_module(module).main(args)
    except SystemExit as exc:  # argparse's own usage errors
        rc = exc.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_max_rate_search_bracketed_from_the_twin_needs_fewer_probes(tmp_path):
    def runner(threshold):
        seen = []

        def probe(rate):
            seen.append(rate)
            return rate <= threshold
        return probe, seen
    search = maxrate.Search(50.0, 1.0, 1000.0, 12, 0.05)
    probe, seen = runner(37.0)
    real = maxrate._search(lambda r: (seen.append(r), r <= 37.0)[1], search, seen, str(tmp_path))
    n_real = len(seen)
    seen2 = []
    guided = maxrate._search_from_guess(lambda r: (seen2.append(r), r <= 37.0)[1], search, seen2, str(tmp_path), 38.5)
    assert guided.bracketed and abs(guided.rate - real.rate) / 37.0 <= 0.06
    assert len(seen2) < n_real / 2
    seen3 = []
    wrong = maxrate._search_from_guess(lambda r: (seen3.append(r), r <= 37.0)[1], search, seen3, str(tmp_path), 90.0)
    assert wrong.bracketed and abs(wrong.rate - 37.0) / 37.0 <= 0.06  # a bad guess still ends at the answer


def test_check_a_folder_of_runs_writes_rows_verdicts_and_a_plot(tmp_path, capsys):
    _fake_run(str(tmp_path / "profiled" / "a"))
    _fake_run(str(tmp_path / "held" / "b"), seed=2)
    _fake_run(str(tmp_path / "held" / "c"), seed=3)
    p = str(tmp_path / "p.json")
    tprof.save(tprof.build([str(tmp_path / "profiled")]), p)
    out_csv, out_json, png = (str(tmp_path / n) for n in ("h.csv", "h.json", "h.png"))
    rc, text, _ = _cli("testbed.predict", ["--profile", p, "--check", str(tmp_path / "held"), "--reps", "2",
                                           "--csv", out_csv, "--json", out_json, "--plot", png], capsys)
    assert rc == 0 and "median |error|" in text
    rows = list(csv.DictReader(open(out_csv)))
    assert [os.path.basename(r["run"]) for r in rows] == ["b", "c"] and all(r["in_profile"] == "false" for r in rows)
    v = json.loads(open(out_json).read())["verdicts"]
    assert v["runs"] == 2 and v["stable"]["right_pct"] == 100.0
    assert os.path.getsize(png) > 10_000
