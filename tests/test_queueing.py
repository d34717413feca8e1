"""The ideal-queue recursions against hand-computed cases and against closed forms on large seeded samples."""
import math

import numpy as np
import pytest

from testbed.analysis import queueing as q

MS = 1_000_000


def poisson_arrivals(rate, n, seed):
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.exponential(1e9 / rate, n)).astype(np.int64), rng


def lindley_loop(a, s):
    out, d = [], 0
    for ai, si in zip(a.tolist(), s.tolist()):
        d = max(ai, d) + si
        out.append(d)
    return np.array(out)


def rel(x, y):
    return abs(x - y) / y


# -- hand-computed cases --------------------------------------------------------------------------

def test_fifo_by_hand():
    assert q.fifo([0, 1, 2, 10], [3, 3, 3, 1]).tolist() == [3, 6, 9, 11]
    assert q.fifo([], []).tolist() == []


def test_fifo_matches_a_plain_loop():
    a, rng = poisson_arrivals(90, 5000, 3)
    s = rng.exponential(1e7, 5000).astype(np.int64)
    assert np.array_equal(q.fifo(a, s), lindley_loop(a, s))


def test_shared_two_servers_by_hand():
    r = q.shared([0, 0, 0, 0], np.array([4, 1, 1, 1]), servers=2)
    assert r.server.tolist() == [0, 1, 1, 1]
    assert r.departure.tolist() == [4, 1, 2, 3]
    assert r.start.tolist() == [0, 0, 1, 2]


def test_dealt_round_robin_by_hand():
    r = q.dealt([0, 0, 0, 0], np.array([4, 1, 1, 1]), servers=2)
    assert r.server.tolist() == [0, 1, 0, 1]
    assert r.departure.tolist() == [4, 1, 5, 2]


def test_dealt_by_partition_by_hand():
    r = q.dealt([0, 1, 2, 3], np.array([5, 5, 5, 5]), servers=2, assign=[1, 1, 1, 0])
    assert r.departure.tolist() == [5, 10, 15, 8]


def test_batching_by_hand():
    # batch of 2 fills at t=1 (wait 5 not used up); the next two are waiting at 21; the last waits it out
    r = q.shared([0, 1, 2, 3, 20], lambda n: 10 * n, servers=1, batch_max=2, batch_wait=5)
    assert r.start.tolist() == [1, 1, 21, 21, 46]
    assert r.departure.tolist() == [21, 21, 41, 41, 56]
    assert r.batch_size.tolist() == [2, 2, 2, 2, 1]
    # without a wait the server takes only what is there
    r = q.shared([0, 1, 2, 3, 20], np.array([10, 10, 10, 10, 10]), servers=1, batch_max=3)
    assert r.start.tolist() == [0, 10, 10, 10, 40]
    assert r.departure.tolist() == [10, 40, 40, 40, 50]


def test_per_server_streams_are_consumed_in_service_order():
    r = q.dealt([0, 0, 0, 0], q.PerServer([np.array([1, 2]), np.array([10, 20])]), servers=2)
    assert r.departure.tolist() == [1, 10, 3, 30]
    r = q.shared([0, 0, 0], q.PerServer([np.array([1, 2, 3]), np.array([10])]), servers=2)
    assert r.departure.tolist() == [1, 10, 3]
    with pytest.raises(ValueError):
        q.shared([0, 0, 0], q.PerServer([np.array([1])]), servers=1)


def test_tandem_by_hand():
    a_dep, arr, served = q.tandem([0, 0], [5, 5], [2, 0], lambda x: q.shared(x, np.array([1, 1])))
    assert a_dep.tolist() == [5, 10]
    assert arr.tolist() == [5, 5]
    assert served.departure.tolist() == [6, 7]


def test_bad_input_raises():
    with pytest.raises(ValueError):
        q.shared([2, 1], lambda k: 1, batch_max=2)
    with pytest.raises(ValueError):
        q.fifo([0, 1], [1])
    with pytest.raises(ValueError):
        q.mm1_mean(100, 100)
    with pytest.raises(ValueError):
        q.erlang_c(2, 2.5)


