"""Stage B of the vision pipeline: a batch of crops through a classifier, as one batched inference.

The harness forms the batch (up to --batch-max messages within --batch-wait-ms of the first, as
Triton's dynamic batcher does) and stamps its wait; ``process(batch)`` runs the batch once.

Steps (ns per batch, in CONSUMER_STEPS order; every message of a batch carries its batch's steps):

    deserialize  each payload (uint8 3x224x224, a zero-copy view of the received buffer) checked and
                 copied into one batch buffer (pinned on CUDA): the one copy batching needs
    h2d          batch buffer to the device (CUDA events; 0 on the CPU)
    normalize    uint8 -> float32, ImageNet mean/std (on the device, after the 4x smaller uint8 copy).
                 Not in the brief's list: kept apart so that infer is the network alone
    infer        the classifier network and the top-1 argmax
    d2h          top-1 class ids to the host

The steps tile ``process``, so they add up to the harness's service time of the batch (end - start).
A payload that is not a 3x224x224 uint8 crop is left out of the batch (counted in ``bad``).
"""
from __future__ import annotations

import numpy as np
import torch

from stages.base import ConsumerStage
from stages.vision import CONSUMER_STEPS
from stages.vision import device as dev
from stages.vision import models
from stages.vision.timing import StepClock

CROP = models.CLASSIFIER_SIZE
SHAPE = (3, CROP, CROP)
NBYTES = 3 * CROP * CROP
MODEL_NAMES = {"resnet50": "resnet50", "resnet18": "resnet18", "mobilenet_v3": "mobilenet_v3_large",
               "resnet152": "resnet152"}


class ClassifierStage(ConsumerStage):
    steps = CONSUMER_STEPS

    def __init__(self, config, replica: int):
        self.cfg, self.replica = config, replica
        self.device = dev.resolve(config.device)
        self.cuda = self.device.type == "cuda"
        self.model = None
        self.weights = ""
        self.threads = 0
        self.bad = 0
        self.last_top1 = None
        self.gflops = None

    def setup(self) -> None:
        self.threads = models.set_threads(self.cfg)
        model, self.weights = models.load("classifier", self.cfg.classifier, self.cfg)
        self.model = model.to(self.device)
        self.mean = torch.tensor(models.IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(models.IMAGENET_STD, device=self.device).view(1, 3, 1, 1) * 255.0
        self.clock = StepClock(CONSUMER_STEPS, cuda=self.cuda)
        n = max(1, min(self.cfg.batch_max, 8))
        with torch.inference_mode():  # warm-up: the network's size per crop, then the batch size expected
            _, self.gflops = models.count_gflops(self.model, torch.zeros((1, *SHAPE), device=self.device))
            self.model(torch.zeros((n, *SHAPE), device=self.device))

    def process(self, batch: list) -> tuple:
        clock = self.clock
        clock.start()
        host = torch.empty((len(batch), *SHAPE), dtype=torch.uint8, pin_memory=self.cuda)
        dst = host.numpy()
        n = 0
        for env in batch:
            p = env.payload
            if env.dtype != "uint8" or tuple(env.shape) != SHAPE or memoryview(p).nbytes != NBYTES:
                self.bad += 1
                continue
            dst[n] = np.frombuffer(p, dtype=np.uint8).reshape(SHAPE)
            n += 1
        host = host[:n]
        clock.lap("deserialize")
        if n == 0:
            return clock.steps()
        ev = clock.copy_events()
        if ev is not None:
            ev[0].record()
            x = host.to(self.device, non_blocking=True)
            ev[1].record()
            clock.lap_copy("h2d")
        else:
            x = host
            clock.lap("h2d")
        with torch.inference_mode():
            x = (x.float() - self.mean) / self.std
            clock.lap("normalize")
            top1 = self.model(x).argmax(1)
            clock.lap("infer")
            if ev is not None:
                ev[0].record()
                top1 = dev.to_host(top1)
                ev[1].record()
                clock.lap_copy("d2h")
            else:
                clock.lap("d2h")
        self.last_top1 = top1
        return clock.steps()

    def describe(self) -> dict:
        return {
            "role": "classifier", "replica": self.replica, "model": MODEL_NAMES[self.cfg.classifier],
            "weights": self.weights, "gflops": self.gflops, "gflops_input": f"1x3x{CROP}x{CROP} (per crop)",
            "device": str(self.device), "torch_threads": self.threads,
            "batch_max": self.cfg.batch_max, "batch_wait_ms": self.cfg.batch_wait_ms,
            "input": f"uint8 3x{CROP}x{CROP} crops, ImageNet mean/std applied on the device",
            "steps": list(CONSUMER_STEPS),
        }
