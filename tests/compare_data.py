"""Run folders written the way the testbed writes them, with chosen values, for the plot and report tests.

Latencies span four decades (tens of microseconds to seconds) so that log axes have to thin their
labels; the vision rows hold steps from 1 us to tens of ms, so most of them are too small to see in a
stacked bar. Each broker of the registry gets its own runs.
"""
from __future__ import annotations

import os

import numpy as np

import brokers
from testbed.analysis import report

STEPS_A = {"decode": 1.2, "resize": 2.1, "normalize": 0.4, "h2d": 0.001, "infer": 31.0, "d2h": 0.002,
           "postprocess": 24.0, "serialize": 0.05, "publish": 0.2}
STEPS_B = {"deserialize": 0.5, "h2d": 0.001, "normalize": 1.1, "infer": 80.0, "d2h": 0.01}


def _run(base: str, name: str, broker: str, rho: float, scale_ms: float, seed: int, vision: bool = False,
         old: bool = False) -> str:
    d = os.path.join(base, name)
    os.makedirs(d)
    rng = np.random.default_rng(seed)
    n = 400
    e2e_ms = scale_ms * rng.lognormal(0.0, 1.2, n)
    intended = np.arange(n) * 10_000_000 + 1_000_000_000
    lost = 7 if rho > 1 else 0
    status = ["ok"] * (n - lost) + ["lost"] * lost
    report.write_csv(os.path.join(d, "messages.csv"),
                     [{"seq": i, "intended_ns": int(intended[i]), "e2e_us": round(float(e2e_ms[i]) * 1e3, 3)
                       if status[i] == "ok" else "", "status": status[i]} for i in range(n)])
    report.write_csv(os.path.join(d, "timeseries.csv"),
                     [{"t_s": t, "backlog": int(t * 40 * max(0.0, rho - 1) + rng.integers(0, 4))} for t in range(6)])
    p = lambda q: float(np.percentile(e2e_ms, q))  # noqa: E731
    row = {"run_id": name, "complete": True, "broker": broker, "broker_impl": f"{broker} 1.0", "launcher": "local",
           "pipeline": "vision" if vision else "synthetic", "machine": "testhost", "arrival": "poisson",
           "offered_rate": 20.0, "producer_rate": 200.0, "consumer_rate": round(40 / rho, 3), "fanout": 2,
           "fanout_mean": 2.0, "replicas": 1, "batch_max": 1, "batch_wait_ms": 0.0, "service_dist": "fixed",
           "service_mode": "sleep", "message_bytes": 1024, "duration_s": 5.0, "warmup_s": 1.0, "seed": seed,
           "sent": n, "received": n - lost, "lost": lost, "duplicated": 0, "throughput_in": 40.0,
           "throughput_out": round(40 / max(1.0, rho), 2), "rho": rho, "backlog_max": 10, "backlog_growth": 0.0,
           "stable": rho <= 1, "e2e_p50_ms": p(50), "e2e_p90_ms": p(90), "e2e_p99_ms": p(99),
           "transit_p50_ms": 0.6 * p(50), "transit_p99_ms": 0.6 * p(99), "wait_p50_ms": 0.02, "error": ""}
    if not old:
        row.update({"queue_p50_ms": 0.55 * p(50), "queue_p99_ms": 0.55 * p(99), "hop_p50_ms": 0.05 * p(50),
                    "hop_p99_ms": 0.05 * p(99), "publish_call_p50_us": 12.0, "publish_call_p99_us": 40.0,
                    "recv_call_p50_us": 8.0, "recv_call_p99_us": 30.0, "ack_call_p50_us": 3.0,
                    "ack_call_p99_us": 9.0, "a_harness_p50_us": 6.0, "a_harness_p99_us": 20.0,
                    "b_harness_p50_us": 7.0, "b_harness_p99_us": 25.0, "capacity_measured": 38.0,
                    "rho_measured": round(40 / 38.0 * rho, 3), "limited_by": "stage_b" if rho > 1 else "none"})
    if vision:
        row.update({f"a_{k}_ms": v for k, v in STEPS_A.items()})
        row.update({f"b_{k}_ms": v for k, v in STEPS_B.items()})
    report.write_summary(os.path.join(d, "summary.csv"), row)
    cfg = {"broker_opt": {}}
    if vision:
        cfg.update(image_size="medium", preprocess="cpu", detector="ssdlite", classifier="resnet50", device="cpu")
    report.write_json(os.path.join(d, "run.json"),
                      {"config": cfg, "environment": {"machine": "testhost", "platform": "Linux", "cpu_count": 2,
                                                      "python": "3"}})
    return d


def make_results(base: str) -> str:
    """Every registered broker at two loads (two repetitions each), plus vision runs (one predating the
    queue/hop split). Returns the results folder."""
    out = os.path.join(base, "results")
    seed = 0
    for i, b in enumerate(brokers.names()):
        for rho in (0.5, 1.5):
            for rep in (1, 2):
                seed += 1
                _run(out, f"{b}-rho{rho}-rep{rep}", b, rho, scale_ms=0.05 * (3 ** i) * (20 if rho > 1 else 1),
                     seed=seed)
        seed += 1
        _run(out, f"{b}-vision", b, 0.8, scale_ms=300.0 + 10 * i, seed=seed, vision=True, old=(i == 0))
    return out
