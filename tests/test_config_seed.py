"""The seed's range: 0 to 2**32 - 1, whole numbers only, from a flag or a config file alike."""
import dataclasses

import numpy as np
import pytest

from testbed import config
from testbed.config import SEED_MAX, RunConfig
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
