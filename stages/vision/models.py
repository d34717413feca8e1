"""The DNNs of the vision pipeline and their weights: built with random init, never downloaded.

Detectors (stage A): ``ssdlite`` = SSDlite320 with a MobileNetV3-Large backbone (fixed 320x320 input);
``fasterrcnn`` = Faster R-CNN MobileNetV3-Large-320-FPN and ``fasterrcnn_resnet50`` = Faster R-CNN
ResNet-50-FPN (both: shorter side 320, longer at most 640, the mobile variant's input; ResNet-50-FPN
is trained at 800 and its published 134 GFLOPs are at that size).
Classifiers (stage B): ``resnet152``, ``resnet50``, ``resnet18``, ``mobilenet_v3`` (MobileNetV3-Large),
224x224 input.

Size: ``gflops`` counts the network's multiply-adds (convolutions and matrix products, torch's
FlopCounterMode, halved) at the input the run feeds it: torchvision's and the study's convention
(ResNet-152 at 224x224: 11.5). The stages count them once, on their first warm-up pass, for run.json.

Weights, in this order:
1. ``--weights PATH``: a file written by ``torch.save``: either one model's state dict (it is matched
   against both models of the run and loaded into the one it fits) or ``{"detector": sd, "classifier":
   sd}``. It is read with ``weights_only=True`` (no code in it runs). A file that fits neither model is
   a ConfigError before the run starts (``check``, called from testbed/config.py validate).
2. torchvision's own cache (``torch.hub.get_dir()/checkpoints``) when it already holds the model's
   COCO / ImageNet weights file: loaded from disk, nothing is fetched.
3. Otherwise random init (seeded with ``--seed``): the networks run at full cost, their outputs mean
   nothing, and stage A draws its crop count from ``--fanout`` (see detector.py).
"""
from __future__ import annotations

import os

from testbed.errors import ConfigError

DETECTORS = ("ssdlite", "fasterrcnn", "fasterrcnn_resnet50")
CLASSIFIERS = ("resnet50", "resnet18", "mobilenet_v3", "resnet152")
RANDOM_INIT = "random-init"

# Input of each detector: fixed (h, w), or None with (shorter side, longer side cap); mean/std on [0, 1].
DETECTOR_INPUT = {
    "ssdlite": {"size": (320, 320), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
    "fasterrcnn": {"size": None, "shorter": 320, "max_size": 640,
                   "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
}
DETECTOR_INPUT["fasterrcnn_resnet50"] = DETECTOR_INPUT["fasterrcnn"]
CLASSIFIER_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _weights_enum(name: str):
    from torchvision.models import MobileNet_V3_Large_Weights, ResNet18_Weights, ResNet50_Weights, ResNet152_Weights
    from torchvision.models.detection import (FasterRCNN_MobileNet_V3_Large_320_FPN_Weights,
                                              FasterRCNN_ResNet50_FPN_Weights, SSDLite320_MobileNet_V3_Large_Weights)
    return {"ssdlite": SSDLite320_MobileNet_V3_Large_Weights,
            "fasterrcnn": FasterRCNN_MobileNet_V3_Large_320_FPN_Weights,
            "fasterrcnn_resnet50": FasterRCNN_ResNet50_FPN_Weights,
            "resnet50": ResNet50_Weights, "resnet18": ResNet18_Weights, "resnet152": ResNet152_Weights,
            "mobilenet_v3": MobileNet_V3_Large_Weights}[name]


def build(name: str, seed: int = 1):
    """The model, random init (seeded), eval mode. Nothing is downloaded."""
    import torch
    from torchvision import models
    from torchvision.models import detection
    torch.manual_seed(seed)
    if name == "ssdlite":
        m = detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91)
    elif name == "fasterrcnn":
        m = detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=91)
    elif name == "fasterrcnn_resnet50":
        m = detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    elif name == "resnet50":
        m = models.resnet50(weights=None)
    elif name == "resnet18":
        m = models.resnet18(weights=None)
    elif name == "resnet152":
        m = models.resnet152(weights=None)
    elif name == "mobilenet_v3":
        m = models.mobilenet_v3_large(weights=None)
    else:
        raise ConfigError(f"unknown model {name!r}: use one of {', '.join(DETECTORS + CLASSIFIERS)}")
    return m.eval()


