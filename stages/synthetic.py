"""Synthetic stages: service times set exactly, so rates and utilisation are known.

Stage A spends one service time per frame (mean 1/--producer-rate) and emits a fan-out of messages
(``--fanout``) whose payload is ``--message-bytes`` minus the header of real random bytes (one buffer,
reused, never copied by the stage). Stage B spends one service time per message (mean
1/--consumer-rate); a batch costs the sum of its messages' times (no batching speed-up).

Time is spent by sleeping (``sleep``: the stage leaves the CPU to others, as a stage waiting on a GPU
does) or by burning CPU (``spin``: as a CPU-bound stage does). ``--consumer-rate inf`` means no service
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


def spend(ns: int, mode: str) -> None:
    """Spend ``ns`` nanoseconds, sleeping or spinning, against a deadline."""
    if ns <= 0:
        return
    deadline = time.monotonic_ns() + ns
    if mode == "spin":
        while time.monotonic_ns() < deadline:
            pass
        return
    left = ns
    while left > 0:
        time.sleep(left / 1e9)
        left = deadline - time.monotonic_ns()


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
