"""The twin against a short real run: profiled on one in-process run, it predicts another it has not seen
(another rate, fan-out and replica count) close to what that run measured."""
import math

from testbed.config import RunConfig, validate
from testbed.orchestration.execute import execute
from testbed.twin import predict as tp
from testbed.twin import profile as tprof


def run(tmp_path, name, **kw):
    base = dict(broker="inproc", arrival="poisson", fanout="2", producer_rate=500.0, message_bytes=1024,
                service_dist="fixed", duration=5.0, warmup=1.0, drain=1.0, seed=5, out=str(tmp_path / name))
    cfg = RunConfig(**{**base, **kw})
    validate(cfg)
    res = execute(cfg)
    assert res.complete
    return res


def test_twin_predicts_a_held_out_real_run(tmp_path):
    run(tmp_path, "profiled", rate=40.0, consumer_rate=200.0)
    held = run(tmp_path, "held-out", rate=50.0, fanout="poisson:3", replicas=2, consumer_rate=120.0)
    prof = tprof.build([str(tmp_path / "profiled")])
    res = tp.check(prof, held.run_dir, reps=3)
    pred, meas = res["prediction"].point, res["measured"]
    assert pred["stable"] == meas["stable"] is True
    # a 5 s run on a busy machine: loose bounds that a wrong model (no fan-out bursts, no costs, the
    # wrong dispatch) would still miss
    assert abs(pred["e2e_p50_ms"] - meas["e2e_p50_ms"]) <= 0.25 * meas["e2e_p50_ms"] + 0.5
    assert abs(pred["e2e_p99_ms"] - meas["e2e_p99_ms"]) <= 0.35 * meas["e2e_p99_ms"] + 1.0
    assert abs(pred["throughput_out"] - meas["throughput_out"]) <= 0.1 * meas["throughput_out"]
    assert not any("not held out" in n for n in res["prediction"].notes)
    assert math.isfinite(pred["frame_p99_ms"])
