"""scripts/reproduction_tables.py: the docs' measured cells come from the runs' own files, repetitions as
median and range, incomplete runs left out."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "reproduction_tables.py")


def fake_run(folder, name, point, status="complete", **summary):
    d = folder / name
    d.mkdir(parents=True)
    (d / "sweep.json").write_text(json.dumps({"point": point, "status": status}))
    with open(d / "summary.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(summary))
        w.writeheader()
        w.writerow(summary)


def test_cells_are_medians_with_ranges_and_skip_incomplete_runs(tmp_path):
    brokers = tmp_path / "brokers"
    for rep, (p99, hop) in enumerate([(40, 1.0), (60, 3.0), (50, 2.0)], 1):
        fake_run(brokers, f"redis-r1-rep{rep}", {"broker": "redis", "rate": 1.0, "repetition": rep},
                 e2e_p99_ms=p99, hop_p50_ms=hop, hop_p99_ms=hop * 2, queue_p50_ms=0, queue_p99_ms=0,
                 throughput_out=4, rho_measured=0.1)
    fake_run(brokers, "redis-r1-rep4", {"broker": "redis", "rate": 1.0, "repetition": 4}, status="failed",
             e2e_p99_ms=999, hop_p50_ms=99, hop_p99_ms=99, queue_p50_ms=0, queue_p99_ms=0, throughput_out=4,
             rho_measured=0.1)
    pre = tmp_path / "pre_tput"
    fake_run(pre, "cpu", {"preprocess": "cpu", "repetition": 1}, throughput_out=10, fanout_mean=2,
             a_decode_ms=1, a_resize_ms=1, a_normalize_ms=1, a_infer_ms=5, limited_by="stage_a")
    fake_run(pre, "pre", {"preprocess": "pretensor", "repetition": 1}, throughput_out=20, fanout_mean=2,
             a_decode_ms=0, a_resize_ms=0, a_normalize_ms=0, a_infer_ms=5, limited_by="stage_a")
    r = subprocess.run([sys.executable, SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    redis_light = [ln for ln in r.stdout.splitlines() if ln.startswith("| redis | 1 frame/s")]
    assert redis_light == ["| redis | 1 frame/s | - | 3 | 50 (40-60) | 0.0 | 0 | 2.00 (1.00-3.00) | "
                           "4.0 (2.0-6.0) | 4.00 | 0.10 |"], r.stdout
    cpu = [ln for ln in r.stdout.splitlines() if ln.startswith("| cpu (torchvision) | ~80% | 1 |")]
    assert cpu and "| 5.00 | 50% |" in cpu[0], r.stdout   # 5 frames/s against 10 pretensor
    assert "| kafka | 1 frame/s | - | not run |" in r.stdout


def test_a_missing_folder_is_one_error_line(tmp_path):
    r = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "nope")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "is not a folder" in r.stderr


def test_update_rewrites_only_the_marked_tables_and_is_idempotent(tmp_path):
    fake_run(tmp_path / "brokers", "kafka-r5", {"broker": "kafka", "rate": 5.0, "repetition": 1}, e2e_p99_ms=300,
             hop_p50_ms=2.5, hop_p99_ms=9, queue_p50_ms=40, queue_p99_ms=250, throughput_out=20, rho_measured=0.8)
    page = tmp_path / "page.md"
    page.write_text("intro stays\n<!-- table:row5 -->\n| old | table |\n<!-- /table -->\nend stays\n")
    run = lambda: subprocess.run([sys.executable, SCRIPT, str(tmp_path), "--update", str(page)],  # noqa: E731
                                 capture_output=True, text=True, timeout=60)
    assert run().returncode == 0
    first = page.read_text()
    assert first.startswith("intro stays\n<!-- table:row5 -->\n\n| broker |") and first.endswith("<!-- /table -->\nend stays\n")
    assert "| old | table |" not in first
    assert "| kafka | 5 frames/s | 55 ms | 1 | 300 | 40.0 | 250 | 2.50 | 9.0 | 20.00 | 0.80 |" in first
    assert run().returncode == 0 and page.read_text() == first

    page.write_text("<!-- table:row9 -->\n<!-- /table -->\n")
    r = run()
    assert r.returncode == 2 and "row9" in r.stderr and "Traceback" not in r.stderr
    assert page.read_text() == "<!-- table:row9 -->\n<!-- /table -->\n"


def test_a_knob_run_is_found_by_the_options_it_ran_with(tmp_path):
    """A grid with a single broker_opt value leaves it out of the point: the run's own run.json says."""
    fake_run(tmp_path / "knobs_redis", "redis-r1", {"rate": 1.0, "repetition": 1}, e2e_p99_ms=700, hop_p50_ms=2.1,
             hop_p99_ms=7.5, rho_measured=0.2)
    (tmp_path / "knobs_redis" / "redis-r1" / "run.json").write_text(
        json.dumps({"config": {"broker": "redis", "broker_opt": {"block_ms": 1}}}))
    r = subprocess.run([sys.executable, SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    line = [ln for ln in r.stdout.splitlines() if "| block_ms 1 |" in ln]
    assert line and "| 1 / not run | 700 / - | 2.10 / 7.5 ; - / - |" in line[0], r.stdout


def test_the_replicated_pair_comes_from_its_own_sweep(tmp_path):
    """Row 5 replicated reads brokers_replicated/ only: a single-node run of row 5 is not mixed in."""
    common = dict(queue_p50_ms=400, queue_p99_ms=2000, throughput_out=20, rho_measured=0.85)
    for rep, p99 in enumerate([2500, 2700], 1):
        fake_run(tmp_path / "brokers_replicated", f"kafka-r5-rep{rep}",
                 {"broker": "kafka", "rate": 5.0, "broker_nodes": 3, "repetition": rep},
                 e2e_p99_ms=p99, hop_p50_ms=0.2, hop_p99_ms=19, **common)
    fake_run(tmp_path / "brokers", "kafka-r5-rep1", {"broker": "kafka", "rate": 5.0, "repetition": 1},
             e2e_p99_ms=9999, hop_p50_ms=9, hop_p99_ms=99, **common)
    r = subprocess.run([sys.executable, SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    part = r.stdout.split("Kafka and Redis replicated", 1)[1].split("\n## ", 1)[0]
    kafka = [ln for ln in part.splitlines() if ln.startswith("| kafka | 3 KRaft nodes")]
    assert kafka[1] == ("| kafka | 3 KRaft nodes, RF 3, min ISR 2 | 5 frames/s | 55 ms | 2 | 2600 (2500-2700) | 400.0 | "
                        "2000 | 0.20 | 19.0 | 20.00 | 0.85 |"), part
    assert kafka[0].startswith("| kafka | 3 KRaft nodes, RF 3, min ISR 2 | 1 frame/s | - | not run |")
    assert "| redis | primary + 2 replicas, Sentinel, WAIT 1 | 5 frames/s | 38 ms | not run |" in part
