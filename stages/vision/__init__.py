"""The vision pipeline (``--pipeline vision``): real JPEG frames, a detector, crops, a classifier.

    frames (frames.py) -> stage A (detector.py): decode, resize, normalize [preprocess_cpu.py |
    preprocess_dali.py | preprocess_pre.py: done once at set-up], detect, NMS, crop -> one message per
    crop -> broker -> stage B (classifier.py): batched classification

Every step is timed (timing.py) and carried per message; docs/vision.md explains the columns, the
non-DNN share and the benchmark. Torch, torchvision and DALI are imported only when a stage is made.
"""
from __future__ import annotations

PRODUCER_STEPS = ("decode", "resize", "normalize", "h2d", "infer", "d2h", "postprocess", "serialize")
CONSUMER_STEPS = ("deserialize", "h2d", "normalize", "infer", "d2h")


def make_producer(config):
    from stages.vision.detector import DetectorStage
    return DetectorStage(config)


def make_consumer(config, replica: int):
    from stages.vision.classifier import ClassifierStage
    return ClassifierStage(config, replica)


def check(cfg) -> None:
    """Checks that need the vision modules, run by testbed/config.py validate before anything starts:
    the image folder holds JPEGs, DALI imports, CUDA is there, the weights file fits a model."""
    from stages.vision import frames
    from testbed.errors import ConfigError
    if cfg.images:
        frames.load_folder(cfg.images)
    if cfg.preprocess == "dali":
        try:
            import nvidia.dali  # noqa: F401
        except ImportError as exc:
            raise ConfigError(f"--preprocess dali needs NVIDIA DALI (pip install nvidia-dali-cuda120): {exc}") from None
    if cfg.device == "cuda":
        from stages.vision import device
        device.resolve("cuda")
    if cfg.weights:
        from stages.vision import models
        models.check(cfg)
