"""Synthetic stages: service times set exactly, so rates and utilisation are known.

Stage A spends one service time per frame (mean 1/--producer-rate) and emits a fan-out of messages
(``--fanout``) whose payload is ``--message-bytes`` minus the header of real random bytes (one buffer,
reused, never copied by the stage). Stage B spends one service time per message (mean
1/--consumer-rate); a batch costs the sum of its messages' times (no batching speed-up).

Time is spent by sleeping (``sleep``: the stage leaves the CPU to others, as a stage waiting on a GPU
does; the last fraction of a millisecond is spun, so the time spent is the time set) or by burning CPU
(``spin``: as a CPU-bound stage does). ``--consumer-rate inf`` means no service
time at all (used to find what the harness and the broker alone can carry).
"""
from __future__ import annotations

import time

import numpy as np

from stages.base import ConsumerStage, FrameResult, Item, ProducerStage
from testbed.load.distributions import Fanout, rng_for, service_sampler
from testbed.harness.envelope import FIXED_SIZE

PRODUCER_STEPS: tuple[str, ...] = ()
CONSUMER_STEPS: tuple[str, ...] = ()


# Sleep mode sleeps until ``_margin_ns`` before the deadline, then spins to it: a sleep wakes late
# (timer slack, scheduling), which would lengthen every service time. The margin follows the 90th
# percentile of this process's recent wake-up delays, kept between the bounds below, so the spin stays a
# few percent of a millisecond-scale service. The thread's timer slack is set to 1 ns on first use
# (Linux), which makes wake-ups earlier and the spin shorter.
MARGIN_MIN_NS = 20_000
MARGIN_MAX_NS = 300_000
MARGIN_QUANTILE = 0.9
MARGIN_STEP_NS = 10_000
_margin_ns = 150_000
_slack_set = False


def _set_timer_slack() -> None:
    global _slack_set
    _slack_set = True
    try:
        import ctypes
        ctypes.CDLL(None).prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK, 1 ns
    except (OSError, AttributeError):
        pass


def spend(ns: int, mode: str) -> None:
    """Spend ``ns`` nanoseconds, sleeping or spinning, against a deadline."""
    global _margin_ns
    if ns <= 0:
        return
    now = time.monotonic_ns
    deadline = now() + ns
    if mode != "spin":
        if not _slack_set:
            _set_timer_slack()
        wake = deadline - _margin_ns
        left = wake - now()
        if left > 0:
            while left > 0:  # a sleep can end early (a signal): sleep the rest
                time.sleep(left / 1e9)
                left = wake - now()
            # quantile tracking: up by q*step when the wake-up came later than the margin allows,
            # down by (1-q)*step otherwise
            if -left > _margin_ns:
                _margin_ns = min(MARGIN_MAX_NS, _margin_ns + int(MARGIN_QUANTILE * MARGIN_STEP_NS))
            else:
                _margin_ns = max(MARGIN_MIN_NS, _margin_ns - int((1 - MARGIN_QUANTILE) * MARGIN_STEP_NS))
    while now() < deadline:
        pass


class SyntheticProducer(ProducerStage):
    steps = PRODUCER_STEPS

    def __init__(self, config):
        self.mode = config.service_mode
        self.service = service_sampler(config.service_dist, config.producer_rate,
                                       rng_for(config.seed, "service-a"))
        self.fanout = Fanout.parse(config.fanout).sampler(rng_for(config.seed, "fanout"))
        size = max(0, config.message_bytes - FIXED_SIZE)
        self.payload = rng_for(config.seed, "payload").integers(0, 256, size=size, dtype=np.uint8).tobytes()

    def process(self, frame_id: int) -> FrameResult:
        spend(self.service(), self.mode)
        item = Item(self.payload)
        return FrameResult([item] * self.fanout())


class SyntheticConsumer(ConsumerStage):
    steps = CONSUMER_STEPS
    reads_messages = False  # one service time per message: only the batch's length matters

    def __init__(self, config, replica: int):
        self.mode = config.service_mode
        self.service = service_sampler(config.service_dist, config.consumer_rate,
                                       rng_for(config.seed, f"service-b-{replica}"))

    def process(self, batch: list) -> tuple:
        spend(sum(self.service() for _ in batch), self.mode)
        return ()


def make_producer(config) -> SyntheticProducer:
    return SyntheticProducer(config)


def make_consumer(config, replica: int) -> SyntheticConsumer:
    return SyntheticConsumer(config, replica)
