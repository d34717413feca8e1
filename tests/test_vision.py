"""The vision pipeline (issue #4) on this CPU-only machine, at the smallest size: SSDlite + MobileNetV3,
320x240 frames, a few seconds per run. Behaviour, not speed (speed lives in benchmarks/vision.py).

- end to end on every broker the testbed has (adapters that do not import yet are skipped, with why);
- per-step times add up to the service time the harness measured (within 5%), for stage A per frame and
  stage B per batch;
- the cpu and dali preprocessing backends agree on the real photographs;
- bad frames (empty, not a JPEG, truncated, corrupt, decompression bomb) are counted, not fatal;
- a weights file that fits no model is one clear error before the run starts.
"""
from __future__ import annotations

import csv
import importlib
import json
import os
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import brokers
from stages.vision import frames
from testbed.config import RunConfig, validate
from testbed.errors import ConfigError
from testbed.orchestration.execute import execute

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(pipeline="vision", detector="ssdlite", classifier="mobilenet_v3", image_size="small",
            rate=3.0, arrival="constant", fanout="2", batch_max=4, batch_wait_ms=5.0,
            duration=3.0, warmup=0.5, drain=8.0, seed=2)
ALL_BROKERS = list(brokers.REGISTRY)
# The cpu and dali backends on the same JPEG: decoded frames within 2 grey levels (both use
# libjpeg-turbo, identical in practice); detector input (on [0, 1], before mean/std) within 1/255 on
# average and 0.05 at worst (antialias filters of two libraries, rounding to uint8 in between).
FULL_MAX_LEVELS = 2
INPUT_MEAN_TOL = 1 / 255
INPUT_MAX_TOL = 0.05
ADD_UP = 0.05


def _adapter_missing(name: str) -> str:
    module = brokers.REGISTRY[name].split(":")[0]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return f"adapter {module} does not import yet: {exc}"
    return ""


def _run(tmp_path, name, **kw):
    cfg = RunConfig(**{**TINY, "out": str(tmp_path / name), **kw})
    validate(cfg)
    return execute(cfg)


@pytest.fixture(scope="module")
def small():
    return frames.bundled("small")


# ---------------------------------------------------------------- frames and the JPEG gate

def test_bundled_set_is_real_photographs_at_the_size(small):
    assert len(small) >= 5
    assert {"astronaut", "coffee", "chelsea"} <= {f.name for f in small}
    for f in small:
        assert frames.jpeg_size(f.data) == frames.SIZES["small"]
        assert 5_000 < len(f.data) < 200_000


def _bomb(jpeg: bytes, w=30000, h=30000) -> bytes:
    """A real JPEG whose frame header announces w x h pixels: small file, huge allocation."""
    b = bytearray(jpeg)
    pos = 2
    while True:
        marker, length = b[pos + 1], struct.unpack_from(">H", b, pos + 2)[0]
        if marker in (0xC0, 0xC1, 0xC2):
            struct.pack_into(">HH", b, pos + 5, h, w)
            return bytes(b)
        pos += 2 + length


