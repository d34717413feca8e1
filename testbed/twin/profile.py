"""A pipeline's profile: what each part of a run costs, as empirical distributions, from run folders.

From each run folder (run.json, messages.csv; messages whose frame was due after the warm-up):

    broker entry (one per run, keyed by broker, message size and load level)
        hop       received - published of messages that found their replica waiting (the broker's own
                  crossing, client calls included)
        recv      received - free of batches whose first message was already waiting (the receive call
                  that finds work queued)
        a_gap     published - the previous message's published, within a frame (a publish call plus
                  the next envelope)
        a_post    the publish call of a frame's last message (stage A is busy until it returns)
        a_over    synthetic stage A: time from the frame's start to its first publish minus the service
                  time the stage drew (the sleep's overshoot and the first envelope)
        b_pre     per batch size: start - the batch's last received (decoding)
        b_post    per batch size: the replica's next free - end (ack call and bookkeeping)
        b_over    synthetic stage B: a batch's measured service minus the sum of its messages' draws
    stage entry (vision runs, stage tables, Triton perf_analyzer CSVs)
        stage A   time from the frame's start to its first publish, and the fan-out it gave
        stage B   service per batch size

A profile records every source (run folder, run id, machine, broker implementation) and refuses runs
from different machines unless told to mix them (``allow_mixed``), which it then records.
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field

import numpy as np
import yaml

from testbed.errors import ConfigError
from testbed.load.distributions import Fanout, rng_for, service_sampler
from testbed.twin.dists import Dist

VERSION = 1
MIN_BATCHES = 5  # a batch size needs this many batches to get its own cost distributions

INT_COLUMNS = ("seq", "frame_id", "index", "count", "replica", "batch", "intended_ns", "published_ns",
               "received_ns", "start_ns", "end_ns", "free_ns", "recv_call_ns", "ack_call_ns", "b_harness_ns",
               "publish_call_ns", "a_harness_ns")


# -- reading a run folder ---------------------------------------------------------------------------

def read_run(path: str) -> tuple[dict, dict]:
    """(run.json, messages.csv as int arrays plus ``status``) of a run folder; ConfigError naming what is
    missing."""
    meta_path, msg_path = os.path.join(path, "run.json"), os.path.join(path, "messages.csv")
    if not os.path.isdir(path):
        raise ConfigError(f"run folder {path!r} does not exist")
    if not os.path.isfile(meta_path):
        raise ConfigError(f"{path!r} is not a run folder: it has no run.json")
    if not os.path.isfile(msg_path):
        raise ConfigError(f"run {path!r} has no messages.csv (was it run with --no-trace?): the twin needs "
                          "one row per message")
    try:
        with open(meta_path, encoding="utf-8") as fh:
            meta = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{meta_path!r} cannot be read: {exc}") from None
    with open(msg_path, newline="", encoding="utf-8") as fh:
        rd = csv.reader(fh)
        try:
            head = next(rd)
        except StopIteration:
            raise ConfigError(f"{msg_path!r} is empty") from None
        rows = list(rd)
    missing = [c for c in ("free_ns", "recv_call_ns", "publish_call_ns") if c not in head]
    if missing:
        raise ConfigError(f"{msg_path!r} lacks {', '.join(missing)}: it was written before the testbed "
                          "measured client calls; run it again")
    cols = {}
    for j, col in enumerate(head):
        if col in INT_COLUMNS:
            cols[col] = np.array([int(r[j]) if r[j] != "" else -1 for r in rows], dtype=np.int64)
        elif col == "status":
            cols[col] = np.array([r[j] for r in rows], dtype=object)
    return meta, cols


def run_machine(meta: dict) -> dict:
    env = meta.get("environment") or {}
    return {"machine": env.get("machine", ""), "cpu_count": env.get("cpu_count"), "platform": env.get("platform", "")}


def machine_key(m: dict) -> str:
    return f"{m.get('machine') or '?'} ({m.get('cpu_count') or '?'} CPUs)"


# -- what one run measured ----------------------------------------------------------------------------

def _frames(m: dict, warm: int):
    """Per frame with messages (sorted by frame): first/last published, the last publish call, intended,
    count, and the in-frame gaps between publishes (all frames after the warm-up)."""
    order = np.lexsort((m["index"], m["frame_id"]))
    fid = m["frame_id"][order]
    first = np.flatnonzero(np.r_[True, fid[1:] != fid[:-1]])
    last = np.r_[first[1:] - 1, len(fid) - 1]
    pub = m["published_ns"][order]
    call = m["publish_call_ns"][order].clip(0)
    same = np.r_[False, fid[1:] == fid[:-1]]
    gaps = np.diff(pub, prepend=pub[:1])[same]
    gap_fid = fid[same]
    return {
        "fid": fid[first], "first_pub": pub[first], "last_pub": np.maximum.reduceat(pub, first),
        "last_call": call[last], "intended": m["intended_ns"][order][first], "count": m["count"][order][first],
        "gaps": gaps[m["intended_ns"][order][same] >= warm], "gap_fid": gap_fid,
    }


def _batches(m: dict):
    """Per batch (replica, start): its members' indices into ``m``, in replica then start order."""
    order = np.lexsort((m["seq"], m["start_ns"], m["replica"]))
    rep, st = m["replica"][order], m["start_ns"][order]
    first = np.flatnonzero(np.r_[True, (rep[1:] != rep[:-1]) | (st[1:] != st[:-1])])
    return order, first


