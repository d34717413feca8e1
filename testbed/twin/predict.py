"""From a profile and a configuration to a prediction: the broker entry whose run is nearest to the
configuration (same broker; nearest message size, then load level, then replicas), the stages
(synthetic: drawn from the seed as the stages draw them; otherwise the profile's measured stage or a
stage table), the broker's way of dealing work (its spec's ``dispatch``; a prefetch window other than 1
deals messages to the consumers in turn), then repeated simulation.

A prediction's figure is the median over the replications (seeds seed, seed+1, ...), its band the
lowest and highest replication. Checked against a run, the figure is the replication with the run's
own seed (the same arrivals, fan-outs and service draws as the run), the band as before.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field

import numpy as np

import brokers
from testbed.errors import ConfigError
from testbed.twin import figures as fig
from testbed.twin.profile import Profile, read_run, stage_key
from testbed.twin.simulate import Model, simulate

DEFAULT_REPS = 5
BATCH_KEYS = ("b_pre", "b_post")


def _profile_cmd(cfg, broker: str | None = None, batch: int | None = None) -> str:
    b = broker or cfg.broker
    extra = f" --batch-max {batch} --batch-wait-ms 5" if batch else ""
    return (f"python -m testbed.run --broker {b} --message-bytes {cfg.message_bytes} --rate {cfg.rate:g} "
            f"--fanout {cfg.fanout}{extra} --out results/profile-{b}, then add that folder to "
            "python -m testbed.profile")


def choose_entry(prof: Profile, cfg) -> dict:
    """The broker entry for ``cfg``: ConfigError saying which runs would provide a missing one."""
    entries = prof.brokers.get(cfg.broker, [])
    if not entries:
        have = ", ".join(sorted(prof.brokers)) or "none"
        raise ConfigError(f"the profile has no run of broker {cfg.broker!r} (it has: {have}); a run would "
                          f"provide it: {_profile_cmd(cfg)}")
    impl = (getattr(cfg, "broker_impl", "") or "").lower()
    if impl:
        entries = [e for e in entries if (e.get("impl_name") or "").lower() == impl
                   or impl in (e.get("impl") or "").lower()]
        if not entries:
            raise ConfigError(f"the profile has no run of {cfg.broker} --broker-impl {impl}; a run would "
                              f"provide it: {_profile_cmd(cfg)} (with --broker-impl {impl})")
    rate = cfg.rate * _fanout_mean(cfg)

    def score(e):
        mb = max(1, e.get("message_bytes") or 1)
        er = max(1e-3, e.get("msg_rate") or 1e-3)
        s = 2 * abs(math.log(max(1, cfg.message_bytes) / mb)) + abs(math.log(max(rate, 1e-3) / er))
        s += 0.25 * abs(cfg.replicas - e.get("replicas", 1))
        s += 0.5 * (e.get("pipeline") != cfg.pipeline) + 1.0 * (e.get("service_mode") != cfg.service_mode)
        s += 0.1 * abs(math.log(max(1, cfg.batch_max) / max(1, e.get("batch_max", 1))))
        return s
    return min(entries, key=score)


def _fanout_mean(cfg) -> float:
    from testbed.load.distributions import Fanout
    return Fanout.parse(cfg.fanout).mean


def dispatch_of(cfg, entry: dict) -> str:
    """``shared`` or ``dealt``, from the broker's spec and its options (the run's, then the flags')."""
    spec = brokers.spec(cfg.broker)
    impl = getattr(cfg, "broker_impl", "") or entry.get("impl_name", "")
    opts = {**(entry.get("options") or {}), **(getattr(cfg, "broker_opt", None) or {})}
    try:
        dispatch = spec.dispatch_for(impl, opts)
    except ConfigError:
        dispatch = spec.dispatch_for("", opts)
    return "dealt" if dispatch in ("round_robin", "partition") else "shared"


