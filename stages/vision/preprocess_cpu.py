"""Preprocessing on the CPU with torchvision: decode, resize, normalize (``--preprocess cpu``).

decode     torchvision.io.decode_jpeg (libjpeg-turbo) to RGB uint8, CHW: the full-resolution frame,
           kept for the crops stage A cuts out of it.
resize     torchvision.transforms.v2.functional.resize, bilinear with antialias, on uint8 (torchvision's
           vectorised uint8 path: no float copy of the full frame is ever made).
normalize  to float32 in [0, 1], then (x - mean) / std of the detector, NCHW with N = 1.

This is the library the brief names; the alternative (PIL-SIMD or OpenCV) is not installed here, and
torchvision's uint8 antialiased resize is the fastest resize available in this environment (see
docs/vision.md for the per-step times).

Output layout (both backends): full frame uint8 CHW, model input float32 1x3xHxW (contiguous).
"""
from __future__ import annotations

import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as F


def input_size(spec: dict, w: int, h: int) -> tuple[int, int]:
    """(h, w) of the detector input for a w x h frame (the rule of torchvision's detection transform)."""
    if spec.get("size"):
        return tuple(spec["size"])
    scale = min(spec["shorter"] / min(h, w), spec["max_size"] / max(h, w))
    return max(1, int(h * scale)), max(1, int(w * scale))


class CpuPreprocess:
    backend = "cpu"

    def __init__(self, spec: dict):
        self.spec = spec
        self.mean = list(spec["mean"])
        self.std = list(spec["std"])

    def describe(self) -> str:
        return "cpu (torchvision.io.decode_jpeg + transforms.v2)"

    def run(self, data: torch.Tensor, w: int, h: int, clock):
        """(full frame uint8 3xHxW, model input float32 1x3xhxw), both on the CPU."""
        img = decode_jpeg(data, mode=ImageReadMode.RGB)
        clock.lap("decode")
        small = F.resize(img, list(input_size(self.spec, img.shape[2], img.shape[1])), antialias=True)
        clock.lap("resize")
        x = F.normalize(F.to_dtype(small, torch.float32, scale=True), self.mean, self.std).unsqueeze(0)
        clock.lap("normalize")
        return img, x

    def close(self) -> None:
        pass
