"""Open-loop load: when each frame is due.

The schedule is computed before the run starts (as OpenMessaging Benchmark's rate limiter does:
start + i * interval), so a slow stage cannot slow the offered load down; it can only make frames late,
and that lateness is measured (publish delay, e2e latency from the intended time).

Arrival processes (``--arrival``), all with mean rate ``--rate`` frames/s and a seed:
- ``constant``: one frame every 1/rate seconds.
- ``poisson``: exponential inter-arrival times (a Poisson process, as MLPerf's server scenario).
- ``bursty``: bursts arrive as a Poisson process at rate/BURST_MEAN; a burst holds a geometric number of
  frames (mean BURST_MEAN) that are all due at the same instant, as frames pile up behind a stalled camera
  or a batch upload. Counts per window are far more dispersed than Poisson (index of dispersion ~15).
"""
from __future__ import annotations

import numpy as np

from testbed.load.distributions import rng_for

ARRIVALS = ("constant", "poisson", "bursty")
BURST_MEAN = 8


def schedule(arrival: str, rate: float, duration_s: float, seed: int) -> np.ndarray:
    """Intended send times of every frame, as int64 nanosecond offsets from the run's start, sorted."""
    if arrival not in ARRIVALS:
        raise ValueError(f"unknown arrival process {arrival!r}")
    horizon = int(duration_s * 1e9)
    rng = rng_for(seed, "arrival")
    expected = rate * duration_s
    if arrival == "constant":
        n = int(np.ceil(expected))
        t = (np.arange(n, dtype=np.float64) * (1e9 / rate)).astype(np.int64)
        return t[t < horizon]
    if arrival == "poisson":
        return _poisson_times(rng, rate, horizon, expected)
    burst_starts = _poisson_times(rng, rate / BURST_MEAN, horizon, expected / BURST_MEAN)
    sizes = rng.geometric(1.0 / BURST_MEAN, size=len(burst_starts))
    return np.repeat(burst_starts, sizes)


def _poisson_times(rng: np.random.Generator, rate: float, horizon: int, expected: float) -> np.ndarray:
    n = int(expected + 10 * np.sqrt(expected) + 20)
    while True:
        gaps = rng.exponential(1e9 / rate, size=n)
        t = np.cumsum(gaps)
        if t[-1] >= horizon:
            return t[t < horizon].astype(np.int64)
        n *= 2
