"""Seeded random dimensions of a run: fan-out per frame and service times.

Every dimension draws from its own ``numpy.random.Generator`` derived from the run seed and a fixed
stream name, so changing one dimension (say the fan-out) does not shift the draws of another.
"""
from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass

import numpy as np

from testbed.errors import ConfigError

SERVICE_DISTS = ("fixed", "exponential", "lognormal")
LOGNORMAL_SIGMA = 0.5  # shape of the lognormal service time; its mean is kept at 1/rate


def rng_for(seed: int, stream: str) -> np.random.Generator:
    """An independent generator for one named random dimension of the run."""
    return np.random.default_rng([int(seed), zlib.crc32(stream.encode())])


@dataclass(frozen=True)
class Fanout:
    """Messages per frame: ``4`` (fixed), ``poisson:4`` or ``uniform:1-8`` (inclusive)."""

    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, text) -> "Fanout":
        s = str(text).strip().lower()
        try:
            if re.fullmatch(r"\d+", s):
                n = int(s)
                if n < 1:
                    raise ValueError
                return cls("fixed", n)
            m = re.fullmatch(r"poisson:(\d+(\.\d+)?)", s)
            if m and float(m.group(1)) > 0:
                return cls("poisson", float(m.group(1)))
            m = re.fullmatch(r"uniform:(\d+)-(\d+)", s)
            if m and 0 <= int(m.group(1)) <= int(m.group(2)) and int(m.group(2)) >= 1:
                return cls("uniform", int(m.group(1)), int(m.group(2)))
        except ValueError:
            pass
        raise ConfigError(f"--fanout {text!r} is not allowed: use a whole number >= 1, "
                          "'poisson:MEAN' (MEAN > 0) or 'uniform:LO-HI' (0 <= LO <= HI, HI >= 1)")

    @property
    def mean(self) -> float:
        if self.kind == "fixed":
            return float(self.a)
        if self.kind == "poisson":
            return float(self.a)
        return (self.a + self.b) / 2.0

    @property
    def max(self) -> int:
        if self.kind == "fixed":
            return int(self.a)
        if self.kind == "uniform":
            return int(self.b)
        return int(self.a + 10 * math.sqrt(self.a) + 10)

    def sampler(self, rng: np.random.Generator):
        """A function returning the number of messages for the next frame."""
        if self.kind == "fixed":
            n = int(self.a)
            return lambda: n
        if self.kind == "poisson":
            lam = self.a
            return lambda: int(rng.poisson(lam))
        lo, hi = int(self.a), int(self.b)
        return lambda: int(rng.integers(lo, hi + 1))

    def __str__(self) -> str:
        if self.kind == "fixed":
            return str(int(self.a))
        if self.kind == "poisson":
            return f"poisson:{self.a:g}"
        return f"uniform:{int(self.a)}-{int(self.b)}"


def service_sampler(dist: str, rate: float, rng: np.random.Generator):
    """A function returning service times in ns with mean 1/rate. ``rate = inf`` means no service time."""
    if math.isinf(rate):
        return lambda: 0
    mean_ns = 1e9 / rate
    if dist == "fixed":
        v = int(round(mean_ns))
        return lambda: v
    if dist == "exponential":
        return lambda: int(rng.exponential(mean_ns))
    if dist == "lognormal":
        sigma = LOGNORMAL_SIGMA
        mu = math.log(mean_ns) - sigma * sigma / 2.0
        return lambda: int(rng.lognormal(mu, sigma))
    raise ConfigError(f"--service-dist {dist!r} is not allowed: use one of {', '.join(SERVICE_DISTS)}")