def bad_frames(good: bytes) -> dict:
    return {
        "empty.jpg": (b"", "empty file"),
        "text.jpg": (b"this is not an image\n" * 10, "not a JPEG"),
        "truncated.jpg": (good[: len(good) // 2], "truncated"),
        "bomb.jpg": (_bomb(good), "Mpx"),
        "badlength.jpg": (good[:2] + b"\xff\xe0\x00\x01" + good[6:], "corrupt"),
    }


@pytest.mark.parametrize("name", ["empty.jpg", "text.jpg", "truncated.jpg", "bomb.jpg", "badlength.jpg"])
def test_jpeg_gate_refuses_with_a_reason(small, name):
    data, reason = bad_frames(small[0].data)[name]
    with pytest.raises(frames.BadFrame, match=reason):
        frames.jpeg_size(data)


# ---------------------------------------------------------------- preprocessing backends agree

def test_cpu_and_dali_backends_agree_on_the_real_photographs(small):
    from stages.vision.models import DETECTOR_INPUT
    from stages.vision.preprocess_cpu import CpuPreprocess
    from stages.vision.preprocess_dali import DaliPreprocess
    from stages.vision.timing import StepClock
    spec = DETECTOR_INPUT["ssdlite"]
    cpu, dali = CpuPreprocess(spec), DaliPreprocess(spec, gpu=False)
    clock = StepClock(("decode", "resize", "normalize"))
    std = torch.tensor(spec["std"]).view(1, 3, 1, 1)
    for f in small:
        enc = torch.frombuffer(bytearray(f.data), dtype=torch.uint8)
        w, h = frames.jpeg_size(f.data)
        fa, xa = cpu.run(enc, w, h, clock)
        fb, xb = dali.run(enc, w, h, clock)
        assert fa.shape == fb.shape == (3, h, w) and fa.dtype == fb.dtype == torch.uint8
        assert xa.shape == xb.shape == (1, 3, 320, 320) and xa.dtype == xb.dtype == torch.float32
        assert (fa.int() - fb.int()).abs().max().item() <= FULL_MAX_LEVELS, f.name
        d = (xa - xb).abs() * std  # back on the [0, 1] scale
        assert d.mean().item() <= INPUT_MEAN_TOL, f.name
        assert d.max().item() <= INPUT_MAX_TOL, f.name


def test_dali_recovers_after_a_corrupt_frame(small):
    from stages.vision.models import DETECTOR_INPUT
    from stages.vision.preprocess_dali import DaliPreprocess
    from stages.vision.timing import StepClock
    dali = DaliPreprocess(DETECTOR_INPUT["ssdlite"], gpu=False)
    clock = StepClock(("decode", "resize", "normalize"))
    good = small[0].data
    garbage = good[:600] + bytes(np.random.default_rng(0).integers(0, 255, 3000, dtype=np.uint8)) + b"\xff\xd9"
    try:
        dali.run(torch.frombuffer(bytearray(garbage), dtype=torch.uint8), 320, 240, clock)
    except RuntimeError:
        pass  # refused: the pipeline is rebuilt
    _, x = dali.run(torch.frombuffer(bytearray(good), dtype=torch.uint8), 320, 240, clock)
    assert x.shape == (1, 3, 320, 320)


# ---------------------------------------------------------------- steps add up (stage objects, harness clock)

@pytest.fixture(scope="module")
def stage_pair():
    import stages.vision as sv
    cfg = RunConfig(**{**TINY, "fanout": "3", "batch_max": 4})
    a, b = sv.make_producer(cfg), sv.make_consumer(cfg, 0)
    a.setup()
    b.setup()
    return a, b


def test_stage_a_steps_add_up_to_its_service_time(stage_pair):
    a, _ = stage_pair
    for fid in range(4):
        start = time.monotonic_ns()  # stamped as testbed/harness/loops.py does
        res = a.process(fid)
        service = time.monotonic_ns() - start
        assert res.failed is None
        assert len(res.steps) == len(a.steps) == 8
        assert abs(sum(res.steps) - service) <= ADD_UP * service, (res.steps, service)
        named = dict(zip(a.steps, res.steps))
        assert named["decode"] > 0 and named["infer"] > 0 and named["postprocess"] > 0
        assert len(res.items) == 3
        for it in res.items:
            assert it.shape == (3, 224, 224) and it.dtype == "uint8" and memoryview(it.payload).nbytes == 150528


def test_stage_b_steps_add_up_to_its_service_time(stage_pair):
    from testbed.harness.envelope import Envelope, decode, encode
    a, b = stage_pair
    res = a.process(0)
    envs = [decode(encode(Envelope(i, 0, i, 3, 0, 0, it.payload, it.shape, it.dtype, res.steps)))
            for i, it in enumerate(res.items)]
    for batch in (envs[:1], envs):
        start = time.monotonic_ns()
        steps = b.process(batch)
        service = time.monotonic_ns() - start
        assert len(steps) == len(b.steps) == 5
        assert abs(sum(steps) - service) <= ADD_UP * service, (steps, service)
        assert dict(zip(b.steps, steps))["infer"] > 0
        assert len(b.last_top1) == len(batch)


def test_describe_names_models_weights_device_and_images(stage_pair):
    a, b = stage_pair
    da, db = a.describe(), b.describe()
    assert da["model"] == "ssdlite320_mobilenet_v3_large" and db["model"] == "mobilenet_v3_large"
    assert da["weights"] == db["weights"] == "random-init"
    assert da["device"] == db["device"] == "cpu"
    assert da["preprocess"].startswith("cpu") and "small" in da["images"]


# ---------------------------------------------------------------- end to end, every broker

def _check_run(result, run_dir):
    s = result.summary
    assert result.complete, s.get("error")
    assert s["sent"] > 0 and s["received"] == s["sent"] and s["lost"] == 0 and s["failed"] == 0
    for col in ("a_decode_ms", "a_resize_ms", "a_normalize_ms", "a_infer_ms", "a_postprocess_ms",
                "b_deserialize_ms", "b_infer_ms"):
        assert s[col] > 0, col
    for col in ("a_h2d_ms", "a_d2h_ms", "b_h2d_ms", "b_d2h_ms", "a_serialize_ms", "a_publish_ms"):
        assert s[col] >= 0, col
    assert 0 < s["non_dnn_share"] < 1
    with open(os.path.join(run_dir, "summary.csv")) as fh:
        row = next(csv.DictReader(fh))
    assert row["a_infer_ms"] and row["b_infer_ms"] and row["non_dnn_share"]
    # every message: its stage B steps add up to its batch's service time
    with open(os.path.join(run_dir, "messages.csv")) as fh:
        msgs = [m for m in csv.DictReader(fh) if m["status"] == "ok"]
    # step columns (the harness's own a_harness/b_harness bookkeeping columns are not steps)
    from stages.vision import CONSUMER_STEPS, PRODUCER_STEPS
    b_cols = [k for k in msgs[0] if k.startswith("b_") and k[2:-3] in CONSUMER_STEPS]
    a_cols = [k for k in msgs[0] if k.startswith("a_") and k[2:-3] in PRODUCER_STEPS]
    assert len(a_cols) == 8 and len(b_cols) == 5
    for m in msgs:
        service = int(m["end_ns"]) - int(m["start_ns"])
        assert abs(sum(int(m[k]) for k in b_cols) - service) <= ADD_UP * service, m
    meta = json.load(open(os.path.join(run_dir, "run.json")))
    st = meta["stages"]
    assert st["producer"]["stage"]["model"] == "ssdlite320_mobilenet_v3_large"
    assert st["consumer-0"]["stage"]["model"] == "mobilenet_v3_large"
    assert st["producer"]["stage"]["weights"] == "random-init"
    return s, meta


@pytest.mark.parametrize("broker", ALL_BROKERS)
def test_vision_end_to_end_on_every_broker(tmp_path, broker):
    why = _adapter_missing(broker)
    if why:
        pytest.skip(why)
    # zeromq runs the dali backend, so both backends go through a whole run
    preprocess = "dali" if broker == "zeromq" else "cpu"
    # server brokers: a private local server (as tests/test_real_brokers.py), not the docker images
    launcher = "auto" if brokers.get(broker).in_process or broker == "zeromq" else "local"
    result = _run(tmp_path, broker, broker=broker, preprocess=preprocess, launcher=launcher)
    s, meta = _check_run(result, result.run_dir)
    assert meta["stages"]["producer"]["stage"]["preprocess"].startswith(preprocess)


def test_bad_frames_are_counted_not_fatal(tmp_path, small):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a_good.jpg").write_bytes(small[0].data)
    for name, (data, _) in bad_frames(small[0].data).items():
        (folder / name).write_bytes(data)
    (folder / "notes.txt").write_text("ignored: not a .jpg")
    result = _run(tmp_path, "bad", images=str(folder), rate=6.0, duration=3.0)
    s = result.summary
    assert result.complete, s.get("error")
    assert s["failed"] >= 5 and s["received"] == s["sent"] > 0
    meta = json.load(open(os.path.join(result.run_dir, "run.json")))
    reasons = " | ".join(f["reason"] for f in meta["failed_frames"])
    for name, (_, why) in bad_frames(small[0].data).items():
        assert name in reasons and why in reasons, (name, reasons)
    assert "a_good.jpg" not in reasons


# ---------------------------------------------------------------- weights

def test_weights_that_fit_no_model_are_a_config_error(tmp_path):
    from torchvision.models import resnet18
    bad = tmp_path / "resnet18.pt"
    torch.save(resnet18().state_dict(), bad)
    cfg = RunConfig(**{**TINY, "weights": str(bad)})
    with pytest.raises(ConfigError, match="fits neither the detector ssdlite .* nor the classifier mobilenet_v3"):
        validate(cfg)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="is not a torch state dict file"):
        validate(RunConfig(**{**TINY, "weights": str(junk)}))


def test_weights_for_the_classifier_are_loaded_there(tmp_path):
    from stages.vision import models
    from torchvision.models import mobilenet_v3_large
    good = tmp_path / "mnv3.pt"
    m = mobilenet_v3_large()
    torch.save(m.state_dict(), good)
    cfg = RunConfig(**{**TINY, "weights": str(good)})
    validate(cfg)
    cls, src = models.load("classifier", "mobilenet_v3", cfg)
    assert src == str(good)
    assert torch.equal(cls.state_dict()["classifier.3.weight"], m.state_dict()["classifier.3.weight"])
    _, src_det = models.load("detector", "ssdlite", cfg)
    assert src_det.startswith("random-init")


def test_cli_weights_mismatch_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "w.pt"
    torch.save({"fc.weight": torch.zeros(3, 3)}, bad)
    p = subprocess.run([sys.executable, "-m", "testbed.run", "--pipeline", "vision", "--weights", str(bad),
                        "--out", str(tmp_path / "never")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("testbed.run: error: --weights") and "Traceback" not in p.stderr
    assert not (tmp_path / "never").exists()


def test_step_table_in_the_human_summary():
    from testbed.analysis import report
    row = {"a_decode_ms": 1.0, "a_infer_ms": 5.0, "b_infer_ms": 3.0, "transit_p50_ms": 0.5,
           "wait_p50_ms": 0.5, "e2e_p50_ms": 10.0, "non_dnn_share": 0.2}
    text = "\n".join(report.step_table(row))
    assert "decode" in text and "50.0%" in text and "non-DNN share 0.20" in text
    assert report.step_table({"e2e_p50_ms": 1.0}) == []


# ---------------------------------------------------------------- pre-processed input (--preprocess pretensor)

def test_pretensor_is_a_preprocess_value_and_others_are_refused():
    validate(RunConfig(**{**TINY, "preprocess": "pretensor"}))
    with pytest.raises(ConfigError, match="--preprocess 'none' is not allowed: use one of cpu, dali, pretensor"):
        validate(RunConfig(**{**TINY, "preprocess": "none"}))


def test_pretensor_stage_a_skips_preprocessing_and_emits_the_same_crops(stage_pair):
    import stages.vision as sv
    cpu, _ = stage_pair
    cfg = RunConfig(**{**TINY, "fanout": "3", "batch_max": 4, "preprocess": "pretensor"})
    a = sv.make_producer(cfg)
    a.setup()
    assert a.describe()["preprocess"].startswith("pretensor")
    for fid in range(2):
        start = time.monotonic_ns()
        res = a.process(fid)
        service = time.monotonic_ns() - start
        named = dict(zip(a.steps, res.steps))
        assert named["decode"] == named["resize"] == named["normalize"] == 0, named
        assert named["infer"] > 0 and named["postprocess"] > 0
        assert abs(sum(res.steps) - service) <= ADD_UP * service, (res.steps, service)
        # the same frame through the cpu backend: the same model input, so the same boxes and crops
        ref = cpu.process(fid)
        assert len(res.items) == len(ref.items) == 3
        for got, want in zip(res.items, ref.items):
            assert np.array_equal(np.asarray(got.payload), np.asarray(want.payload))


def test_pretensor_run_reports_no_preprocessing_steps(tmp_path):
    result = _run(tmp_path, "pretensor", broker="inproc", preprocess="pretensor", duration=2.5, drain=5.0)
    s = result.summary
    assert result.complete, s.get("error")
    assert s["sent"] > 0 and s["received"] == s["sent"] and s["failed"] == 0
    assert s["a_decode_ms"] == s["a_resize_ms"] == s["a_normalize_ms"] == 0
    assert s["a_infer_ms"] > 0 and s["b_infer_ms"] > 0
    meta = json.load(open(os.path.join(result.run_dir, "run.json")))
    producer, consumer = meta["stages"]["producer"]["stage"], meta["stages"]["consumer-0"]["stage"]
    assert producer["preprocess"].startswith("pretensor")
    # every run records the size of its networks (torchvision's figures: 0.583 and 0.217 GFLOPs)
    assert producer["gflops"] == pytest.approx(0.583, rel=0.02) and producer["gflops_input"] == "1x3x320x320"
    assert consumer["gflops"] == pytest.approx(0.217, rel=0.05)


# ---------------------------------------------------------------- models above 10 GFLOPs, random init

def test_resnet152_loads_with_random_init_and_reports_its_gflops():
    import stages.vision as sv
    from torchvision.models import ResNet152_Weights
    from testbed.harness.envelope import Envelope
    cfg = RunConfig(**{**TINY, "classifier": "resnet152", "batch_max": 1})
    validate(cfg)
    b = sv.make_consumer(cfg, 0)
    b.setup()
    d = b.describe()
    assert d["model"] == "resnet152" and d["weights"] == "random-init"
    assert d["gflops"] > 10 and d["gflops"] == pytest.approx(ResNet152_Weights.DEFAULT.meta["_ops"], rel=0.01)
    crop = np.zeros((3, 224, 224), dtype=np.uint8)
    steps = b.process([Envelope(0, 0, 0, 1, 0, 0, memoryview(crop), (3, 224, 224), "uint8")])
    assert dict(zip(b.steps, steps))["infer"] > 0 and len(b.last_top1) == 1


def test_fasterrcnn_resnet50_detector_loads_with_random_init_and_reports_its_gflops():
    import stages.vision as sv
    cfg = RunConfig(**{**TINY, "detector": "fasterrcnn_resnet50", "fanout": "1"})
    validate(cfg)
    a = sv.make_producer(cfg)
    a.setup()
    d = a.describe()
    assert d["model"] == "fasterrcnn_resnet50_fpn" and d["weights"] == "random-init"
    # 320x240 frames: shorter side 320, so a 1x3x320x426 input; well above 10 GFLOPs at that size
    assert d["gflops_input"] == "1x3x320x426" and 20 < d["gflops"] < 60, d
    res = a.process(0)
    assert res.failed is None and len(res.items) == 1


# ---------------------------------------------------------------- the reproduction experiments

def test_every_reproduction_experiment_loads_and_is_on_the_reproduction_page():
    from testbed.orchestration import grid
    folder = os.path.join(ROOT, "experiments", "reproduction")
    files = sorted(f for f in os.listdir(folder) if f.endswith(".yaml"))
    assert len(files) >= 6
    page = open(os.path.join(ROOT, "docs", "reproduction.md"), encoding="utf-8").read()
    for f in files:
        sweep = grid.load(os.path.join(folder, f))  # every point validated, as --dry-run does
        assert sweep.points and sweep.name.startswith("repro_"), f
        assert f"experiments/reproduction/{f}" in page, f
    # the broker row covers every registered broker
    brokers_row = grid.load(os.path.join(folder, "brokers.yaml"))
    assert set(brokers_row.grid["broker"]) == set(brokers.names())
