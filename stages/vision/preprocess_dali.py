"""Preprocessing with NVIDIA DALI: decode, resize, normalize (``--preprocess dali``).

Three small DALI pipelines, one per step, so each step is timed on its own like the cpu backend's
(one fused pipeline hides where its time goes; the hand-over between them is a zero-copy DLPack view
on the GPU and one buffer hand-over on the CPU: docs/vision.md gives its cost).

decode     fn.decoders.image to RGB uint8 HWC: device "cpu" (libjpeg-turbo) without a GPU,
           "mixed" (nvJPEG: Huffman on the CPU, IDCT on the GPU) with ``--device cuda``.
resize     fn.resize, linear with antialias, to the detector input size (the same size the cpu backend
           computes, passed in per frame).
normalize  fn.crop_mirror_normalize to float32 CHW, (x - 255*mean) / (255*std).

Output layout, as the cpu backend: full frame uint8 3xHxW (a CHW view of DALI's HWC buffer, valid until
the next frame) and model input float32 1x3xhxw, on the CPU or (mixed) on the GPU. A DALI pipeline
that hits a corrupt JPEG is no longer valid; it is rebuilt (a few ms) and the frame fails.
"""
from __future__ import annotations

import numpy as np
import torch

from stages.vision.preprocess_cpu import input_size


class DaliPreprocess:
    backend = "dali"

    def __init__(self, spec: dict, gpu: bool, threads: int = 1):
        self.spec, self.gpu, self.threads = spec, gpu, max(1, threads)
        self.mean = [255.0 * m for m in spec["mean"]]
        self.std = [255.0 * s for s in spec["std"]]
        self._build()

    def describe(self) -> str:
        return "dali (mixed decoder, GPU)" if self.gpu else "dali (cpu decoder)"

    def _build(self) -> None:
        from nvidia.dali import fn, pipeline_def, types
        dev = "gpu" if self.gpu else "cpu"
        kw = dict(batch_size=1, num_threads=self.threads, device_id=0 if self.gpu else None,
                  prefetch_queue_depth=1, exec_async=False, exec_pipelined=False)

        @pipeline_def(**kw)
        def decode():
            enc = fn.external_source(name="enc", dtype=types.UINT8, ndim=1, device="cpu")
            return fn.decoders.image(enc, device="mixed" if self.gpu else "cpu", output_type=types.RGB)

        @pipeline_def(**kw)
        def resize():
            img = fn.external_source(name="img", dtype=types.UINT8, ndim=3, layout="HWC", device=dev)
            rx = fn.external_source(name="rx", dtype=types.FLOAT, ndim=0)
            ry = fn.external_source(name="ry", dtype=types.FLOAT, ndim=0)
            return fn.resize(img, resize_x=rx, resize_y=ry, interp_type=types.INTERP_LINEAR, antialias=True)

        @pipeline_def(**kw)
        def normalize():
            img = fn.external_source(name="img", dtype=types.UINT8, ndim=3, layout="HWC", device=dev)
            return fn.crop_mirror_normalize(img, dtype=types.FLOAT, output_layout="CHW",
                                            mean=self.mean, std=self.std)

        self.p_decode, self.p_resize, self.p_norm = decode(), resize(), normalize()
        for p in (self.p_decode, self.p_resize, self.p_norm):
            p.build()

    def run(self, data: torch.Tensor, w: int, h: int, clock):
        """(full frame uint8 3xHxW, model input float32 1x3xhxw), on the GPU when the decoder is mixed."""
        try:
            self.p_decode.feed_input("enc", [data.numpy()])
            (img,) = self.p_decode.run()
            full = torch.from_dlpack(img[0] if not self.gpu else img.as_tensor())
            if self.gpu:
                full = full.squeeze(0)
            clock.lap("decode")
            ih, iw = int(full.shape[0]), int(full.shape[1])
            oh, ow = input_size(self.spec, iw, ih)
            self.p_resize.feed_input("img", img)
            self.p_resize.feed_input("rx", [np.float32(ow)])
            self.p_resize.feed_input("ry", [np.float32(oh)])
            (small,) = self.p_resize.run()
            clock.lap("resize")
            self.p_norm.feed_input("img", small)
            (x,) = self.p_norm.run()
            x = torch.from_dlpack(x.as_tensor())
            if not self.gpu:
                x = x.clone()  # DALI reuses its output buffer on the next frame
            clock.lap("normalize")
        except RuntimeError:
            self._build()  # a pipeline that failed is no longer valid
            raise
        return full.permute(2, 0, 1), x

    def close(self) -> None:
        for name in ("p_decode", "p_resize", "p_norm"):
            p = getattr(self, name, None)
            if p is not None:
                del p