def measure(path: str) -> tuple[dict, dict, dict]:
    """(source record, broker entry, stage entries) of one run folder."""
    meta, cols = read_run(path)
    cfg = meta.get("config") or {}
    broker = (meta.get("broker") or {}).get("name") or cfg.get("broker", "")
    status = cols.get("status")
    if status is None:
        raise ConfigError(f"{path!r}: messages.csv has no status column")
    done = (status == "ok") | (status == "duplicate")
    m_all = {k: v[done] for k, v in cols.items() if k != "status"}
    ok_mask = (status[done] == "ok")
    warm = int(float(cfg.get("warmup", 0)) * 1e9)
    m = {k: v[ok_mask] for k, v in m_all.items()}
    n_ok = len(m["seq"])
    if n_ok == 0:
        raise ConfigError(f"run {path!r} finished no message: nothing to profile")
    measured = m["intended_ns"] >= warm
    if not measured.any():
        raise ConfigError(f"run {path!r} has no message due after its warm-up: nothing to profile")
    synthetic = cfg.get("pipeline", "synthetic") == "synthetic"
    seed = int(cfg.get("seed", 1))

    # stage A, per frame
    fr = _frames(m, warm)
    done_at = fr["last_pub"] + fr["last_call"]
    prev_ok = np.r_[False, fr["fid"][1:] == fr["fid"][:-1] + 1]
    f_start = np.maximum(fr["intended"], np.r_[np.iinfo(np.int64).min, done_at[:-1]])
    pre = fr["first_pub"] - f_start
    keep = (prev_ok | (fr["fid"] == 0)) & (fr["intended"] >= warm)
    a_over = None
    a_pre_samples = pre[keep]
    if synthetic:
        nf = int(fr["fid"].max()) + 1
        draw = service_sampler(cfg.get("service_dist", "fixed"), float(cfg.get("producer_rate", math.inf)),
                               rng_for(seed, "service-a"))
        draws = np.array([draw() for _ in range(nf)], dtype=np.int64)
        a_over = Dist.of(pre[keep] - draws[fr["fid"][keep]])
    # stage B, per batch
    order, first = _batches(m_all)
    k = np.diff(np.r_[first, len(order)])
    rep = m_all["replica"][order][first]
    start = m_all["start_ns"][order][first]
    end = m_all["end_ns"][order][first]
    free = m_all["free_ns"][order][first]
    last_recv = np.maximum.reduceat(m_all["received_ns"][order], first)
    first_recv = np.minimum.reduceat(m_all["received_ns"][order], first)
    earliest_pub = np.minimum.reduceat(m_all["published_ns"][order], first)
    intended_b = np.minimum.reduceat(m_all["intended_ns"][order], first)
    same_next = np.r_[rep[1:] == rep[:-1], False]
    next_free = np.r_[free[1:], 0]
    post = np.where(same_next, next_free - end, -1)
    service = end - start
    b_pre_all = start - last_recv
    in_window = intended_b >= warm
    waiting = earliest_pub < free  # the batch's first message was queued when the replica came free
    recv = (first_recv - free)[waiting & in_window]
    b_over = None
    if synthetic:
        c = int(cfg.get("replicas", 1))
        over = []
        for r in range(c):
            mine = np.flatnonzero(rep == r)
            if not len(mine):
                continue
            total = int(k[mine].sum())
            draw = service_sampler(cfg.get("service_dist", "fixed"), float(cfg.get("consumer_rate", math.inf)),
                                   rng_for(seed, f"service-b-{r}"))
            d = np.array([draw() for _ in range(total)], dtype=np.int64)
            pos = np.r_[0, np.cumsum(k[mine])[:-1]]
            sums = np.add.reduceat(d, pos) if total else np.zeros(0, dtype=np.int64)
            over.append((service[mine] - sums)[in_window[mine]])
        b_over = Dist.of(np.concatenate(over)) if over else None
    by_k = {}
    for size in np.unique(k):
        sel = (k == size) & in_window
        if sel.sum() < MIN_BATCHES:
            continue
        p = post[sel]
        by_k[int(size)] = {"pre": Dist.of(b_pre_all[sel]), "post": Dist.of(p[p >= 0]),
                           "service": Dist.of(service[sel])}
    pub = m["published_ns"][measured]
    free_msg = m["free_ns"][measured]
    idle = pub >= free_msg
    hop = (m["received_ns"][measured] - pub)[idle]

    offered = float(cfg.get("rate", 0)) * Fanout.parse(cfg.get("fanout", "1")).mean
    machine = run_machine(meta)
    source = {"path": os.path.abspath(path), "run_id": meta.get("run_id", os.path.basename(path)),
              "complete": bool(meta.get("complete", True)), "broker": broker,
              "broker_impl": (meta.get("broker") or {}).get("impl", ""),
              "launcher": (meta.get("broker") or {}).get("launcher", ""),
              "options": (meta.get("broker") or {}).get("options", {}), "pipeline": cfg.get("pipeline", "synthetic"),
              "machine": machine, "messages": int(measured.sum()), "config": cfg}
    entry = {
        "run_id": source["run_id"], "broker": broker, "impl": source["broker_impl"],
        "impl_name": cfg.get("broker_impl", ""), "options": source["options"],
        "pipeline": source["pipeline"], "message_bytes": int(cfg.get("message_bytes", 0)),
        "msg_rate": round(offered, 3), "replicas": int(cfg.get("replicas", 1)),
        "batch_max": int(cfg.get("batch_max", 1)), "batch_wait_ms": float(cfg.get("batch_wait_ms", 0.0)),
        "service_mode": cfg.get("service_mode", "sleep"),
        "hop": Dist.of(hop), "recv": Dist.of(recv), "a_gap": Dist.of(fr["gaps"]),
        "a_post": Dist.of(fr["last_call"][fr["intended"] >= warm]), "a_over": a_over, "b_over": b_over,
        "b_pre": {s: v["pre"] for s, v in by_k.items()}, "b_post": {s: v["post"] for s, v in by_k.items()},
    }
    stages = {}
    if not synthetic:
        counts = fr["count"][fr["intended"] >= warm]
        sizes, freq = np.unique(counts, return_counts=True)
        stages["a"] = {stage_key(cfg, "a"): {"source": source["run_id"], "pre": Dist.of(a_pre_samples),
                                             "fanout": {int(s): int(f) for s, f in zip(sizes, freq)}}}
        stages["b"] = {stage_key(cfg, "b"): {"source": source["run_id"],
                                             "service": {s: v["service"] for s, v in by_k.items()}}}
    return source, entry, stages


