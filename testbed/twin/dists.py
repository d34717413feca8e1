"""Empirical distributions kept as quantiles, so a profile holds the tail and not only the mean.

A ``Dist`` is the quantiles of a sample at fixed probabilities (``GRID``: every 0.5% up to p99, then
finer steps up to p99.99, and the maximum), so the tail keeps its shape; drawing from it is inverse-CDF
sampling with linear interpolation between quantiles. A table of a few percentiles (a YAML stage table, a Triton
perf_analyzer CSV) gives a ``Dist`` the same way, through the points it has.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRID = np.unique(np.round(np.concatenate([np.linspace(0, 0.99, 199), np.linspace(0.99, 0.999, 19),
                                           np.linspace(0.999, 0.9999, 10), [1.0]]), 6))
POINTS = len(GRID)


@dataclass(frozen=True)
class Dist:
    probs: tuple[float, ...]
    values: tuple[float, ...]  # ns, non-decreasing
    count: int = 0             # samples it came from (0: from a table)

    @classmethod
    def of(cls, samples) -> "Dist | None":
        """From raw samples (ns); None for an empty sample."""
        x = np.asarray(samples, dtype=np.float64)
        x = x[np.isfinite(x)]
        if not len(x):
            return None
        v = np.quantile(x, GRID)
        return cls(tuple(float(a) for a in GRID), tuple(float(b) for b in v), int(len(x)))

    @classmethod
    def constant(cls, value: float) -> "Dist":
        return cls((0.0, 1.0), (float(value), float(value)), 0)

    @classmethod
    def from_percentiles(cls, points: dict) -> "Dist":
        """From {probability in [0, 1]: ns}. Below the lowest point the lowest value holds; above the
        highest, the last segment's slope is kept up to probability 1 (a tail, not a wall)."""
        items = sorted((float(p), float(v)) for p, v in points.items())
        if not items:
            raise ValueError("no percentiles")
        ps = [p for p, _ in items]
        vs = list(np.maximum.accumulate([v for _, v in items]))
        if ps[0] > 0:
            ps.insert(0, 0.0)
            vs.insert(0, vs[0])
        if ps[-1] < 1:
            if len(ps) >= 2 and ps[-1] > ps[-2]:
                slope = (vs[-1] - vs[-2]) / (ps[-1] - ps[-2])
                top = vs[-1] + slope * (1.0 - ps[-1])
            else:
                top = vs[-1]
            ps.append(1.0)
            vs.append(max(top, vs[-1]))
        return cls(tuple(ps), tuple(float(v) for v in vs), 0)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` draws, int64 ns."""
        u = rng.random(n)
        return np.interp(u, self.probs, self.values).astype(np.int64)

    def quantile(self, p: float) -> float:
        return float(np.interp(p, self.probs, self.values))

    @property
    def mean(self) -> float:
        """Mean of the piecewise-linear distribution (trapezoids between quantiles)."""
        p, v = np.asarray(self.probs), np.asarray(self.values)
        return float(np.sum(np.diff(p) * (v[1:] + v[:-1]) / 2.0)) if len(p) > 1 else float(v[0])

    def shifted(self, ns: float) -> "Dist":
        return Dist(self.probs, tuple(v + ns for v in self.values), self.count)

    def to_json(self) -> dict:
        q = [float(f"{v:.6g}") for v in self.values]
        if len(self.probs) == POINTS and np.allclose(self.probs, GRID):
            return {"n": self.count, "q": q}
        return {"n": self.count, "p": list(self.probs), "q": q}

    @classmethod
    def from_json(cls, d: dict) -> "Dist":
        q = [float(v) for v in d["q"]]
        p = [float(v) for v in d["p"]] if "p" in d else list(GRID)
        return cls(tuple(p), tuple(q), int(d.get("n", 0)))


def pooled(dists) -> "Dist | None":
    """One distribution for several (each weighted by its sample count; tables count once)."""
    dists = [d for d in dists if d is not None]
    if not dists:
        return None
    if len(dists) == 1:
        return dists[0]
    grid = np.linspace(0, 1, 1025)
    parts, weights = [], []
    for d in dists:
        parts.append(np.interp(grid, d.probs, d.values))
        weights.append(max(1, d.count))
    samples = np.concatenate(parts)
    w = np.concatenate([np.full(len(grid), wt, dtype=float) for wt in weights])
    order = np.argsort(samples)
    cw = np.cumsum(w[order])
    cw /= cw[-1]
    v = np.interp(GRID, cw, samples[order])
    return Dist(tuple(float(a) for a in GRID), tuple(float(b) for b in v), int(sum(d.count for d in dists)))
