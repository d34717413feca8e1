"""The measured cells of docs/reproduction.md, from the sweeps' result folders.

    .venv/bin/python scripts/reproduction_tables.py [results/repro] [--update docs/reproduction.md]

Reads each row's sweep folder (the ``--out`` of its command in docs/reproduction.md): every complete run's
summary.csv and the grid point it ran (sweep.json). Runs of the same point are repetitions: a cell gives
their median and, where they differ, the min-max range in brackets. A folder that is missing or has no
complete run prints "not run". Nothing here measures: it only reads what the runs wrote.
"""
from __future__ import annotations

import csv
import json
import os
import statistics
import sys


def runs(folder: str) -> list[tuple[dict, dict]]:
    """(grid point without the repetition, summary row) for every complete run under ``folder``."""
    out = []
    if not os.path.isdir(folder):
        return out
    for name in sorted(os.listdir(folder)):
        d = os.path.join(folder, name)
        try:
            with open(os.path.join(d, "sweep.json")) as fh:
                meta = json.load(fh)
            with open(os.path.join(d, "summary.csv")) as fh:
                row = next(csv.DictReader(fh))
        except (OSError, StopIteration, ValueError):
            continue
        if meta.get("status") != "complete":
            continue
        point = {k: v for k, v in meta["point"].items() if k != "repetition"}
        try:  # the options the run had (a grid with one broker_opt value leaves it out of the point)
            with open(os.path.join(d, "run.json")) as fh:
                opts = (json.load(fh).get("config") or {}).get("broker_opt") or {}
        except (OSError, ValueError):
            opts = {}
        if opts and "broker_opt" not in point:
            point["broker_opt"] = {k: str(v) for k, v in opts.items()}
        out.append((point, row))
    return out


def key_of(point: dict) -> str:
    return json.dumps(point, sort_keys=True)


def grouped(folder: str) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for point, row in runs(folder):
        groups.setdefault(key_of(point), []).append(row)
    return groups


def num(row: dict, col: str) -> float:
    v = row.get(col, "")
    return float(v) if v not in ("", None) else float("nan")


def cell(rows: list[dict], value, fmt: str = "{:.1f}") -> str:
    """Median of ``value(row)`` over the repetitions, with the range when there are several."""
    vals = [v for v in (value(r) for r in rows) if v == v]
    if not vals:
        return "-"
    med = fmt.format(statistics.median(vals))
    lo, hi = fmt.format(min(vals)), fmt.format(max(vals))
    return med if lo == hi else f"{med} ({lo}-{hi})"


def col(name: str):
    return lambda r: num(r, name)


def pct(name: str):
    return lambda r: 100 * num(r, name)


def frames_per_s(r: dict) -> float:
    return num(r, "throughput_out") / num(r, "fanout_mean")


def stage_b_busy(r: dict) -> float:
    """The fraction of the time stage B served: the rate out over its measured capacity (an overloaded
    run's ``rho_measured`` is the offered load over that capacity, which can exceed 1)."""
    return num(r, "throughput_out") / num(r, "capacity_measured")


def preprocessing_ms(r: dict) -> float:
    return num(r, "a_decode_ms") + num(r, "a_resize_ms") + num(r, "a_normalize_ms")


def table(head: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)


def pick(groups: dict, **point) -> list[dict]:
    """The runs of the grid point whose values include ``point`` (values compared as text)."""
    want = {k: str(v) for k, v in point.items()}
    found = []
    for k, rows in groups.items():
        p = json.loads(k)
        if all(str(p.get(name)) == v for name, v in want.items()):
            found += rows
    return found


def n_runs(rows: list[dict]) -> str:
    return str(len(rows)) if rows else "not run"


NO_GPU = "not run here (no GPU lent to this task)"


