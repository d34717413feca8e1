"""Stage A of the vision pipeline: decode and preprocess a frame, detect, crop each box, emit the crops.

Steps (ns per frame, in PRODUCER_STEPS order; every message of a frame carries its frame's steps):

    decode, resize, normalize   the preprocessing backend (--preprocess cpu|dali); 0 with pretensor
                                (frames preprocessed once at setup: preprocess_pre.py)
    h2d                         model input to the device (CUDA events; 0 on the CPU)
    infer                       the detector network: SSDlite backbone + heads + anchors; Faster R-CNN
                                backbone + RPN (its proposal NMS included: it is part of the network)
                                + box head
    d2h                         boxes (cpu preprocessing) or crops (dali on the GPU) to the host
    postprocess                 box decoding, score filtering, NMS (torchvision's postprocess_detections),
                                choice of the boxes, crop + resize of each box to 224x224
    serialize                   crops tensor -> one numpy buffer; each message is a zero-copy view of it

"Add up": the steps tile ``process`` (timing.StepClock), so for every frame the sum of its steps equals
the harness's stage A service time (frame record end - start) minus two call overheads; the test
holds it within 5%. Failed frames emit nothing and carry no steps.

Message layout: one message per crop, uint8 3x224x224 (CHW, RGB, 150528 bytes), not normalised (the
classifier normalises after its own h2d: uint8 moves 4x fewer bytes than float32).

Crop count: with detector weights, the detections scoring above --score-threshold. With random init
the scores mean nothing, so the count is drawn from --fanout (seeded stream "fanout") and the
top-scoring boxes are cut; when the detector returns fewer boxes than drawn, the rest are whole-frame
crops. Crops are cut from the full-resolution decoded frame, as a real pipeline does.
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from stages.base import FrameResult, Item, ProducerStage
from stages.vision import PRODUCER_STEPS
from stages.vision import device as dev
from stages.vision import frames as frames_mod
from stages.vision import models
from stages.vision.timing import StepClock
from testbed.load.distributions import Fanout, rng_for

CROP = models.CLASSIFIER_SIZE
MODEL_NAMES = {"ssdlite": "ssdlite320_mobilenet_v3_large", "fasterrcnn": "fasterrcnn_mobilenet_v3_large_320_fpn",
               "fasterrcnn_resnet50": "fasterrcnn_resnet50_fpn"}


class DetectorNet:
    """A torchvision detector split into its network (infer) and its postprocessing (NMS)."""

    def __init__(self, name: str, model, trained: bool, score_threshold: float):
        from torchvision.models.detection.image_list import ImageList
        self.name, self.m, self.ImageList = name, model, ImageList
        if name.startswith("fasterrcnn"):
            # random init scores sit near 1/91, under the default 0.05: keep every box, choose later
            model.roi_heads.score_thresh = min(0.05, score_threshold) if trained else 0.0

    def infer(self, x: torch.Tensor):
        images = self.ImageList(x, [tuple(x.shape[-2:])])
        m = self.m
        feats = m.backbone(x)
        if isinstance(feats, torch.Tensor):
            feats = {"0": feats}
        if self.name == "ssdlite":
            fl = list(feats.values())
            head = m.head(fl)
            anchors = m.anchor_generator(images, fl)
            return head, anchors, images.image_sizes
        proposals, _ = m.rpn(images, feats)
        rh = m.roi_heads
        box = rh.box_head(rh.box_roi_pool(feats, proposals, images.image_sizes))
        logits, regression = rh.box_predictor(box)
        return logits, regression, proposals, images.image_sizes

    def postprocess(self, raw) -> tuple[torch.Tensor, torch.Tensor]:
        """(boxes Kx4 in model-input pixels, scores K), best first."""
        if self.name == "ssdlite":
            det = self.m.postprocess_detections(*raw)[0]
            return det["boxes"], det["scores"]
        boxes, scores, _ = self.m.roi_heads.postprocess_detections(*raw)
        b, s = boxes[0], scores[0]
        order = torch.argsort(s, descending=True)
        return b[order], s[order]


def crop_resize(full: torch.Tensor, boxes: torch.Tensor, size: int = CROP) -> torch.Tensor:
    """Each box (x1, y1, x2, y2 in full-frame pixels) cut from ``full`` (uint8 3xHxW) and resized to
    size x size (bilinear, antialias): N x 3 x size x size uint8, on ``full``'s device."""
    _, h, w = full.shape
    out = torch.empty((len(boxes), 3, size, size), dtype=torch.uint8, device=full.device)
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        x1 = min(max(int(x1), 0), w - 1)
        y1 = min(max(int(y1), 0), h - 1)
        x2 = min(max(int(round(x2)), x1 + 1), w)
        y2 = min(max(int(round(y2)), y1 + 1), h)
        out[i] = F.resize(full[:, y1:y2, x1:x2], [size, size], antialias=True)
    return out


