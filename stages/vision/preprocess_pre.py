"""Pre-processed input (``--preprocess pretensor``): stage A is fed tensors that are already preprocessed.

At setup every frame is decoded, resized and normalised once (the cpu backend's code, preprocess_cpu.py)
and kept in memory: the full-resolution uint8 frame (the crops are still cut from it) and the detector's
float32 input. At run time stage A starts at h2d: its decode, resize and normalize steps are 0.

Why: the throughput impact of preprocessing is the throughput of the full pipeline against the same
pipeline with its preprocessing taken out, on the same frames, models and load. Nothing else changes:
the h2d copy, the detector, NMS, the crops, the broker and stage B are the same code. The model input
is held in pinned memory on CUDA, so h2d stays a real copy.

A frame that fails to decode at setup keeps its reason and fails each time it comes up, as it would
with the other backends.
"""
from __future__ import annotations

import torch

from stages.vision import frames as frames_mod
from stages.vision.preprocess_cpu import CpuPreprocess
from stages.vision.timing import StepClock


class PretensorInput:
    backend = "pretensor"

    def __init__(self, spec: dict, frames: list, encoded: list, pin: bool = False):
        cpu = CpuPreprocess(spec)
        scratch = StepClock(("decode", "resize", "normalize"))
        self.ready: list = []
        for frame, data in zip(frames, encoded):
            try:
                w, h = frames_mod.jpeg_size(frame.data)
                scratch.start()
                full, x = cpu.run(data, w, h, scratch)
            except frames_mod.BadFrame as exc:
                self.ready.append(f"{frame.name}: {exc}")
                continue
            except RuntimeError as exc:  # the decoder refused it
                reason = str(exc).strip().splitlines()
                self.ready.append(f"{frame.name}: decode failed: {reason[-1][:200] if reason else 'error'}")
                continue
            self.ready.append((full, x.pin_memory() if pin else x.contiguous()))

    def describe(self) -> str:
        return "pretensor (decoded, resized and normalised once at setup; stage A starts at h2d)"

    def get(self, k: int):
        """(full frame uint8 3xHxW, model input float32 1x3xhxw) of frame ``k``, or its failure reason (str)."""
        return self.ready[k]

    def close(self) -> None:
        self.ready = []
