"""Writing a run folder (summary.csv, timeseries.csv, messages.csv, run.json) and the human summary.

Files are written to a temporary name and renamed into place, so a folder never holds a half-written
file. Column names are fixed here; a column a run cannot fill is left empty, never dropped, so CSVs
from different runs line up.
"""
from __future__ import annotations

import csv
import json
import math
import os

import numpy as np

# The columns of summary.csv, in order (times in ms). Step columns (a_<step>_ms, b_<step>_ms) follow.
SUMMARY_COLUMNS = [
    "run_id", "complete", "broker", "broker_impl", "launcher", "pipeline", "machine", "arrival",
    "offered_rate", "producer_rate", "consumer_rate", "fanout", "fanout_mean", "replicas", "batch_max",
    "batch_wait_ms", "service_dist", "service_mode", "message_bytes", "duration_s", "warmup_s", "seed",
    "sent", "received", "lost", "duplicated", "reordered", "failed", "corrupt",
    "throughput_in", "throughput_out", "rho", "rho_a", "backlog_max", "backlog_growth",
    "stage_a_backlog_max", "stage_a_backlog_growth", "stable",
    "e2e_p50_ms", "e2e_p90_ms", "e2e_p99_ms", "e2e_p999_ms", "e2e_max_ms", "frame_p50_ms", "frame_p99_ms",
    "publish_delay_p50_ms", "publish_delay_p99_ms", "transit_p50_ms", "transit_p99_ms",
    "wait_p50_ms", "wait_p99_ms", "service_p50_ms", "service_p99_ms", "measured_messages", "error",
]


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, float) and math.isnan(v):
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return v


def _atomic(path: str, write) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        write(fh)
    os.replace(tmp, path)


def write_csv(path: str, rows: list[dict], columns: list[str] | None = None) -> None:
    if columns is None:
        columns = []
        for r in rows:
            columns.extend(k for k in r if k not in columns)

    def w(fh):
        wr = csv.writer(fh)
        wr.writerow(columns)
        for r in rows:
            wr.writerow([_cell(r.get(c)) for c in columns])
    _atomic(path, w)


def write_summary(path: str, row: dict) -> None:
    extra = [k for k in row if k not in SUMMARY_COLUMNS]
    write_csv(path, [row], SUMMARY_COLUMNS + extra)


def write_json(path: str, obj) -> None:
    _atomic(path, lambda fh: json.dump(obj, fh, indent=2, sort_keys=False, default=str))


def write_messages(path: str, messages: np.ndarray, first: np.ndarray, frames: np.ndarray,
                   lost_seqs: np.ndarray, t0: int) -> None:
    """One row per message: its timestamps (ns since the run's start) and its status.

    status is ``ok`` for a message's first completion, ``duplicate`` for any later one, and ``lost`` for a
    message sent and never finished (its consumer-side columns are empty).
    """
    step_cols = [n for n in messages.dtype.names if n[:2] in ("a_", "b_")]
    cols = ["seq", "frame_id", "index", "count", "replica", "batch", "intended_ns", "published_ns",
            "received_ns", "start_ns", "end_ns", "e2e_us", "status"] + [c + "_ns" for c in step_cols]
    status = np.full(len(messages), "duplicate", dtype=object)
    status[first] = "ok"
    order = np.argsort(messages["seq"], kind="stable")

    def w(fh):
        wr = csv.writer(fh)
        wr.writerow(cols)
        for i in order.tolist():
            r = messages[i]
            row = [int(r["seq"]), int(r["frame_id"]), int(r["index"]), int(r["count"]), int(r["replica"]),
                   int(r["batch"]), int(r["intended"]) - t0, int(r["published"]) - t0, int(r["received"]) - t0,
                   int(r["start"]) - t0, int(r["end"]) - t0, round((int(r["end"]) - int(r["intended"])) / 1e3, 3),
                   status[i]] + [int(r[c]) for c in step_cols]
            wr.writerow(row)
        if len(lost_seqs):
            f_first = frames["first_seq"].astype(np.int64)
            fi = np.searchsorted(f_first, lost_seqs, side="right") - 1
            for s, k in zip(lost_seqs.tolist(), fi.tolist()):
                fr = frames[k]
                wr.writerow([s, int(fr["frame_id"]), s - int(fr["first_seq"]), int(fr["n"]), "", "",
                             int(fr["intended"]) - t0, "", "", "", "", "", "lost"] + [""] * len(step_cols))
    _atomic(path, w)


def _ms(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f} ms"


def human(row: dict, run_dir: str) -> str:
    state = "complete" if row.get("complete") else "INCOMPLETE"
    verdict = "stable" if row.get("stable") else "NOT stable (backlog grows)"
    lines = [
        f"run {row['run_id']}: {row['broker']} ({row.get('broker_impl', '')}), {row['duration_s']:g} s, {state}",
        f"  offered {row['offered_rate']:g} frames/s x {row['fanout_mean']:g} msgs/frame; "
        f"rate in {row['throughput_in']:.1f} msg/s, out {row['throughput_out']:.1f} msg/s; rho {row['rho']:.2f}",
        f"  backlog max {row['backlog_max']}, growth {row['backlog_growth']:+.1f} msg/s "
        f"(stage A: {row['stage_a_backlog_growth']:+.1f} frames/s): {verdict}",
        f"  e2e p50 {_ms(row['e2e_p50_ms'])}, p99 {_ms(row['e2e_p99_ms'])}, max {_ms(row['e2e_max_ms'])}; "
        f"frame p99 {_ms(row['frame_p99_ms'])}",
        f"  sent {row['sent']}, received {row['received']}, lost {row['lost']}, "
        f"duplicated {row['duplicated']}, reordered {row['reordered']}, failed frames {row['failed']}",
    ]
    lines += step_table(row)
    if row.get("error"):
        lines.append(f"  error: {row['error']}")
    lines.append(f"  results: {run_dir}")
    return "\n".join(lines)


def step_table(row: dict) -> list[str]:
    """Where a message's time goes, for pipelines that time their steps (vision): p50 of each step.

    Stage A steps are per frame (a message carries its frame's), stage B steps per batch; publish,
    transit and wait are the harness's own measurements. Empty for pipelines without steps.
    """
    def val(v):
        return math.nan if v in (None, "") else float(v)

    a = [(k[2:-3], row[k]) for k in row if k.startswith("a_") and k.endswith("_ms")]
    b = [(k[2:-3], row[k]) for k in row if k.startswith("b_") and k.endswith("_ms")]
    if not a and not b:
        return []
    e2e = val(row.get("e2e_p50_ms"))
    rows = [("A", n, v) for n, v in a] + [("broker", "transit", row.get("transit_p50_ms")),
                                          ("B", "batch wait", row.get("wait_p50_ms"))] + [("B", n, v) for n, v in b]
    out = ["  per-step p50 (stage A per frame, stage B per batch):", "    stage   step          ms       % of e2e p50"]
    for stage, name, v in rows:
        v = val(v)
        pct = "" if math.isnan(v) or not e2e > 0 else f"{100 * v / e2e:6.1f}%"
        out.append(f"    {stage:<7s} {name:<12s} {'-' if math.isnan(v) else f'{v:9.3f}':>9s}  {pct}")
    share = val(row.get("non_dnn_share"))
    out.append(f"    e2e p50 {_ms(e2e)}; non-DNN share {'-' if math.isnan(share) else f'{share:.2f}'}")
    return out