class DetectorStage(ProducerStage):
    steps = PRODUCER_STEPS

    def __init__(self, config):
        self.cfg = config
        self.device = dev.resolve(config.device)
        self.cuda = self.device.type == "cuda"
        self.frames = frames_mod.load(config.image_size, config.images)
        self.fanout = Fanout.parse(config.fanout).sampler(rng_for(config.seed, "fanout"))
        self.threads = 0
        self.net = None
        self.pre = None
        self.gflops = None
        self.input_shape = None

    def setup(self) -> None:
        self.threads = models.set_threads(self.cfg)
        model, self.weights = models.load("detector", self.cfg.detector, self.cfg)
        self.trained = self.weights != models.RANDOM_INIT and not self.weights.startswith(models.RANDOM_INIT)
        self.net = DetectorNet(self.cfg.detector, model.to(self.device), self.trained, self.cfg.score_threshold)
        spec = models.DETECTOR_INPUT[self.cfg.detector]
        # encoded frames as uint8 tensors once, so a frame costs no copy at run time
        self.encoded = [torch.frombuffer(bytearray(f.data), dtype=torch.uint8) if f.data else
                        torch.empty(0, dtype=torch.uint8) for f in self.frames]
        if self.cfg.preprocess == "pretensor":
            from stages.vision.preprocess_pre import PretensorInput
            self.pre = PretensorInput(spec, self.frames, self.encoded, pin=self.cuda)
        elif self.cfg.preprocess == "dali":
            from stages.vision.preprocess_dali import DaliPreprocess
            self.pre = DaliPreprocess(spec, gpu=self.cuda, threads=self.threads)
        else:
            from stages.vision.preprocess_cpu import CpuPreprocess
            self.pre = CpuPreprocess(spec)
        self.clock = StepClock(PRODUCER_STEPS, cuda=self.cuda)
        for i in range(min(2, len(self.frames))):  # warm-up (allocator, DALI, first-call costs)
            self._run(i % len(self.frames), warm=True)

    def process(self, frame_id: int) -> FrameResult:
        return self._run(frame_id % len(self.frames))

    def _run(self, k: int, warm: bool = False) -> FrameResult:
        clock = self.clock
        clock.start()
        frame = self.frames[k]
        try:
            if self.pre.backend == "pretensor":
                ready = self.pre.get(k)
                if isinstance(ready, str):
                    return FrameResult(failed=ready)
                full, x = ready
            else:
                w, h = frames_mod.jpeg_size(frame.data)
                full, x = self.pre.run(self.encoded[k], w, h, clock)
        except frames_mod.BadFrame as exc:
            return FrameResult(failed=f"{frame.name}: {exc}")
        except RuntimeError as exc:  # the decoder refused it
            reason = str(exc).strip().splitlines()
            return FrameResult(failed=f"{frame.name}: decode failed: {reason[-1][:200] if reason else 'error'}")
        ev = clock.copy_events()
        if ev is not None and x.device.type == "cpu":
            ev[0].record()
            x = dev.to_device(x, self.device)
            ev[1].record()
            clock.lap_copy("h2d")
        else:
            clock.lap("h2d")
        with torch.inference_mode():
            if self.gflops is None and warm:  # once, on the first warm-up pass: the network's size
                raw, self.gflops = models.count_gflops(self.net.infer, x)
                self.input_shape = "x".join(map(str, x.shape))
            else:
                raw = self.net.infer(x)
            clock.lap("infer")
            boxes, scores = self.net.postprocess(raw)
            if self.trained:
                n = int((scores > self.cfg.score_threshold).sum())
            else:
                n = 2 if warm else self.fanout()
            chosen = boxes[:n]
            if full.device != chosen.device:  # cpu preprocessing on a GPU run: boxes come home
                clock.lap("postprocess")
                chosen = chosen.to("cpu")
                clock.lap("d2h")
            if len(chosen) < n:  # random init, too few boxes: whole-frame crops
                whole = torch.tensor([[0.0, 0.0, float(x.shape[-1]), float(x.shape[-2])]], device=chosen.device)
                chosen = torch.cat([chosen, whole.expand(n - len(chosen), 4)])
            sx, sy = full.shape[2] / x.shape[-1], full.shape[1] / x.shape[-2]
            chosen = chosen * torch.tensor([sx, sy, sx, sy], device=chosen.device)
            crops = crop_resize(full, chosen)
            clock.lap("postprocess")
            if crops.device.type != "cpu":
                ev = clock.copy_events()
                ev[0].record()
                crops = dev.to_host(crops)
                ev[1].record()
                clock.lap_copy("d2h")
        arr = np.ascontiguousarray(crops.numpy())
        items = [Item(arr[i], (3, CROP, CROP), "uint8") for i in range(len(arr))]
        clock.lap("serialize")
        return FrameResult(items, clock.steps())

    def describe(self) -> dict:
        c = self.cfg
        return {
            "role": "detector", "model": MODEL_NAMES[c.detector], "weights": self.weights,
            "gflops": self.gflops, "gflops_input": self.input_shape,
            "device": str(self.device), "preprocess": self.pre.describe() if self.pre else c.preprocess,
            "images": c.images or f"skimage photographs, {c.image_size} "
                                  f"{'x'.join(map(str, frames_mod.SIZES[c.image_size]))}",
            "frames": len(self.frames), "torch_threads": self.threads,
            "crops": f"detections scoring above {c.score_threshold:g}" if self.trained
            else f"--fanout {c.fanout} top-scoring boxes (random init)",
            "message": f"uint8 3x{CROP}x{CROP} RGB crop ({3 * CROP * CROP} bytes)",
            "steps": list(PRODUCER_STEPS),
        }

    def close(self) -> None:
        if self.pre is not None:
            self.pre.close()
