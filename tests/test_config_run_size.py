"""The size of a run: its schedule and records are held in memory, so rate x duration x fan-out is capped,
and a run must offer at least one frame."""
import dataclasses

import pytest

from testbed import config
from testbed.config import MAX_MESSAGES, RunConfig
from testbed.errors import ConfigError

BASE = RunConfig(broker="inproc", duration=3, warmup=1, fanout="1")


def test_run_size_limit_counts_rate_duration_and_fanout():
    config.validate(dataclasses.replace(BASE, rate=MAX_MESSAGES / 10, duration=10))  # at the limit
    with pytest.raises(ConfigError, match=r"--rate 1000 x --duration 1e\+09 s .* at most 20,000,000"):
        config.validate(dataclasses.replace(BASE, rate=1000, duration=1e9))
    with pytest.raises(ConfigError, match="fan-out mean 4"):  # 5e6 frames but 2e7+ messages
        config.validate(dataclasses.replace(BASE, rate=MAX_MESSAGES / 40, duration=11, fanout="4"))


def test_a_run_must_offer_a_frame():
    config.validate(dataclasses.replace(BASE, rate=0.5, duration=2, warmup=0))
    with pytest.raises(ConfigError, match="at least one frame"):
        config.validate(dataclasses.replace(BASE, rate=0.1, duration=3))
