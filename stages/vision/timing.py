"""Per-step stopwatch of a vision stage: laps that tile the stage's work, so the steps add up.

A stage calls ``start()`` first thing in ``process`` and ``lap(step)`` after each step. Each lap is the
time since the previous lap (``time.perf_counter_ns``; on Linux the same monotonic clock the harness
stamps with), added to that step's total. Laps are contiguous, so the step times of one ``process`` call
add up to the time between ``start()`` and the last lap, which is the harness's service time minus two
function-call overheads (a few microseconds).

On CUDA every lap first synchronises the device, so a step's time is the work it launched, not the
work of an earlier step that happened to finish during it. Copies (h2d, d2h) are also timed with CUDA
events: ``lap_copy`` books the event time of the copy itself and carries the rest of the wall interval
(launch, pinning, synchronisation) over to the next step, so the sum is still the wall time.
"""
from __future__ import annotations

import time

now = time.perf_counter_ns


class StepClock:
    def __init__(self, names: tuple[str, ...], cuda: bool = False):
        self.names = tuple(names)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.cuda = cuda
        self.acc = [0] * len(self.names)
        self.t = 0
        self.carry = 0
        self.last = 0
        if cuda:
            import torch
            self._sync = torch.cuda.synchronize
            self._ev = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
        else:
            self._sync = None
            self._ev = None

    def start(self) -> None:
        self.acc = [0] * len(self.names)
        self.carry = 0
        self.t = now()

    def lap(self, step: str) -> None:
        if self._sync is not None:
            self._sync()
        t = now()
        i = self.index[step]
        self.acc[i] += t - self.t + self.carry
        self.carry = 0
        self.last = i
        self.t = t

    def copy_events(self):
        """(start, end) CUDA events to record around a copy; None on CPU."""
        return self._ev

    def lap_copy(self, step: str) -> None:
        """End a copy step timed by the events of ``copy_events()`` (recorded around the copy)."""
        if self._ev is None:
            self.lap(step)
            return
        self._sync()
        t = now()
        wall = t - self.t + self.carry
        dev = int(self._ev[0].elapsed_time(self._ev[1]) * 1e6)
        dev = max(0, min(dev, wall))
        i = self.index[step]
        self.acc[i] += dev
        self.carry = wall - dev
        self.last = i
        self.t = t

    def steps(self) -> tuple:
        """Step times (ns) in ``names`` order; any carried remainder goes to the last step timed."""
        if self.carry:
            self.acc[self.last] += self.carry
            self.carry = 0
        return tuple(self.acc)

    def total(self) -> int:
        return sum(self.acc) + self.carry
