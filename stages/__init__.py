"""Stages of the pipeline, by pipeline name. ``make(config, role, replica)`` builds one stage."""
from __future__ import annotations

import importlib

PIPELINES = {
    "synthetic": "stages.synthetic",
    "vision": "stages.vision",
}


def module(pipeline: str):
    return importlib.import_module(PIPELINES[pipeline])


def step_names(pipeline: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(stage A step names, stage B step names) of a pipeline, without building its stages."""
    m = module(pipeline)
    return tuple(m.PRODUCER_STEPS), tuple(m.CONSUMER_STEPS)


def make(config, role: str, replica: int = 0):
    m = module(config.pipeline)
    return m.make_producer(config) if role == "producer" else m.make_consumer(config, replica)
