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

Closed loop (``closed:K``, ``closed_window``) has no schedule: each stream keeps K frames in flight and
stage A releases a new frame when one of its frames has finished at stage B (testbed/harness/loops.py,
testbed/harness/completions.py); a frame's intended time is when stage A released it.
"""
from __future__ import annotations

import numpy as np

from testbed.errors import ConfigError
from testbed.load.distributions import rng_for

ARRIVALS = ("constant", "poisson", "bursty")
BURST_MEAN = 8
CLOSED = "closed"
MAX_WINDOW = 100_000  # frames in flight per stream, at most


def closed_window(arrival: str) -> int:
    """K of ``closed:K`` (frames in flight per stream); 0 for the open-loop processes."""
    head, _, k = str(arrival).partition(":")
    if head.strip().lower() != CLOSED:
        return 0
    return int(k)


def check_arrival(arrival) -> None:
    """One ConfigError line unless ``arrival`` is an open-loop process or ``closed:K`` (K >= 1)."""
    text = str(arrival)
    if text in ARRIVALS:
        return
    head, colon, k = text.partition(":")
    if head == CLOSED and colon and k.isdigit() and 1 <= int(k) <= MAX_WINDOW and k == str(int(k)):
        return
    raise ConfigError(f"--arrival {text!r} is not allowed: use {', '.join(ARRIVALS)} (open loop) or closed:K "
                      f"(closed loop, K frames in flight per stream, a whole number from 1 to {MAX_WINDOW:,})")


def schedule(arrival: str, rate: float, duration_s: float, seed: int) -> np.ndarray:
    """Intended send times of every frame, as int64 nanosecond offsets from the run's start, sorted."""
    if arrival not in ARRIVALS:
        why = " (closed loop has no schedule: frames are released as earlier ones finish)" \
            if str(arrival).startswith(CLOSED + ":") else ""
        raise ValueError(f"unknown arrival process {arrival!r}{why}")
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
