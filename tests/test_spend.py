"""spend(): synthetic service times are the times set, in sleep mode without burning the CPU.

Tolerances are loose enough for a busy 2-core machine; the precise figures are in benchmarks/spend.py.
"""
import time

import numpy as np
import pytest

from stages import synthetic


def _overshoots(mode: str, services_ns) -> tuple[np.ndarray, np.ndarray]:
    late, cpu = [], []
    for ns in services_ns:
        c0, t0 = time.thread_time_ns(), time.monotonic_ns()
        synthetic.spend(int(ns), mode)
        late.append(time.monotonic_ns() - t0 - int(ns))
        cpu.append(time.thread_time_ns() - c0)
    return np.array(late), np.array(cpu)


def _sample(n: int, mean_ms: float, seed: int) -> np.ndarray:
    """A seeded sample of service times (exponential, between 0.5 ms and 4x the mean), in ns."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.exponential(mean_ms * 1e6, size=n), 0.5e6, 4 * mean_ms * 1e6).astype(np.int64)


@pytest.mark.parametrize("mode", ["sleep", "spin"])
def test_never_ends_early_and_median_overshoot_is_small(mode):
    services = _sample(120, 2.0, seed=7)  # about 0.25 s
    synthetic.spend(2_000_000, mode)  # first call in a process sets up (timer slack)
    late, _ = _overshoots(mode, services)
    assert late.min() >= 0, "ended before its deadline"
    # plain time.sleep overshoots by ~60-100 us here (timer slack + wake-up): this bound catches it
    assert np.median(late) < 50_000, f"median overshoot {np.median(late) / 1e3:.1f} us"


def test_sleep_mode_leaves_the_cpu():
    services = np.full(30, 10_000_000)  # 10 ms each, 0.3 s
    late, cpu = _overshoots("sleep", services)
    share = cpu.sum() / (services.sum() + late.sum())
    assert share < 0.10, f"sleep mode used {share:.1%} of the time on the CPU"


def test_zero_and_negative_times_return_at_once():
    t0 = time.monotonic_ns()
    for mode in ("sleep", "spin"):
        synthetic.spend(0, mode)
        synthetic.spend(-5, mode)
    assert time.monotonic_ns() - t0 < 5_000_000


def test_margin_stays_within_its_bounds():
    for ns in _sample(40, 1.0, seed=3):
        synthetic.spend(int(ns), "sleep")
        assert synthetic.MARGIN_MIN_NS <= synthetic._margin_ns <= synthetic.MARGIN_MAX_NS