def row1(root: str) -> str:
    g = grouped(os.path.join(root, "non_dnn_share"))
    lines = []
    for size in ("small", "medium", "large"):
        for pre in ("cpu", "dali"):
            rs = pick(g, image_size=size, preprocess=pre)
            lines.append([SIZES[size], pre, "up to 56%" if size == "medium" else "-", n_runs(rs),
                          cell(rs, pct("non_dnn_share"), "{:.0f}%"), cell(rs, preprocessing_ms),
                          cell(rs, col("a_infer_ms"), "{:.0f}"), cell(rs, col("b_infer_ms"), "{:.0f}"),
                          cell(rs, col("e2e_p50_ms"), "{:.0f}"), NO_GPU])
    return table(["image size", "preprocess", "study", "runs", "here: non-DNN share", "here: preprocessing ms",
                  "detector infer ms", "classifier infer ms (a batch of 2)", "e2e p50 ms",
                  "GPU (`--set device=cuda`)"], lines)


SIZES = {"small": "small 320x240", "medium": "medium 1280x720", "large": "large 3840x2160"}


def row2(root: str) -> str:
    g = grouped(os.path.join(root, "pre_tput"))
    ref = pick(g, preprocess="pretensor")
    ref_fps = statistics.median([frames_per_s(r) for r in ref]) if ref else float("nan")
    lines = []
    for pre, label in (("cpu", "cpu (torchvision)"), ("dali", "dali (CPU decoder)"),
                       ("pretensor", "pretensor (no preprocessing)")):
        rs = pick(g, preprocess=pre)
        impact = "(reference)" if pre == "pretensor" else cell(rs, lambda r: 100 * (1 - frames_per_s(r) / ref_fps),
                                                               "{:.0f}%")
        limited = ", ".join(sorted({r.get("limited_by", "") for r in rs})) or "-"
        lines.append([label, "-" if pre == "pretensor" else "~80%", n_runs(rs), cell(rs, frames_per_s, "{:.2f}"),
                      impact, cell(rs, preprocessing_ms), cell(rs, col("a_infer_ms")), limited, NO_GPU])
    return table(["mode", "study", "runs", "here: frames/s out", "here: impact vs pretensor",
                  "preprocessing ms a frame", "detector infer ms", "limited_by", "GPU (`--set device=cuda`)"], lines)


GFLOPS = {"ssdlite": "ssdlite (0.58)", "fasterrcnn_resnet50": "fasterrcnn_resnet50 (~38)",
          "mobilenet_v3": "mobilenet_v3 (0.22)", "resnet152": "resnet152 (11.5)"}


def row3(root: str) -> str:
    g = grouped(os.path.join(root, "large_models"))
    lines = []
    for det in ("ssdlite", "fasterrcnn_resnet50"):
        for cls in ("mobilenet_v3", "resnet152"):
            for size in ("medium", "large"):
                rs = pick(g, detector=det, classifier=cls, image_size=size)
                big = det != "ssdlite" or cls != "mobilenet_v3"
                lines.append([GFLOPS[det], GFLOPS[cls], size, "16-49%" if big else "-", n_runs(rs),
                              cell(rs, pct("non_dnn_share"), "{:.0f}%"),
                              cell(rs, preprocessing_ms), cell(rs, col("a_infer_ms"), "{:.0f}"),
                              cell(rs, col("a_postprocess_ms"), "{:.0f}"), cell(rs, col("b_infer_ms"), "{:.0f}"),
                              cell(rs, col("e2e_p50_ms"), "{:.0f}")])
    return table(["detector (GFLOPs)", "classifier (GFLOPs a crop)", "image", "study", "runs",
                  "here: non-DNN share", "preprocessing ms", "detector infer ms", "detector postprocess ms",
                  "classifier infer ms (a batch of 2)", "e2e p50 ms"], lines)


def naive_bench(root: str) -> dict:
    """benchmarks/vision.py's table (``--write results/repro/vision-bench.md``): size -> (naive, pipelined,
    ratio) cells, as written."""
    path = os.path.join(root, "vision-bench.md")
    out = {}
    if not os.path.exists(path):
        return out
    with open(path) as fh:
        for line in fh:
            parts = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(parts) == 4 and parts[0] in ("small", "medium", "large") and parts[3].endswith("x"):
                out[parts[0]] = parts[1:]
    return out