# -- closed forms -----------------------------------------------------------------------------------

def test_md1_distribution_is_consistent_with_pollaczek_khinchine():
    lam, d = 50.0, 0.01
    assert q.md1_wait_cdf(0.0, lam, d) == pytest.approx(0.5)
    t = np.linspace(0, 0.2, 4001)
    tail = np.array([1 - q.md1_wait_cdf(x, lam, d) for x in t])
    assert tail[-1] < 1e-9
    mean_wait = float(np.sum((tail[1:] + tail[:-1]) / 2 * np.diff(t)))
    assert mean_wait + d == pytest.approx(q.md1_mean(lam, d), rel=1e-4)


def test_erlang_c_reduces_to_mm1():
    assert q.erlang_c(1, 0.8) == pytest.approx(0.8)
    assert q.mmc_mean(80, 100, 1) == pytest.approx(q.mm1_mean(80, 100))
    assert q.mmc_quantile(80, 100, 1, 0.99) == pytest.approx(q.mm1_quantile(80, 100, 0.99), rel=1e-9)
    # c = 2, a = 1.6: (a^2/2 * 2/(2 - a)) / (1 + a + a^2/2 * 2/(2 - a)) = 6.4 / 9
    assert q.erlang_c(2, 1.6) == pytest.approx(6.4 / 9)


def sojourn_stats(a, dep, skip=2000):
    x = (dep - a)[skip:] / 1e9
    return x.mean(), np.quantile(x, [0.5, 0.9, 0.99])


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_fifo_matches_mm1(rho):
    mu, n = 100.0, 600_000
    a, rng = poisson_arrivals(rho * mu, n, 11)
    s = rng.exponential(1e9 / mu, n).astype(np.int64)
    mean, qs = sojourn_stats(a, q.fifo(a, s))
    assert rel(mean, q.mm1_mean(rho * mu, mu)) < 0.03
    for got, p in zip(qs, (0.5, 0.9, 0.99)):
        assert rel(got, q.mm1_quantile(rho * mu, mu, p)) < 0.04


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_fifo_matches_md1(rho):
    d, n = 0.01, 600_000
    lam = rho / d
    a, _ = poisson_arrivals(lam, n, 12)
    mean, qs = sojourn_stats(a, q.fifo(a, np.full(n, int(d * 1e9))))
    assert rel(mean, q.md1_mean(lam, d)) < 0.02
    for got, p in zip(qs, (0.5, 0.9, 0.99)):
        assert rel(got, q.md1_quantile(lam, d, p)) < 0.03


def test_fifo_matches_mg1_lognormal_mean():
    n, sigma, mean_s = 600_000, 0.5, 0.01
    a, rng = poisson_arrivals(80, n, 13)
    mu_ln = math.log(mean_s) - sigma ** 2 / 2
    s = rng.lognormal(mu_ln, sigma, n)
    es2 = math.exp(2 * mu_ln + 2 * sigma ** 2)
    mean, _ = sojourn_stats(a, q.fifo(a, (s * 1e9).astype(np.int64)))
    assert rel(mean, q.mg1_mean(80, mean_s, es2)) < 0.03


def test_shared_matches_mmc_erlang_c():
    mu, c, lam, n = 100.0, 2, 160.0, 800_000
    a, rng = poisson_arrivals(lam, n, 14)
    s = rng.exponential(1e9 / mu, n).astype(np.int64)
    mean, qs = sojourn_stats(a, q.shared(a, s, servers=c).departure)
    assert rel(mean, q.mmc_mean(lam, mu, c)) < 0.03
    for got, p, tol in zip(qs, (0.5, 0.9, 0.99), (0.03, 0.03, 0.06)):  # a p99 from 800k messages: ~2% spread
        assert rel(got, q.mmc_quantile(lam, mu, c, p)) < tol


