"""Benchmark: a naive vision server against the testbed's pipelined configuration, same machine, same run.

Naive server (the baseline the study improves on): one process, one request at a time. For each frame:
decode, preprocess, detect, then classify each crop on its own (batch 1); no batching, no overlap.
It uses the very stage code of the pipeline (stages/vision), called in a loop, with every core for
torch's intra-op threads.

Pipelined: ``testbed.run --pipeline vision --broker zeromq``: stage A and stage B in separate processes
(one torch thread each on 2 cores), crops handed over as zero-copy ZeroMQ frames, stage B batching up
to --batch-max crops. Offered load above capacity, so the rate out is the capacity.

Both do the same work per frame: random-init models, a fixed fan-out of crops per frame (the top-scoring
boxes), so frames/s compare directly.

Second table: the non-DNN share of a request, per image size and preprocessing backend, from the naive
server (one request at a time, so a frame's latency is exactly its steps): 1 - (detector inference +
classifier inference of its crops) / frame latency, as the study reports it.

Naive and pipelined measurements alternate ``--repeat`` times per image size (default 3; medians and
min-max spread in the first table).

    flock /tmp/testbed-bench.lock .venv/bin/python benchmarks/vision.py [--device cuda] [--repeat 3] [--write FILE]
"""
from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time

import _common as C  # noqa: E402 - first: it sets up the import path

from testbed.config import RunConfig  # noqa: E402

now = time.perf_counter_ns


def naive(cfg: RunConfig, frames_n: int) -> dict:
    """The naive server over ``frames_n`` frames: frames/s and the mean step breakdown per frame (ms)."""
    import torch

    import stages.vision as sv
    from testbed.harness.envelope import Envelope
    a, b = sv.make_producer(cfg), sv.make_consumer(cfg, 0)
    a.setup()
    b.setup()
    torch.set_num_threads(os.cpu_count() or 1)  # one request at a time: it may use every core
    for fid in range(3):  # warm-up at this thread count
        for it in a.process(fid).items:
            b.process([Envelope(0, fid, 0, 1, 0, 0, it.payload, it.shape, it.dtype)])
    a_tot = dict.fromkeys(a.steps, 0)
    b_tot = dict.fromkeys(b.steps, 0)
    crops = 0
    t0 = now()
    for fid in range(frames_n):
        res = a.process(fid)
        for k, v in zip(a.steps, res.steps):
            a_tot[k] += v
        for i, it in enumerate(res.items):
            steps = b.process([Envelope(i, fid, i, len(res.items), 0, 0, it.payload, it.shape, it.dtype)])
            for k, v in zip(b.steps, steps):
                b_tot[k] += v
        crops += len(res.items)
    wall = now() - t0
    a.close()
    b.close()
    per = lambda ns: ns / frames_n / 1e6  # noqa: E731 - ms per frame
    frame_ms = per(wall)
    dnn_ms = per(a_tot["infer"] + b_tot["infer"])
    pre_ms = per(a_tot["decode"] + a_tot["resize"] + a_tot["normalize"])
    return {
        "frames_per_s": frames_n / (wall / 1e9), "frame_ms": frame_ms, "crops_per_frame": crops / frames_n,
        "a": {k: per(v) for k, v in a_tot.items()}, "b": {k: per(v) for k, v in b_tot.items()},
        "dnn_ms": dnn_ms, "preprocess_ms": pre_ms,
        "non_dnn_share": 1 - dnn_ms / frame_ms, "preprocess_share": pre_ms / frame_ms,
    }


def pipelined(cfg: RunConfig) -> dict:
    s = C.harness(cfg)
    fan = cfg.fanout_dist.mean
    return {"frames_per_s": s["throughput_out"] / fan, "msgs_per_s": s["throughput_out"],
            "e2e_p50_ms": s["e2e_p50_ms"], "non_dnn_share": s["non_dnn_share"],
            "a_infer_ms": s["a_infer_ms"], "b_infer_ms": s["b_infer_ms"], "complete": bool(s.get("complete")),
            "run_dir": cfg.out}