def stages_for(prof: Profile, cfg, stage_a: str = "", stage_b: str = "") -> tuple[dict | None, dict | None, list]:
    """(stage A, stage B service table, notes) for ``cfg``: synthetic stages are None (drawn from the seed)."""
    notes = []
    a = b = None
    key_a = stage_a or (stage_key(vars(cfg) if not isinstance(cfg, dict) else cfg, "a")
                        if cfg.pipeline != "synthetic" else "")
    key_b = stage_b or (stage_key(vars(cfg) if not isinstance(cfg, dict) else cfg, "b")
                        if cfg.pipeline != "synthetic" else "")
    if key_a:
        if key_a not in prof.stages_a:
            have = ", ".join(sorted(prof.stages_a)) or "none"
            raise ConfigError(f"the profile has no stage A {key_a!r} (it has: {have}); a {cfg.pipeline} run with "
                              "that detector, preprocessing, image size and device would provide it")
        a = prof.stages_a[key_a]
        notes.append(f"stage A from {key_a} ({a['source']})")
    if key_b:
        if key_b not in prof.stages_b:
            have = ", ".join(sorted(prof.stages_b)) or "none"
            raise ConfigError(f"the profile has no stage B {key_b!r} (it has: {have}); a run of that stage, a "
                              "stage table (--stage-table) or a perf_analyzer CSV would provide it")
        b = prof.stages_b[key_b]["service"]
        top = max(b)
        if cfg.batch_max > top:
            sizes = ", ".join(str(s) for s in sorted(b))
            raise ConfigError(f"the profile's stage B {key_b!r} has service times for batch sizes {sizes} only; "
                              f"--batch-max {cfg.batch_max} needs up to {cfg.batch_max}: a run with --batch-max "
                              f"{cfg.batch_max} at a load that fills its batches would provide it (or a stage "
                              f"table with batch {cfg.batch_max})")
        notes.append(f"stage B from {key_b} ({prof.stages_b[key_b]['source']})")
    return a, b, notes


def build_model(prof: Profile, cfg, stage_a: str = "", stage_b: str = "", assign=None) -> Model:
    entry = choose_entry(prof, cfg)
    a, b, notes = stages_for(prof, cfg, stage_a, stage_b)
    costs = dict(entry)
    sizes = sorted(entry.get("b_post") or {})
    if not sizes:
        raise ConfigError(f"the profile's run {entry['run_id']} of {cfg.broker} has too few batches to know "
                          f"stage B's costs; a longer run would provide them: {_profile_cmd(cfg)}")
    if cfg.batch_max > max(sizes):
        notes.append(f"per-batch costs of batches above {max(sizes)} taken from batches of {max(sizes)} "
                     f"(run {entry['run_id']}); a run with --batch-max {cfg.batch_max} would measure them")
    disp = dispatch_of(cfg, entry) if cfg.replicas > 1 else "shared"
    notes.insert(0, f"broker costs from run {entry['run_id']} ({entry['broker']}, {entry['message_bytes']} B, "
                    f"{entry['msg_rate']:g} msg/s, {entry['replicas']} replica(s)); dispatch {disp}")
    if cfg.pipeline == "synthetic" and (entry.get("a_over") is None or entry.get("b_over") is None):
        notes.append("the broker's run was not synthetic: the sleep overshoot of synthetic stages is not modelled")
    return Model(cfg, disp, costs, a, b, assign, notes)


@dataclass
class Prediction:
    point: dict
    lo: dict
    hi: dict
    reps: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    dispatch: str = ""
    costs_from: str = ""