def row4(root: str) -> str:
    g = grouped(os.path.join(root, "pipelined"))
    bench = naive_bench(root)
    lines = []
    for size in ("small", "medium"):
        rs = pick(g, image_size=size)
        limited = ", ".join(sorted({r.get("limited_by", "") for r in rs})) or "-"
        nv, pr, ratio = bench.get(size, ("not run", "not run", "not run"))
        lines.append([size, "2.25x", nv, pr, ratio, n_runs(rs), cell(rs, frames_per_s, "{:.2f}"),
                      cell(rs, stage_b_busy, "{:.2f}"), limited])
    return table(["image size", "study", "naive server frames/s (benchmark)", "pipelined frames/s (benchmark)",
                  "ratio (benchmark)", "sweep runs", "pipelined frames/s (sweep, 30 offered)",
                  "stage B busy (out / its capacity)", "limited_by"], lines)


STUDY_P99 = {("redis", 5.0): "38 ms", ("kafka", 5.0): "55 ms"}


def rows5(root: str) -> str:
    g = grouped(os.path.join(root, "brokers"))
    lines = []
    for broker in ("inproc", "zeromq", "redis", "rabbitmq", "kafka", "nats"):
        for rate in (1.0, 5.0):
            rs = pick(g, broker=broker, rate=rate)
            lines.append([broker, f"{rate:g} frame/s" if rate == 1 else f"{rate:g} frames/s",
                          STUDY_P99.get((broker, rate), "-"), n_runs(rs), cell(rs, col("e2e_p99_ms"), "{:.0f}"),
                          cell(rs, col("queue_p50_ms")), cell(rs, col("queue_p99_ms"), "{:.0f}"),
                          cell(rs, col("hop_p50_ms"), "{:.2f}"), cell(rs, col("hop_p99_ms")),
                          cell(rs, col("throughput_out"), "{:.2f}"), cell(rs, col("rho_measured"), "{:.2f}")])
    return table(["broker", "load", "study e2e p99", "runs", "here: e2e p99 ms", "queue p50 ms", "queue p99 ms",
                  "hop p50 ms", "hop p99 ms", "out msg/s", "stage B busy"], lines)


REPLICATED = {"redis": "primary + 2 replicas, Sentinel, WAIT 1", "kafka": "3 KRaft nodes, RF 3, min ISR 2"}


def rows5_replicated(root: str) -> str:
    """Row 5's loads with the study's pair replicated (``--broker-nodes 3``, at-least-once): its own sweep."""
    g = grouped(os.path.join(root, "brokers_replicated"))
    lines = []
    for broker in ("redis", "kafka"):
        for rate in (1.0, 5.0):
            rs = pick(g, broker=broker, rate=rate)
            lines.append([broker, REPLICATED[broker], f"{rate:g} frame/s" if rate == 1 else f"{rate:g} frames/s",
                          STUDY_P99.get((broker, rate), "-"), n_runs(rs), cell(rs, col("e2e_p99_ms"), "{:.0f}"),
                          cell(rs, col("queue_p50_ms")), cell(rs, col("queue_p99_ms"), "{:.0f}"),
                          cell(rs, col("hop_p50_ms"), "{:.2f}"), cell(rs, col("hop_p99_ms")),
                          cell(rs, col("throughput_out"), "{:.2f}"), cell(rs, col("rho_measured"), "{:.2f}")])
    return table(["broker", "cluster", "load", "study e2e p99", "runs", "here: e2e p99 ms", "queue p50 ms",
                  "queue p99 ms", "hop p50 ms", "hop p99 ms", "out msg/s", "stage B busy"], lines)


KNOBS = {
    "knobs_kafka": ("kafka", "linger.ms, fetch.wait.max.ms", "default (5, 500)",
                    [{"linger.ms": "0"}, {"linger.ms": "0", "fetch.wait.max.ms": "10"}]),
    "knobs_rabbitmq": ("rabbitmq", "prefetch", "default (100)", [{"prefetch": "4"}, {"prefetch": "1"}]),
    "knobs_redis": ("redis", "block_ms (XREADGROUP BLOCK)", "default (the receive timeout, up to 50 ms)",
                    [{"block_ms": "1"}]),
    "knobs_nats": ("nats", "storage, publish", "default (file, acked)",
                   [{"storage": "memory"}, {"publish": "async"}, {"storage": "memory", "publish": "async"}]),
}


