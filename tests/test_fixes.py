"""Config bounds: the seed range and the size of a run (its schedule and records are held in memory)."""
import dataclasses

import numpy as np
import pytest

from testbed import config
from testbed.config import MAX_MESSAGES, SEED_MAX, RunConfig
from testbed.errors import ConfigError

BASE = RunConfig(broker="inproc", duration=3, warmup=1, fanout="1")


@pytest.mark.parametrize("seed", [0, 1, SEED_MAX, np.int64(7)])
def test_seeds_in_range_are_accepted(seed):
    config.validate(dataclasses.replace(BASE, seed=seed))


@pytest.mark.parametrize("seed", [-1, SEED_MAX + 1, 1.5, "3", True])
def test_seeds_out_of_range_are_one_clear_error(seed):
    with pytest.raises(ConfigError, match=r"--seed .* 0 to 4294967295"):
        config.validate(dataclasses.replace(BASE, seed=seed))


def test_seed_from_a_config_file_is_checked(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("seed: -3\n")
    with pytest.raises(ConfigError, match="--seed -3"):
        config.validate(RunConfig(**{**BASE.to_dict(), **config.read_yaml(str(f))}))


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
