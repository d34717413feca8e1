"""Writing a run folder (summary.csv, timeseries.csv, messages.csv, run.json) and the human summary.

Files are written to a temporary name and renamed into place, so a folder never holds a half-written
file. The summary's columns are fixed in testbed/analysis/columns.py; a column a run cannot fill is
left empty, never dropped, so CSVs from different runs line up.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import threading

import numpy as np

from testbed.analysis import columns

# The columns of summary.csv, in order (testbed/analysis/columns.py defines them). Step columns
# (a_<step>_ms, b_<step>_ms) and the vision columns follow.
SUMMARY_COLUMNS = columns.names()


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, float) and math.isnan(v):
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return v


@contextlib.contextmanager
def atomic_write(path: str, binary: bool = False):
    """Open a file for writing that appears at ``path`` whole or not at all.

    Writes go to a temporary file beside ``path`` (same file system, so the rename is atomic), which
    replaces ``path`` when the ``with`` block ends without an error; on an error it is removed and
    ``path`` is left as it was. Text mode is UTF-8 with ``newline=""`` (what the csv module wants).
    """
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    fh = open(tmp, "wb") if binary else open(tmp, "w", newline="", encoding="utf-8")
    try:
        with fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


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
    with atomic_write(path) as fh:
        w(fh)


def write_summary(path: str, row: dict) -> None:
    extra = [k for k in row if k not in SUMMARY_COLUMNS]
    write_csv(path, [row], SUMMARY_COLUMNS + extra)


def write_json(path: str, obj) -> None:
    with atomic_write(path) as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=str)


def write_messages(path: str, messages: np.ndarray, first: np.ndarray, frames: np.ndarray,
                   lost_seqs: np.ndarray, t0: int, streams: int = 1) -> None:
    """One row per message: its timestamps (ns since the run's start), its status and its costs.

    status is ``ok`` for a message's first completion, ``duplicate`` for any later one, and ``lost`` for a
    message sent and never finished (its consumer-side columns are empty). ``free_ns`` is a timestamp
    like the others; ``recv_call_ns``, ``ack_call_ns``, ``b_harness_ns`` (its batch's, whole batch),
    ``publish_call_ns`` and ``a_harness_ns`` (its frame's, whole frame) are durations in ns
    (testbed/harness/records.py defines them). ``stream`` is the camera stream (a frame is (stream,
    frame_id)). Step columns (durations, ns) follow.
    """
    from testbed.harness.records import MESSAGE_FIELDS, frame_of
    fixed = {n for n, _ in MESSAGE_FIELDS}
    step_cols = [n for n in messages.dtype.names if n not in fixed and n[:2] in ("a_", "b_")]
    stamps = ["intended", "published", "received", "start", "end"]
    cost_cols = ["recv_call", "ack_call", "b_harness", "publish_call"]
    cols = (["seq", "stream", "frame_id", "index", "count", "replica", "batch"] + [c + "_ns" for c in stamps]
            + ["e2e_us", "status", "free_ns"] + [c + "_ns" for c in cost_cols] + ["a_harness_ns"]
            + [c + "_ns" for c in step_cols])
    status = np.full(len(messages), "duplicate", dtype=object)
    status[first] = "ok"
    order = np.argsort(messages["seq"], kind="stable")
    m = messages[order]
    def frame_harness(seqs):
        if not len(frames):
            return [""] * len(seqs)
        at = frame_of(frames, seqs, streams)
        return np.where(at >= 0, frames["a_harness"][np.maximum(at, 0)], 0).tolist()

    def w(fh):
        wr = csv.writer(fh)
        wr.writerow(cols)
        ints = [m[c].tolist() for c in ("seq", "stream", "frame_id", "index", "count", "replica", "batch")]
        rel = [(m[c].astype(np.int64) - t0).tolist() for c in stamps + ["free"]]
        e2e = np.round((m["end"].astype(np.int64) - m["intended"].astype(np.int64)) / 1e3, 3).tolist()
        costs = [m[c].tolist() for c in cost_cols] + [frame_harness(m["seq"])]
        steps = [m[c].tolist() for c in step_cols]
        st = status[order].tolist()
        for k in range(len(m)):
            wr.writerow([c[k] for c in ints] + [c[k] for c in rel[:5]] + [e2e[k], st[k], rel[5][k]]
                        + [c[k] for c in costs] + [c[k] for c in steps])
        if len(lost_seqs):
            fi = frame_of(frames, lost_seqs, streams)
            for s, k in zip(lost_seqs.tolist(), fi.tolist()):
                if k < 0:
                    continue
                fr = frames[k]
                wr.writerow([s, int(fr["stream"]), int(fr["frame_id"]), (s - int(fr["first_seq"])) // streams,
                             int(fr["n"]), "", "",
                             int(fr["intended"]) - t0, "", "", "", "", "", "lost", "", "", "", "", "",
                             int(fr["a_harness"])] + [""] * len(step_cols))
    with atomic_write(path) as fh:
        w(fh)


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
    lines += load_lines(row)
    lines += hosts_lines(row, run_dir)
    lines += cost_lines(row)
    lines += step_table(row)
    if row.get("error"):
        lines.append(f"  error: {row['error']}")
    lines.append(f"  results: {run_dir}")
    return "\n".join(lines)


def load_lines(row: dict) -> list[str]:
    """What kind of load the run had, where it is not one open-loop stream."""
    arrival, v = str(row.get("arrival", "")), _num(row.get("streams"))
    streams = int(v) if v == v else 1
    out = []
    if arrival.startswith("closed:"):
        k = arrival.partition(":")[2]
        out.append(f"  closed loop: {k} frames in flight per stream (a frame starts when one of its stream's "
                   "finishes; offered = frames released); latency from each frame's release: no "
                   "coordinated-omission correction applies")
    if streams > 1:
        out.append(f"  {streams} camera streams (stage A workers), each its own schedule, frames and seed")
    return out


def hosts_lines(row: dict, run_dir: str) -> list[str]:
    """A run over hosts: where its parts ran, its clocks' uncertainty (and whether it is above 1% of the
    e2e p50), and any latency below zero beyond it (run.json's hosts.negative_latencies)."""
    unc = _num(row.get("clock_uncertainty_us"))
    if math.isnan(unc):
        return []
    out = [f"  hosts: {row.get('hosts') or 'nothing placed'}; clock uncertainty +-{unc:g} us"]
    p50 = _num(row.get("e2e_p50_ms"))
    if p50 == p50 and unc > 0.01 * p50 * 1000:
        out.append(f"  clock uncertainty {unc:g} us is more than 1% of the e2e p50 ({p50:.3f} ms): cross-host "
                   "latencies are known only that closely")
    try:
        with open(os.path.join(run_dir, "run.json")) as fh:
            neg = (json.load(fh).get("hosts") or {}).get("negative_latencies") or {}
    except (OSError, ValueError):
        neg = {}
    for name, v in neg.items():
        if v.get("count"):
            out.append(f"  {v['count']} {name} latencies below zero beyond the clocks' uncertainty (worst "
                       f"{v['worst_us']:g} us): reported, not clamped")
    return out


def _num(v) -> float:
    try:
        return math.nan if v in (None, "") else float(v)
    except (TypeError, ValueError):
        return math.nan


def _us(v) -> str:
    v = _num(v)
    return "-" if math.isnan(v) else f"{v:.1f}"


def cost_lines(row: dict) -> list[str]:
    """Broker client calls and our bookkeeping per message (p50, us); measured capacity; queue vs hop."""
    if "b_harness_p50_us" not in row:
        return []
    cap, rho_m = _num(row.get("capacity_measured")), _num(row.get("rho_measured"))

    def pair(k):
        p50, p99 = _num(row.get(f"{k}_p50_ms")), _num(row.get(f"{k}_p99_ms"))
        return "-" if math.isnan(p50) else f"{p50:.3f}/{p99:.3f} ms"
    return [
        f"  per message p50 (us): A publish call {_us(row.get('publish_call_p50_us'))}, "
        f"A bookkeeping {_us(row.get('a_harness_p50_us'))}; B receive call {_us(row.get('recv_call_p50_us'))}, "
        f"ack call {_us(row.get('ack_call_p50_us'))}, bookkeeping {_us(row.get('b_harness_p50_us'))}",
        f"  stage B capacity measured {'-' if math.isnan(cap) else f'{cap:.1f}'} msg/s "
        f"(rho {_num(row.get('rho')):.2f}, measured {'-' if math.isnan(rho_m) else f'{rho_m:.3f}'}); "
        f"p50/p99 queued for B {pair('queue')}, broker hop {pair('hop')}; limited by {row.get('limited_by') or '-'}",
    ]


def step_table(row: dict) -> list[str]:
    """Where a message's time goes, for pipelines that time their steps (vision): p50 of each step.

    Stage A steps are per frame (a message carries its frame's), stage B steps per batch; publish,
    queue (waiting for stage B), broker hop and wait are the harness's own measurements (transit as one
    row for summaries without the split). Empty for pipelines without steps.
    """
    def val(v):
        return math.nan if v in (None, "") else float(v)

    a = [(k[2:-3], row[k]) for k in row if k.startswith("a_") and k.endswith("_ms")]
    b = [(k[2:-3], row[k]) for k in row if k.startswith("b_") and k.endswith("_ms")]
    if not a and not b:
        return []
    e2e = val(row.get("e2e_p50_ms"))
    if "queue_p50_ms" in row:
        mid = [("broker", "queued for stage B", row.get("queue_p50_ms")),
               ("broker", "broker hop", row.get("hop_p50_ms"))]
    else:
        mid = [("broker", "transit", row.get("transit_p50_ms"))]
    rows = ([("A", n, v) for n, v in a] + mid + [("B", "batch wait", row.get("wait_p50_ms"))]
            + [("B", n, v) for n, v in b])
    out = ["  per-step p50 (stage A per frame, stage B per batch):",
           "    stage   step                      ms  % of e2e p50"]
    for stage, name, v in rows:
        v = val(v)
        pct = "" if math.isnan(v) or not e2e > 0 else f"{100 * v / e2e:6.1f}%"
        out.append(f"    {stage:<7s} {name:<18s} {'-' if math.isnan(v) else f'{v:9.3f}':>9s}  {pct}")
    share = val(row.get("non_dnn_share"))
    out.append(f"    e2e p50 {_ms(e2e)}; non-DNN share {'-' if math.isnan(share) else f'{share:.2f}'}")
    return out