def stage_key(cfg: dict, which: str) -> str:
    """The name a measured stage is profiled under: its pipeline and what shapes its service time."""
    if cfg.get("pipeline", "synthetic") == "synthetic":
        return "synthetic"
    if which == "a":
        return "/".join(str(cfg.get(k, "")) for k in ("pipeline", "detector", "preprocess", "image_size", "device"))
    return "/".join(str(cfg.get(k, "")) for k in ("pipeline", "classifier", "device"))


# -- stage tables ------------------------------------------------------------------------------------

PCT_KEYS = {"min": 0.0, "p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99, "p999": 0.999, "max": 1.0}
UNITS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


def read_stage_table(path: str) -> tuple[str, str, dict]:
    """A YAML stage table: (stage "a" or "b", name, {batch size: Dist}).

        stage: b                 # a or b (default b)
        name: resnet50-h200      # what --stage-b picks (default: the file name)
        unit: ms                 # ns, us, ms, s (default ms)
        batches:
          1: {p50: 4.1, p90: 4.5, p99: 5.2}
          8: {p50: 9.0, p99: 11.0}
    """
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"stage table {path!r} cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"stage table {path!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("batches"), dict) or not data["batches"]:
        raise ConfigError(f"stage table {path!r} needs a 'batches' mapping: batch size -> {{p50: ..., p99: ...}}")
    stage = str(data.get("stage", "b")).lower()
    if stage not in ("a", "b"):
        raise ConfigError(f"stage table {path!r}: stage {stage!r} is not allowed: use a or b")
    unit = str(data.get("unit", "ms"))
    if unit not in UNITS:
        raise ConfigError(f"stage table {path!r}: unit {unit!r} is not allowed: use one of {', '.join(UNITS)}")
    name = str(data.get("name") or os.path.splitext(os.path.basename(path))[0])
    out = {}
    for size, pcts in data["batches"].items():
        try:
            k = int(size)
            if k < 1:
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigError(f"stage table {path!r}: batch size {size!r} is not a whole number >= 1") from None
        if not isinstance(pcts, dict) or not pcts:
            raise ConfigError(f"stage table {path!r}: batch {size} needs percentiles such as {{p50: 4.1, p99: 5.2}}")
        pts = {}
        for key, v in pcts.items():
            if key not in PCT_KEYS:
                raise ConfigError(f"stage table {path!r}: batch {size}: {key!r} is not allowed: use "
                                  + ", ".join(PCT_KEYS))
            try:
                x = float(v)
            except (TypeError, ValueError):
                raise ConfigError(f"stage table {path!r}: batch {size} {key} = {v!r} is not a number") from None
            if not x >= 0:
                raise ConfigError(f"stage table {path!r}: batch {size} {key} = {v!r} must be >= 0")
            pts[PCT_KEYS[key]] = x * UNITS[unit]
        out[k] = Dist.from_percentiles(pts)
    return stage, name, out


def read_perf_analyzer(spec: str) -> tuple[str, dict]:
    """A Triton perf_analyzer CSV (``-f FILE``) as stage B service: ``PATH[:batch=N][:name=NAME]``.

    The row of the lowest concurrency is used (no queueing in the server), its client p50/p90/p95/p99
    latencies (us) as the service time of a batch of N (``Batch`` column if the file has one, else
    ``batch=N``, default 1). Returns (name, {batch: Dist}).
    """
    parts = spec.split(":")
    path, opts = parts[0], {}
    for p in parts[1:]:
        k, _, v = p.partition("=")
        opts[k] = v
    bad = set(opts) - {"batch", "name"}
    if bad:
        raise ConfigError(f"--perf-analyzer {spec!r}: {', '.join(sorted(bad))} is not allowed: use "
                          "PATH[:batch=N][:name=NAME]")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise ConfigError(f"perf_analyzer CSV {path!r} cannot be read: {exc.strerror}") from None
    need = ("p50 latency", "p99 latency")
    if not rows or any(k not in rows[0] for k in need):
        raise ConfigError(f"perf_analyzer CSV {path!r} has no 'p50 latency' and 'p99 latency' columns "
                          "(write it with perf_analyzer -f FILE)")

    def conc(r):
        try:
            return float(r.get("Concurrency") or r.get("Request Rate") or 0)
        except ValueError:
            return 0.0
    out: dict = {}
    for r in sorted(rows, key=conc):
        try:
            k = int(r["Batch"]) if r.get("Batch") else int(opts.get("batch", 1))
        except ValueError:
            raise ConfigError(f"--perf-analyzer {spec!r}: batch {opts.get('batch') or r.get('Batch')!r} "
                              "is not a whole number") from None
        if k < 1:
            raise ConfigError(f"--perf-analyzer {spec!r}: batch {k} must be >= 1")
        if k in out:
            continue
        pts = {}
        for col, p in (("p50 latency", .5), ("p90 latency", .9), ("p95 latency", .95), ("p99 latency", .99)):
            if r.get(col):
                try:
                    pts[p] = float(r[col]) * 1e3
                except ValueError:
                    raise ConfigError(f"perf_analyzer CSV {path!r}: {col} {r[col]!r} is not a number") from None
        out[k] = Dist.from_percentiles(pts)
    name = opts.get("name") or os.path.splitext(os.path.basename(path))[0]
    return name, out


# -- the profile ---------------------------------------------------------------------------------------

def _dist_map(d: dict) -> dict:
    return {str(k): v.to_json() for k, v in d.items() if v is not None}


def _entry_json(e: dict) -> dict:
    out = {}
    for k, v in e.items():
        if isinstance(v, Dist):
            out[k] = v.to_json()
        elif k in ("b_pre", "b_post"):
            out[k] = _dist_map(v)
        else:
            out[k] = v
    return out


def _entry_from(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if k in ("hop", "recv", "a_gap", "a_post", "a_over", "b_over"):
            out[k] = Dist.from_json(v) if v else None
        elif k in ("b_pre", "b_post"):
            out[k] = {int(s): Dist.from_json(x) for s, x in v.items()}
        else:
            out[k] = v
    return out


@dataclass
class Profile:
    machines: list = field(default_factory=list)
    sources: list = field(default_factory=list)
    brokers: dict = field(default_factory=dict)      # name -> [entry]
    stages_a: dict = field(default_factory=dict)     # key -> {"source", "pre": Dist, "fanout": {n: count}}
    stages_b: dict = field(default_factory=dict)     # key -> {"source", "service": {k: Dist}}
    mixed_machines: bool = False

    def to_json(self) -> dict:
        return {
            "version": VERSION, "made_by": "python -m testbed.profile", "machines": self.machines,
            "mixed_machines": self.mixed_machines, "sources": self.sources,
            "brokers": {n: [_entry_json(e) for e in es] for n, es in self.brokers.items()},
            "stages": {
                "a": {k: {"source": v["source"], "pre": v["pre"].to_json(), "fanout": {str(n): c for n, c in v["fanout"].items()}}
                      for k, v in self.stages_a.items()},
                "b": {k: {"source": v["source"], "service": _dist_map(v["service"])} for k, v in self.stages_b.items()},
            },
        }

    @classmethod
    def from_json(cls, d: dict) -> "Profile":
        if d.get("version") != VERSION:
            raise ConfigError(f"profile version {d.get('version')!r} is not {VERSION}: make it again with "
                              "python -m testbed.profile")
        st = d.get("stages", {})
        return cls(
            machines=d.get("machines", []), sources=d.get("sources", []),
            brokers={n: [_entry_from(e) for e in es] for n, es in d.get("brokers", {}).items()},
            stages_a={k: {"source": v["source"], "pre": Dist.from_json(v["pre"]),
                          "fanout": {int(n): int(c) for n, c in v["fanout"].items()}} for k, v in st.get("a", {}).items()},
            stages_b={k: {"source": v["source"], "service": {int(s): Dist.from_json(x) for s, x in v["service"].items()}}
                      for k, v in st.get("b", {}).items()},
            mixed_machines=bool(d.get("mixed_machines", False)))

    @property
    def machine(self) -> str:
        return ", ".join(machine_key(m) for m in self.machines) or "?"


def run_folders(paths) -> list[str]:
    """Run folders under each path (a run folder itself, or a sweep folder holding run folders; folders
    whose name starts with ``_``, a sweep's failed runs and broker logs, are left out)."""
    out = []
    for p in paths:
        if os.path.isfile(os.path.join(p, "run.json")):
            out.append(p)
            continue
        if not os.path.isdir(p):
            raise ConfigError(f"{p!r} is neither a run folder nor a folder of runs")
        found = sorted(dp for dp, _, files in os.walk(p) if "run.json" in files
                       and not any(part.startswith("_") for part in os.path.relpath(dp, p).split(os.sep)))
        if not found:
            raise ConfigError(f"{p!r} holds no run folder (no run.json under it)")
        out.extend(found)
    return out


def build(paths, stage_tables=(), perf_csvs=(), allow_mixed: bool = False, log=None) -> Profile:
    """A profile from run folders (or folders of them), stage tables and perf_analyzer CSVs."""
    prof = Profile()
    folders = run_folders(paths) if paths else []
    machines: dict = {}
    for f in folders:
        try:
            source, entry, stages = measure(f)
        except ConfigError as exc:
            if log:
                log(f"skipped {f}: {exc}")
            continue
        if not source["complete"]:
            if log:
                log(f"skipped {f}: the run did not complete")
            continue
        machines.setdefault(machine_key(source["machine"]), source["machine"])
        prof.sources.append({k: v for k, v in source.items() if k != "config"}
                            | {"config": {k: source["config"].get(k) for k in PROFILE_CONFIG_KEYS}})
        prof.brokers.setdefault(entry["broker"], []).append(entry)
        for key, st in stages.get("a", {}).items():
            prof.stages_a[key] = st
        for key, st in stages.get("b", {}).items():
            have = prof.stages_b.setdefault(key, {"source": st["source"], "service": {}})
            for k, dist in st["service"].items():
                if k not in have["service"] or (dist.count > have["service"][k].count):
                    have["service"][k] = dist
    if len(machines) > 1 and not allow_mixed:
        raise ConfigError("the runs come from different machines (" + "; ".join(machines)
                          + "): profile each machine apart, or pass --allow-mixed-machines to mix them")
    prof.machines = list(machines.values())
    prof.mixed_machines = len(machines) > 1
    for path in stage_tables:
        stage, name, table = read_stage_table(path)
        src = {"path": os.path.abspath(path), "kind": "stage table", "stage": stage, "name": name}
        prof.sources.append(src)
        if stage == "a":
            prof.stages_a[name] = {"source": path, "pre": table[min(table)], "fanout": {}}
        else:
            prof.stages_b[name] = {"source": path, "service": table}
    for spec in perf_csvs:
        name, table = read_perf_analyzer(spec)
        prof.sources.append({"path": os.path.abspath(spec.split(":")[0]), "kind": "perf_analyzer", "stage": "b",
                             "name": name})
        prof.stages_b[name] = {"source": spec, "service": table}
    if not prof.brokers and not prof.stages_b and not prof.stages_a:
        raise ConfigError("nothing to profile: no usable run folder, stage table or perf_analyzer CSV")
    return prof


PROFILE_CONFIG_KEYS = ("pipeline", "rate", "arrival", "producer_rate", "consumer_rate", "fanout", "replicas",
                       "batch_max", "batch_wait_ms", "service_dist", "service_mode", "message_bytes", "duration",
                       "warmup", "seed", "broker_opt", "classifier", "detector", "device")


def save(prof: Profile, path: str) -> None:
    from testbed.analysis.report import write_json
    write_json(path, prof.to_json())


def load(path: str, flag: str = "--profile") -> Profile:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise ConfigError(f"{flag} {path!r} cannot be read: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"{flag} {path!r} is not JSON (make one with python -m testbed.profile)") from None
    if not isinstance(data, dict) or "brokers" not in data:
        raise ConfigError(f"{flag} {path!r} is not a profile (make one with python -m testbed.profile)")
    return Profile.from_json(data)
