"""Stage A's pacing: waiting for a frame's intended time precisely.

A plain ``time.sleep`` to the intended time wakes late (timer slack, scheduling: 160-200 us on average on
this 2-core machine), and every microsecond of it is latency the run adds that the system the user asked
for does not have. ``Pacer.wait_until`` does what the synthetic stages' ``spend()`` does for service
times: it sleeps until a margin before the deadline, then spins to it. The margin follows the 90th
percentile of this process's recent wake-up delays (quantile tracking, kept between the bounds below), so
the spin is short; the thread's timer slack is set to 1 ns on first use (Linux), which makes the wake-ups
earlier still. A wait that is already due returns at once.
"""
from __future__ import annotations

import time

MARGIN_MIN_NS = 20_000
MARGIN_MAX_NS = 300_000
MARGIN_START_NS = 150_000
MARGIN_QUANTILE = 0.9
MARGIN_STEP_NS = 10_000


def set_timer_slack(ns: int = 1) -> bool:
    """The calling thread's timer slack (Linux ``PR_SET_TIMERSLACK``); False where it cannot be set."""
    try:
        import ctypes
        return ctypes.CDLL(None).prctl(29, int(ns), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class Pacer:
    """Waits until monotonic-ns deadlines: a sleep to a tracked margin before each, then a spin."""

    def __init__(self):
        self.margin_ns = MARGIN_START_NS
        self._slack = False

    def wait_until(self, deadline_ns: int) -> None:
        now = time.monotonic_ns
        wake = deadline_ns - self.margin_ns
        left = wake - now()
        if left > 0:
            if not self._slack:
                self._slack = True
                set_timer_slack()
            while left > 0:  # a sleep can end early (a signal): sleep the rest
                time.sleep(left / 1e9)
                left = wake - now()
            # up by q*step when the wake-up came later than the margin allows, down by (1-q)*step otherwise
            if -left > self.margin_ns:
                self.margin_ns = min(MARGIN_MAX_NS, self.margin_ns + int(MARGIN_QUANTILE * MARGIN_STEP_NS))
            else:
                self.margin_ns = max(MARGIN_MIN_NS, self.margin_ns - int((1 - MARGIN_QUANTILE) * MARGIN_STEP_NS))
        while now() < deadline_ns:
            pass
