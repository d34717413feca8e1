"""Arrival processes: mean rate and dispersion over a seeded sample."""
import numpy as np
import pytest

from testbed.load import ARRIVALS, schedule


def counts(times_ns, duration_s, window_s=1.0):
    edges = np.arange(0, duration_s + 1e-9, window_s) * 1e9
    return np.histogram(times_ns, bins=edges)[0]


@pytest.mark.parametrize("arrival", ARRIVALS)
def test_mean_rate_within_tolerance(arrival):
    rate, duration = 200.0, 300.0
    t = schedule(arrival, rate, duration, seed=11)
    tol = {"constant": 0.001, "poisson": 0.03, "bursty": 0.08}[arrival]
    assert abs(len(t) / duration - rate) / rate < tol
    assert np.all(np.diff(t) >= 0), "schedule sorted"
    assert t[0] >= 0 and t[-1] < duration * 1e9


def test_dispersion_distinguishes_the_processes():
    rate, duration = 200.0, 300.0
    idx = {}
    for arrival in ARRIVALS:
        c = counts(schedule(arrival, rate, duration, seed=5), duration)
        idx[arrival] = c.var() / c.mean()  # index of dispersion: 0 constant, 1 Poisson, >>1 bursty
    assert idx["constant"] < 0.05
    assert 0.75 < idx["poisson"] < 1.3
    assert idx["bursty"] > 5


def test_poisson_gaps_are_exponential():
    t = schedule("poisson", 100.0, 500.0, seed=3)
    gaps = np.diff(t) / 1e9
    assert abs(gaps.mean() - 0.01) / 0.01 < 0.03
    assert abs(gaps.std() / gaps.mean() - 1.0) < 0.05  # coefficient of variation of an exponential


def test_seeded_and_reproducible():
    a = schedule("poisson", 50.0, 20.0, seed=1)
    b = schedule("poisson", 50.0, 20.0, seed=1)
    c = schedule("poisson", 50.0, 20.0, seed=2)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