def test_random_deal_is_two_mm1_queues():
    # a Poisson stream split at random is two Poisson streams: each server is an M/M/1 at lam / 2
    mu, lam, n = 100.0, 160.0, 400_000
    a, rng = poisson_arrivals(lam, n, 15)
    s = rng.exponential(1e9 / mu, n).astype(np.int64)
    served = q.dealt(a, s, servers=2, assign=rng.integers(0, 2, n))
    mean, qs = sojourn_stats(a, served.departure)
    assert rel(mean, q.mm1_mean(lam / 2, mu)) < 0.03
    assert rel(qs[2], q.mm1_quantile(lam / 2, mu, 0.99)) < 0.04


def test_shared_queue_beats_a_round_robin_deal_in_the_tail():
    mu, lam, n = 100.0, 160.0, 200_000
    a, rng = poisson_arrivals(lam, n, 16)
    s = rng.exponential(1e9 / mu, n).astype(np.int64)
    p99_shared = np.quantile((q.shared(a, s, servers=2).departure - a)[2000:], 0.99)
    p99_rr = np.quantile((q.dealt(a, s, servers=2).departure - a)[2000:], 0.99)
    assert p99_rr > 1.3 * p99_shared


def test_fixed_service_makes_a_shared_queue_and_a_round_robin_deal_the_same():
    # equal fixed service: the server free first is always the one that took message i - c
    a, _ = poisson_arrivals(160.0, 20_000, 16)
    s = np.full(len(a), 10 * MS)
    assert np.array_equal(q.shared(a, s, servers=2).departure, q.dealt(a, s, servers=2).departure)


def test_batch_arrivals_match_mxg1_mean():
    # Poisson frames, Poisson(4) messages each (zero allowed), fixed service: M^X/D/1
    rate, m, d, n = 20.0, 4.0, 0.01, 150_000
    fa, rng = poisson_arrivals(rate, n, 17)
    counts = rng.poisson(m, n)
    _, arr, served = q.tandem(fa, np.zeros(n, dtype=np.int64), counts,
                              lambda x: q.shared(x, np.full(len(x), int(d * 1e9))))
    mean = float(np.mean((served.departure - arr)[5000:])) / 1e9
    assert rel(mean, q.mxg1_mean(rate, m, m + m * m, d, d * d)) < 0.03


def test_tandem_with_a_fast_stage_b_is_stage_a_alone():
    n, d = 300_000, 0.02
    fa, _ = poisson_arrivals(40, n, 18)
    a_dep, arr, served = q.tandem(fa, np.full(n, int(d * 1e9)), np.ones(n, dtype=np.int64),
                                  lambda x: q.shared(x, np.zeros(len(x), dtype=np.int64)))
    assert np.array_equal(served.departure, a_dep)
    mean, qs = sojourn_stats(fa, a_dep)
    assert rel(mean, q.md1_mean(40, d)) < 0.02
    assert rel(qs[2], q.md1_quantile(40, d, 0.99)) < 0.03


def test_batching_with_full_batches_serves_more():
    # at a load one server cannot carry one by one, batches of up to 4 (cost 4 ms + 2 ms/msg) keep it stable
    n = 50_000
    a, _ = poisson_arrivals(200, n, 19)
    one = q.shared(a, lambda k: 4 * MS + 2 * MS * k, batch_max=1)
    four = q.shared(a, lambda k: 4 * MS + 2 * MS * k, batch_max=4, batch_wait=2 * MS)
    assert np.median(four.batch_size) > 1
    assert np.mean(four.departure - a) < 0.01 * np.mean(one.departure - a)


def test_round_robin_deal_matches_gi_m_1():
    mu, lam, n = 100.0, 160.0, 400_000
    a, rng = poisson_arrivals(lam, n, 20)
    s = rng.exponential(1e9 / mu, n).astype(np.int64)
    mean, qs = sojourn_stats(a, q.dealt(a, s, servers=2).departure)
    assert rel(mean, q.dealt_mm_mean(lam, mu, 2)) < 0.03
    assert rel(qs[2], q.dealt_mm_quantile(lam, mu, 2, 0.99)) < 0.05
    # one server: the deal is M/M/1
    assert q.dealt_mm_mean(80, 100, 1) == pytest.approx(q.mm1_mean(80, 100))
