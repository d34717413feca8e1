"""Histogram percentiles against numpy, and the accounting of drops, duplicates and reordering."""
import numpy as np
import pytest

from testbed.analysis.metrics import account, capacity, percentiles_ms, slope
from testbed.config import RunConfig
from testbed.harness.records import FRAME_DTYPE, message_dtype


@pytest.mark.parametrize("dist", ["lognormal", "uniform", "bimodal"])
def test_percentiles_match_numpy(dist):
    rng = np.random.default_rng(4)
    if dist == "lognormal":
        v = rng.lognormal(13, 1.2, 50_000)  # ns: ~0.4 ms median with a long tail
    elif dist == "uniform":
        v = rng.uniform(5_000, 80_000_000, 50_000)
    else:
        v = np.concatenate([rng.normal(200_000, 10_000, 40_000), rng.normal(30_000_000, 1e6, 10_000)])
    v = np.abs(v).astype(np.int64) + 1
    got = percentiles_ms(v)
    for key, p in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9)):
        want = np.percentile(v, p, method="inverted_cdf") / 1e6
        # 3 significant digits: within 0.1% (plus a microsecond for rounding to the ms column)
        assert abs(got[key] - want) <= want * 1e-3 + 1e-3, (key, got[key], want)
    assert abs(got["max"] - v.max() / 1e6) <= v.max() / 1e6 * 1e-3


def test_microsecond_values_are_kept():
    got = percentiles_ms(np.full(1000, 12_345, dtype=np.int64))  # 12.345 us
    assert got["p50"] == pytest.approx(0.012345, abs=1e-5)


def test_empty_gives_nan():
    assert np.isnan(percentiles_ms(np.zeros(0, np.int64))["p99"])


def _frames(ns):
    f = np.zeros(len(ns), FRAME_DTYPE)
    first = 0
    for i, n in enumerate(ns):
        f[i]["frame_id"], f[i]["first_seq"], f[i]["n"] = i, first, n
        first += n
    return f


def _messages(seqs, replicas=None):
    m = np.zeros(len(seqs), message_dtype((), ()))
    m["seq"] = seqs
    if replicas is not None:
        m["replica"] = replicas
    return m


def test_accounting_counts_a_drop_and_a_duplicate():
    frames = _frames([3, 2, 5])  # 10 messages sent
    seqs = [0, 1, 2, 3, 4, 5, 6, 6, 8, 9]  # 7 never arrives, 6 arrives twice
    acc = account(frames, _messages(seqs))
    assert (acc.sent, acc.received, acc.lost, acc.duplicated) == (10, 9, 1, 1)
    assert acc.lost_seqs.tolist() == [7]
    assert acc.reordered == 0


def test_reordering_is_counted_per_consumer():
    frames = _frames([6])
    # replica 0 sees 0,2,1 (1 came after a later message): one reordered; replica 1 sees 3,4,5 in order
    acc = account(frames, _messages([0, 3, 2, 4, 1, 5], replicas=[0, 1, 0, 1, 0, 1]))
    assert acc.reordered == 1 and acc.lost == 0 and acc.duplicated == 0


def test_slope():
    assert slope([0, 50, 100, 150]) == pytest.approx(50)
    assert slope([5]) == 0.0


def _costs(service_us, recv_us=0.0, ack_us=0.0, b_harness_us=0.0, a_service_us=100.0, a_publish_us=10.0,
           a_harness_us=5.0, n=100):
    per = lambda us: np.full(n, us * 1e3)  # noqa: E731
    return {"b_service": per(service_us), "recv_call": per(recv_us), "ack_call": per(ack_us),
            "b_harness": per(b_harness_us), "a_service": per(a_service_us), "a_publish": per(a_publish_us),
            "a_bookkeeping": per(a_harness_us)}


@pytest.mark.parametrize("costs, growth, want", [
    (_costs(500, 10, 5, 20), 0.0, "none"),                    # rho_measured 0.27: stable below capacity
    (_costs(1500), 50.0, "stage_b"),                          # the service alone saturates stage B
    (_costs(800, 200, 100, 20), 0.0, "broker"),               # room in the service, the client calls fill it
    (_costs(800, 20, 5, 300), 0.0, "harness"),                # room in the service, our bookkeeping fills it
    (_costs(500, 10, 5, 20), 100.0, "broker"),                # backlog grows while stage B has room
    (_costs(500, a_service_us=1500), 0.0, "stage_a"),         # stage A's service saturates it
    (_costs(500, a_service_us=800, a_publish_us=300), 0.0, "broker"),
    (_costs(500, a_service_us=800, a_harness_us=300), 0.0, "harness"),
])
def test_limited_by_rules(costs, growth, want):
    cfg = RunConfig(rate=1000.0, consumer_rate=2000.0, fanout="1")  # offered 1000 msg/s, rho 0.5
    out = capacity(cfg, costs, 1000.0, growth, 0.0)
    assert out["limited_by"] == want, out
    busy = sum(np.mean(costs[k]) for k in ("b_service", "recv_call", "ack_call", "b_harness"))
    assert out["capacity_measured"] == pytest.approx(1e9 / busy, rel=1e-4)
    assert out["rho_measured"] == pytest.approx(1000.0 * busy / 1e9, rel=1e-3)