def main(argv=None) -> int:
    ap = C.parser(__doc__)
    ap.add_argument("--detector", default="ssdlite")
    ap.add_argument("--classifier", default="mobilenet_v3")
    ap.add_argument("--fanout", default="4")
    ap.add_argument("--frames", type=int, default=14, help="frames per naive measurement")
    ap.add_argument("--sizes", default="small,medium,large", help="image sizes for the non-DNN share table")
    ap.add_argument("--throughput-sizes", default="small,medium", help="image sizes for naive vs pipelined")
    ap.add_argument("--seconds", type=float, default=16.0, help="pipelined run length (warm-up 5 s included)")
    ap.add_argument("--batch-max", type=int, default=8)
    ap.add_argument("--batch-wait-ms", type=float, default=20.0)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = ap.parse_args(argv)
    base = dict(pipeline="vision", detector=args.detector, classifier=args.classifier, fanout=args.fanout,
                seed=1, batch_max=1, device=args.device)
    out_root = tempfile.mkdtemp(prefix="tb-bench-vision-")
    results = {"share": {}, "throughput": {}}
    t_start = time.monotonic()

    for size in args.sizes.split(","):
        for pre in ("cpu", "dali"):
            r = naive(RunConfig(**base, image_size=size, preprocess=pre), args.frames)
            results["share"][f"{size}/{pre}"] = r
            print(f"naive {size:6s} {pre:4s}: {r['frames_per_s']:6.2f} frames/s, frame {r['frame_ms']:7.1f} ms, "
                  f"preprocess {r['preprocess_ms']:6.1f} ms, DNN {r['dnn_ms']:6.1f} ms, "
                  f"non-DNN share {r['non_dnn_share']:.2f}", file=sys.stderr, flush=True)

    for size in args.throughput_sizes.split(","):
        offered: list = []  # 3x the first naive measurement: above the pipeline's capacity

        def naive_side(size=size, offered=offered):
            nv = naive(RunConfig(**base, image_size=size, preprocess="cpu"), args.frames)
            if not offered:
                offered.append(max(1.0, round(3.0 * nv["frames_per_s"], 1)))
            return nv

        def pipelined_side(size=size, offered=offered):
            cfg = RunConfig(**{**base, "batch_max": args.batch_max}, image_size=size, preprocess="cpu",
                            broker="zeromq", batch_wait_ms=args.batch_wait_ms, rate=offered[0], arrival="constant",
                            duration=args.seconds, warmup=5.0, drain=1.0, no_trace=True,
                            out=os.path.join(out_root, f"pipelined-{size}-{C.now()}"))
            pr = pipelined(cfg)
            pr["offered_frames_per_s"] = offered[0]
            return pr
        got = C.alternate({"naive": naive_side, "pipelined": pipelined_side}, args.repeat)
        nv, pr = C.med(got["naive"], "frames_per_s"), C.med(got["pipelined"], "frames_per_s")
        results["throughput"][size] = {"naive": nv, "pipelined": pr, "ratio": pr / nv,
                                       "naive_cell": C.cell(got["naive"], "frames_per_s", "{:.2f}"),
                                       "pipelined_cell": C.cell(got["pipelined"], "frames_per_s", "{:.2f}"),
                                       "runs": got["pipelined"]}
        C.say(f"{size}: naive {nv:.2f} frames/s, pipelined {pr:.2f} frames/s (x{pr / nv:.2f}; medians of "
              f"{args.repeat})")

    results["machine"] = {"host": platform.node(), "cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version(), "wall_s": round(time.monotonic() - t_start, 1)}
    results["models"] = {"detector": args.detector, "classifier": args.classifier, "fanout": args.fanout,
                         "weights": "random-init", "device": args.device, "batch_max": args.batch_max,
                         "batch_wait_ms": args.batch_wait_ms, "repeat": args.repeat}
    C.emit(tables(results), args.write)
    with open(os.path.join(out_root, "vision-benchmark.json"), "w") as fh:
        json.dump(results, fh, indent=1)
    print(f"(raw results: {out_root}/vision-benchmark.json)", file=sys.stderr)
    return 0


def tables(res: dict) -> str:
    m, mo = res["machine"], res["models"]
    head = (f"{C.machine()}; device {mo['device']}. Models: {mo['detector']} + {mo['classifier']} "
            f"({mo['weights']}), {mo['fanout']} crops/frame; {mo['repeat']} alternating naive/pipelined "
            f"measurements per size (median, min-max in brackets). Benchmark wall time {m['wall_s']} s.\n\n")
    lines = [head + C.table(["image size", "naive server (frames/s)",
                             f"pipelined, zeromq, batch <= {mo['batch_max']} (frames/s)", "ratio"],
                            [[size, t["naive_cell"], t["pipelined_cell"], f"{t['ratio']:.2f}x"]
                             for size, t in res["throughput"].items()], ["l", "r", "r", "r"]).rstrip("\n")]
    lines += ["", "Non-DNN share of one request (naive server, one request at a time), ms per frame:", "",
              "| image size | preprocess | frame | decode | resize | normalize | detector infer | NMS + crops "
              "| classifier infer (all crops) | other | non-DNN share | preprocessing share |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, r in res["share"].items():
        size, pre = key.split("/")
        a, b = r["a"], r["b"]
        known = a["decode"] + a["resize"] + a["normalize"] + a["infer"] + a["postprocess"] + b["infer"]
        lines.append(f"| {size} | {pre} | {r['frame_ms']:.1f} | {a['decode']:.1f} | {a['resize']:.1f} | "
                     f"{a['normalize']:.1f} | {a['infer']:.1f} | {a['postprocess']:.1f} | {b['infer']:.1f} | "
                     f"{r['frame_ms'] - known:.1f} | {r['non_dnn_share']:.2f} | {r['preprocess_share']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