def rows6(root: str) -> str:
    """Each knob's low-latency settings (their own sweep) beside the default (row 5's run of that broker)."""
    base = grouped(os.path.join(root, "brokers"))
    lines = []
    for folder, (broker, knob, default, settings) in KNOBS.items():
        g = grouped(os.path.join(root, folder))
        for setting in [None] + settings:
            label = default + ": brokers.yaml" if setting is None else ", ".join(f"{k} {v}" for k, v in setting.items())
            cells = []
            for rate in (1.0, 5.0):
                if setting is None:
                    rs = pick(base, broker=broker, rate=rate)
                else:
                    rs = [r for k, rows in g.items() for r in rows
                          if str(json.loads(k).get("rate")) == str(rate)
                          and {a: str(b) for a, b in (json.loads(k).get("broker_opt") or {}).items()} == setting]
                cells.append((n_runs(rs), cell(rs, col("e2e_p99_ms"), "{:.0f}"),
                              f"{cell(rs, col('hop_p50_ms'), '{:.2f}')} / {cell(rs, col('hop_p99_ms'))}",
                              cell(rs, col("rho_measured"), "{:.2f}")))
            lines.append([broker, knob, label, " / ".join(c[0] for c in cells), " / ".join(c[1] for c in cells),
                          " ; ".join(c[2] for c in cells), cells[1][3]])
    return table(["broker", "knob", "setting", "runs (1 / 5 frames/s)", "here: e2e p99 ms (1 / 5 frames/s)",
                  "hop p50 / p99 ms (1 frame/s ; 5 frames/s)", "stage B busy at 5 frames/s"], lines)


ROWS = {"row1": row1, "row2": row2, "row3": row3, "row4": row4, "row5": rows5, "row5_replicated": rows5_replicated,
        "row6": rows6}
TITLES = {"row1": "1. non-DNN share by size and backend", "row2": "2. throughput impact of preprocessing",
          "row3": "3. models above 10 GFLOPs", "row4": "4. pipelined against a naive server",
          "row5": "5. the broker between the two DNNs",
          "row5_replicated": "5. the broker between the two DNNs, Kafka and Redis replicated",
          "row6": "6. each broker's latency knob"}


def update(page: str, root: str) -> str:
    """``page`` with each ``<!-- table:rowN -->`` ... ``<!-- /table -->`` block replaced by rowN's table."""
    out, pos = [], 0
    while True:
        s = page.find("<!-- table:", pos)
        if s < 0:
            out.append(page[pos:])
            return "".join(out)
        head_end = page.index("-->", s) + 3
        name = page[s + len("<!-- table:"):head_end - 3].strip()
        e = page.index("<!-- /table -->", head_end)
        if name not in ROWS:
            raise KeyError(f"unknown table {name!r} in the page (known: {', '.join(ROWS)})")
        out += [page[pos:head_end], "\n\n", ROWS[name](root), "\n\n"]
        pos = e


def main(argv: list[str]) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="reproduction_tables", description=__doc__.split("\n\n")[0])
    ap.add_argument("root", nargs="?", default="results/repro", help="the parent of the rows' --out folders")
    ap.add_argument("--update", metavar="PAGE", help="rewrite PAGE's <!-- table:rowN --> blocks in place "
                                                     "(docs/reproduction.md) instead of printing")
    args = ap.parse_args(argv)
    if not os.path.isdir(args.root):
        print(f"reproduction_tables: error: {args.root!r} is not a folder (the parent of the rows' --out folders)",
              file=sys.stderr)
        return 2
    if args.update:
        try:
            with open(args.update, encoding="utf-8") as fh:
                page = fh.read()
            new = update(page, args.root)
        except (OSError, KeyError, ValueError) as exc:
            print(f"reproduction_tables: error: {args.update}: {exc}", file=sys.stderr)
            return 2
        tmp = args.update + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(new)
        os.replace(tmp, args.update)
        return 0
    for name, fn in ROWS.items():
        print(f"## {TITLES[name]}\n\n{fn(args.root)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
