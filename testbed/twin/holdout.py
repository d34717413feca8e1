"""The twin checked on many runs at once (``predict --check FOLDER``): one row per run, the error of each
figure, the targets' verdicts and a predicted-vs-measured scatter plot.

Targets (on runs the profile did not include): median absolute error at most 10% for e2e p50 and 15% for
e2e p99, the stable verdict right in at least 95% of runs. Runs in the profile are checked too but left
out of the verdicts (their rows say ``in profile``).
"""
from __future__ import annotations

import math

import numpy as np

from testbed.errors import TestbedError
from testbed.twin.predict import check
from testbed.twin.profile import Profile, run_folders

TARGETS = {"e2e_p50_ms": 10.0, "e2e_p99_ms": 15.0}
STABLE_TARGET = 95.0
COLUMNS = ["run", "broker", "replicas", "batch_max", "rho", "in_profile", "stable_meas", "stable_pred",
           "e2e_p50_meas", "e2e_p50_pred", "e2e_p50_err_pct", "e2e_p99_meas", "e2e_p99_pred", "e2e_p99_err_pct",
           "e2e_p99_lo", "e2e_p99_hi", "error"]


def check_all(prof: Profile, folder: str, reps: int, log=None) -> list[dict]:
    rows = []
    for run in run_folders([folder]):
        try:
            res = check(prof, run, reps)
        except TestbedError as exc:
            rows.append({"run": run, "error": str(exc)})
            if log:
                log(f"{run}: {exc}")
            continue
        cfg, pred, meas, err = res["config"], res["prediction"], res["measured"], res["error_pct"]
        rows.append({
            "run": run, "broker": cfg.broker, "replicas": cfg.replicas, "batch_max": cfg.batch_max,
            "rho": round(cfg.rate * cfg.fanout_dist.mean / (cfg.consumer_rate * cfg.replicas), 3),
            "in_profile": any("not held out" in n for n in pred.notes),
            "stable_meas": meas["stable"], "stable_pred": pred.point["stable"],
            "e2e_p50_meas": meas["e2e_p50_ms"], "e2e_p50_pred": pred.point["e2e_p50_ms"],
            "e2e_p50_err_pct": err.get("e2e_p50_ms"),
            "e2e_p99_meas": meas["e2e_p99_ms"], "e2e_p99_pred": pred.point["e2e_p99_ms"],
            "e2e_p99_err_pct": err.get("e2e_p99_ms"), "e2e_p99_lo": pred.lo["e2e_p99_ms"],
            "e2e_p99_hi": pred.hi["e2e_p99_ms"], "error": ""})
        if log:
            log(f"{run}: p50 {err.get('e2e_p50_ms', math.nan):+.1f}%, p99 {err.get('e2e_p99_ms', math.nan):+.1f}%")
    return rows


def verdicts(rows: list[dict], stable_only: bool = False) -> dict:
    """Median absolute errors and the stable verdict's hit rate over held-out rows. With ``stable_only``,
    latency errors only over runs measured stable (an overloaded run's percentiles depend on how long it
    ran, not on the system)."""
    held = [r for r in rows if not r.get("error") and not r.get("in_profile")]
    out = {"runs": len(held)}
    for key, target in TARGETS.items():
        col = key.replace("_ms", "") + "_err_pct"
        sel = [r for r in held if not stable_only or r["stable_meas"]]
        errs = np.array([abs(r[col]) for r in sel if r[col] is not None and r[col] == r[col]], dtype=float)
        med = float(np.median(errs)) if len(errs) else math.nan
        out[key] = {"median_abs_error_pct": round(med, 1), "target_pct": target, "runs": int(len(errs)),
                    "met": bool(med <= target) if med == med else False}
    right = sum(1 for r in held if r["stable_meas"] == r["stable_pred"])
    pct = 100.0 * right / len(held) if held else math.nan
    out["stable"] = {"right_pct": round(pct, 1), "target_pct": STABLE_TARGET, "met": bool(pct >= STABLE_TARGET)}
    return out


def scatter(rows: list[dict], path: str, title: str) -> None:
    """Predicted vs measured e2e p50 and p99 (log axes), one point per held-out run, by broker."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    held = [r for r in rows if not r.get("error") and not r.get("in_profile")]
    names = list(dict.fromkeys(r["broker"] for r in held))
    cmap = matplotlib.colormaps["tab10"]
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.6))
    for ax, key in zip(axes, ("e2e_p50", "e2e_p99")):
        vals = []
        for i, b in enumerate(names):
            pts = [(r[f"{key}_meas"], r[f"{key}_pred"], r["stable_meas"]) for r in held if r["broker"] == b]
            for stable, marker in ((True, "o"), (False, "x")):
                xs = [m for m, p, s in pts if s == stable and m > 0 and p > 0]
                ys = [p for m, p, s in pts if s == stable and m > 0 and p > 0]
                vals += xs + ys
                ax.scatter(xs, ys, color=cmap(i % 10), marker=marker, s=28,
                           label=f"{b}" + ("" if stable else " (unstable)") if xs else None)
        if vals:
            lo, hi = min(vals) * 0.8, max(vals) * 1.25
            ax.plot([lo, hi], [lo, hi], color="0.4", lw=1)
            band = 0.15 if key == "e2e_p99" else 0.10
            ax.fill_between([lo, hi], [lo * (1 - band), hi * (1 - band)], [lo * (1 + band), hi * (1 + band)],
                            color="0.85", zorder=0)
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
        ax.set_xscale("log")
        ax.set_yscale("log")
        from matplotlib.ticker import NullFormatter, ScalarFormatter
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(ScalarFormatter())
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"measured {key.replace('_', ' ')} (ms)")
        ax.set_ylabel(f"predicted {key.replace('_', ' ')} (ms)")
        ax.set_title(f"{key.replace('_', ' ')}: grey = within {'15' if key == 'e2e_p99' else '10'}%")
    axes[1].legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