def count_gflops(fn, *args):
    """(fn(*args), its multiply-adds in billions): torch's FlopCounterMode counts 2 per multiply-add."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        out = fn(*args)
    return out, round(counter.get_total_flops() / 2e9, 3)


def cached_file(name: str) -> str | None:
    """torchvision's cached weights file for a model, if it is already on disk (never downloads)."""
    import torch
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    for w in _weights_enum(name):
        path = os.path.join(folder, os.path.basename(w.url))
        if os.path.isfile(path):
            return path
    return None


def read_state(path: str) -> dict:
    import torch
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise ConfigError(f"--weights {path!r} is not a torch state dict file: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict) and len(obj) <= 3:
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise ConfigError(f"--weights {path!r} holds a {type(obj).__name__}, not a state dict")
    return obj


def mismatch(model, sd: dict) -> str:
    """Why ``sd`` does not fit ``model`` ('' when it fits exactly)."""
    own = model.state_dict()
    optional = {k for k in own if k.endswith("num_batches_tracked")}
    missing = [k for k in own if k not in sd and k not in optional]
    unexpected = [k for k in sd if k not in own]
    shapes = [k for k in sd if k in own and hasattr(sd[k], "shape") and tuple(sd[k].shape) != tuple(own[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} of another shape (e.g. {k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)})")
    return ", ".join(parts)


def split_weights(path: str, detector: str, classifier: str, models_: dict | None = None) -> dict:
    """{"detector": sd or None, "classifier": sd or None} from a --weights file, or ConfigError."""
    sd = read_state(path)
    models_ = models_ or {}
    det = models_.get("detector") or build(detector)
    cls = models_.get("classifier") or build(classifier)
    if set(sd) <= {"detector", "classifier"}:
        out = {"detector": sd.get("detector"), "classifier": sd.get("classifier")}
        for role, m, name in (("detector", det, detector), ("classifier", cls, classifier)):
            if out[role] is not None:
                why = mismatch(m, out[role])
                if why:
                    raise ConfigError(f"--weights {path!r}: its {role} weights do not fit {name}: {why}")
        return out
    why_det, why_cls = mismatch(det, sd), mismatch(cls, sd)
    if not why_det:
        return {"detector": sd, "classifier": None}
    if not why_cls:
        return {"detector": None, "classifier": sd}
    raise ConfigError(f"--weights {path!r} fits neither the detector {detector} ({why_det}) "
                      f"nor the classifier {classifier} ({why_cls})")


def check(cfg) -> None:
    """Validate --weights against the run's models before anything starts (ConfigError if it fits neither)."""
    if cfg.pipeline == "vision" and cfg.weights:
        split_weights(cfg.weights, cfg.detector, cfg.classifier)


def load(role: str, name: str, cfg):
    """(model with its weights, weights source for run.json): --weights, torchvision's cache, or random init."""
    import torch
    model = build(name, cfg.seed)
    if cfg.weights:
        sd = split_weights(cfg.weights, cfg.detector, cfg.classifier, {role: model})[role]
        if sd is None:
            return model, f"{RANDOM_INIT} (--weights {cfg.weights} is for the other stage)"
        model.load_state_dict(sd, strict=False)
        return model, os.path.abspath(cfg.weights)
    path = cached_file(name)
    if path:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
            if not mismatch(model, sd):
                model.load_state_dict(sd, strict=False)
                return model, path
        except Exception:  # noqa: BLE001 - a broken cache file: run with random init, say so
            pass
    return model, RANDOM_INIT


def set_threads(cfg) -> int:
    """Torch threads for one stage: the cores shared out between stage A and the stage B replicas."""
    import torch
    n = max(1, (os.cpu_count() or 1) // (1 + cfg.replicas))
    torch.set_num_threads(n)
    return n