def run_reps(model: Model, reps: int = DEFAULT_REPS, same_seed_point: bool = False) -> Prediction:
    cfg = model.cfg
    rows = []
    for k in range(max(1, reps)):
        sim = simulate(model, rep=k, seed=cfg.seed + k)
        rows.append(fig.figures(sim, cfg))
    point, lo, hi = {}, {}, {}
    for key in rows[0]:
        vals = [r[key] for r in rows]
        if key == "stable":
            point[key] = rows[0][key] if same_seed_point else sum(vals) * 2 > len(vals)
            lo[key], hi[key] = min(vals), max(vals)
            continue
        arr = np.array([v for v in vals if v == v], dtype=float)
        if not len(arr):
            point[key] = lo[key] = hi[key] = math.nan
            continue
        point[key] = rows[0][key] if same_seed_point else round(float(np.median(arr)), 6)
        lo[key], hi[key] = round(float(arr.min()), 6), round(float(arr.max()), 6)
    return Prediction(point, lo, hi, rows, list(model.notes), model.dispatch, model.costs.get("run_id", ""))


def predict(prof: Profile, cfg, reps: int = DEFAULT_REPS, stage_a: str = "", stage_b: str = "") -> Prediction:
    return run_reps(build_model(prof, cfg, stage_a, stage_b), reps)


# -- checked against a run -------------------------------------------------------------------------------

def run_config(run_dir: str):
    """The RunConfig a run folder ran with."""
    from testbed.config import FIELDS, RunConfig
    meta = _meta(run_dir)
    raw = meta.get("config") or {}
    cfg = RunConfig(**{k: v for k, v in raw.items() if k in FIELDS})
    return cfg, meta


def _meta(run_dir: str) -> dict:
    import json
    path = os.path.join(run_dir, "run.json")
    if not os.path.isfile(path):
        raise ConfigError(f"--check {run_dir!r} is not a run folder: it has no run.json")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def measured_summary(run_dir: str) -> dict:
    import csv
    path = os.path.join(run_dir, "summary.csv")
    if not os.path.isfile(path):
        raise ConfigError(f"--check {run_dir!r} has no summary.csv")
    with open(path, newline="", encoding="utf-8") as fh:
        row = next(csv.DictReader(fh), None)
    if row is None:
        raise ConfigError(f"--check {run_dir!r}: summary.csv is empty")
    out = {}
    for k in fig.KEYS:
        v = row.get(k, "")
        if k == "stable":
            out[k] = v == "true"
        else:
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = math.nan
    return out


def check(prof: Profile, run_dir: str, reps: int = DEFAULT_REPS, stage_a: str = "", stage_b: str = "") -> dict:
    """Predicted beside measured for one run folder: {"config", "prediction", "measured", "error_pct", "notes"}."""
    cfg, meta = run_config(run_dir)
    measured = measured_summary(run_dir)
    model = build_model(prof, cfg, stage_a, stage_b)
    notes = list(model.notes)
    if model.dispatch == "dealt" and cfg.replicas > 1 and os.path.isfile(os.path.join(run_dir, "messages.csv")):
        _, cols = read_run(run_dir)
        seq, rep = cols["seq"], cols["replica"]
        n = int(seq.max()) + 1 if len(seq) else 0
        who = np.arange(n) % cfg.replicas
        ok = rep >= 0
        who[seq[ok]] = rep[ok]
        model.assign = who
        notes.append("each message dealt to the replica it went to in the run")
    run_id = meta.get("run_id", "")
    if any(s.get("run_id") == run_id for s in prof.sources):
        notes.append(f"run {run_id} is in the profile: this check is not held out")
    machine = (meta.get("environment") or {}).get("machine", "")
    if prof.machines and machine not in {m.get("machine") for m in prof.machines}:
        notes.append(f"the run is from machine {machine!r}, the profile from {prof.machine}")
    pred = run_reps(model, reps, same_seed_point=True)
    pred.notes = notes
    err = {}
    for k, v in pred.point.items():
        m = measured.get(k)
        if k == "stable" or m is None or not isinstance(v, (int, float)):
            continue
        err[k] = round(100.0 * (v - m) / m, 2) if m and m == m and v == v else math.nan
    return {"config": cfg, "meta": meta, "prediction": pred, "measured": measured, "error_pct": err}


def with_rate(cfg, rate: float):
    return dataclasses.replace(cfg, rate=rate)
