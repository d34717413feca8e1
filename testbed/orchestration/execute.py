"""One run, end to end: start the broker, the stages, the clock; collect; drain; stop; write.

    load (testbed/load/) -> stage A (stages/, testbed/harness/loops.py) -> broker (brokers/)
        -> stage B -> records -> metrics (testbed/analysis/metrics.py) -> CSV (testbed/analysis/report.py)

Stages run as separate OS processes (multiprocessing "spawn"), except with the in-process queue, where
they are threads of this process. The orchestrator waits until every stage is connected and ready (a
Kafka consumer only once it has partitions), then sets the start time ``t0`` shared by all of them,
prints a progress line a second, stops the load after ``--duration``, drains for at most ``--drain``
seconds (or until every message sent is finished), stops the stages and writes the run folder.

Ctrl-C (SIGINT) or SIGTERM: every stage is stopped, what was measured so far is written with
``complete=false`` and ``Interrupted`` is raised (the CLI exits 130).
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import platform
import secrets
import shutil
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

import brokers
import stages
from testbed.harness import records
from testbed.analysis import report
from testbed.config import RunConfig
from testbed.errors import ConfigError, StageError, TestbedError
from testbed.launchers import launch
from testbed.analysis.metrics import RunData, summarize

READY_TIMEOUT_S = 180.0  # model loading (vision) can take a while on a busy 2-core machine
STOP_TIMEOUT_S = 15.0
PACKAGES = ("numpy", "pyzmq", "hdrhistogram", "PyYAML", "psutil", "redis", "pika", "confluent-kafka",
            "torch", "torchvision", "nvidia-dali-cuda120", "docker")


class Interrupted(TestbedError):
    exit_code = 130


@dataclass
class RunResult:
    run_id: str
    run_dir: str
    summary: dict
    complete: bool


def new_run_id(broker: str) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{broker}-{stamp}-{secrets.token_hex(2)}"


def prepare_run_dir(cfg: RunConfig, run_id: str) -> str:
    """The run folder, created and checked writable before anything starts (exit 2 if not)."""
    run_dir = cfg.out or os.path.join("results", run_id)
    if os.path.exists(os.path.join(run_dir, "summary.csv")):
        raise ConfigError(f"--out {run_dir!r} already holds a run (summary.csv); choose another folder")
    try:
        os.makedirs(run_dir, exist_ok=True)
        probe = os.path.join(run_dir, ".write-test")
        with open(probe, "w") as fh:
            fh.write("")
        os.remove(probe)
    except OSError as exc:
        raise ConfigError(f"--out {run_dir!r} cannot be written: {exc.strerror}") from None
    return run_dir


def environment() -> dict:
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {
        "python": sys.version.split()[0], "platform": platform.platform(), "machine": socket.gethostname(),
        "cpu_count": os.cpu_count(), "packages": versions,
    }


class _Shared:
    """A start-time cell for threads (processes use multiprocessing.Value)."""

    value = 0


class Stages:
    """Stage A and the stage B replicas, as processes or (in-process queue) threads."""

    def __init__(self, cfg: RunConfig, endpoint, topic: str):
        from testbed.harness import loops as runners
        self.in_process = brokers.get(cfg.broker).in_process
        if self.in_process:
            self.start_evt, self.stop_evt, self.t0 = threading.Event(), threading.Event(), _Shared()
            make_pipe = lambda: mp.Pipe(duplex=False)  # noqa: E731
            make_worker = lambda target, args, name: threading.Thread(  # noqa: E731
                target=target, args=args, name=name, daemon=True)
        else:
            ctx = mp.get_context("spawn")
            self.start_evt, self.stop_evt, self.t0 = ctx.Event(), ctx.Event(), ctx.Value("q", 0)
            make_pipe = lambda: ctx.Pipe(duplex=False)  # noqa: E731
            make_worker = lambda target, args, name: ctx.Process(  # noqa: E731
                target=target, args=args, name=name, daemon=True)
        cfg_d, ep_d = cfg.to_dict(), endpoint.__dict__.copy()
        self.workers, self.conns, self.names, self._writers = [], [], [], []
        common = (self.start_evt, self.stop_evt, self.t0, self.in_process)
        r, w = make_pipe()
        self._add(make_worker(runners.producer_main, (cfg_d, ep_d, topic, w, *common), "stage-A"), r, w, "stage A")
        for i in range(cfg.replicas):
            r, w = make_pipe()
            self._add(make_worker(runners.consumer_main, (cfg_d, ep_d, topic, i, w, *common), f"stage-B-{i}"),
                      r, w, f"stage B replica {i}")

    def _add(self, worker, r, w, name):
        self.workers.append(worker)
        self.conns.append(r)
        self.names.append(name)
        self._writers.append(w)

    def start(self) -> None:
        for wk in self.workers:
            wk.start()
        if not self.in_process:
            for w in self._writers:  # the child holds its own copy now
                w.close()

    def dead(self) -> list[str]:
        out = []
        for wk, name in zip(self.workers, self.names):
            if not wk.is_alive():
                out.append(name)
        return out

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        self.stop_evt.set()
        deadline = time.monotonic() + timeout
        for wk in self.workers:
            wk.join(max(0.0, deadline - time.monotonic()))
        if not self.in_process:
            for wk in self.workers:
                if wk.is_alive():
                    wk.terminate()
                    wk.join(2)
                if wk.is_alive():
                    wk.kill()
                    wk.join(2)


class Collector:
    """Reads the stages' pipes; keeps the records; counts what the progress line and the drain need."""

    def __init__(self, st: Stages, msg_dtype):
        self.st, self.msg_dtype = st, msg_dtype
        self.frames: list[np.ndarray] = []
        self.messages: list[np.ndarray] = []
        self.ready: dict[int, dict] = {}
        self.stopped: set[int] = set()
        self.done: dict | None = None
        self.errors: list[str] = []
        self.failed: list[dict] = []
        self.corrupt = 0
        self.sent = 0
        self.finished = 0
        self._seen = np.zeros(1024, dtype=bool)  # seq -> finished at least once
        self.distinct = 0
        self.open = dict(enumerate(st.conns))

    def poll(self, timeout: float) -> None:
        if not self.open:
            time.sleep(timeout)
            return
        for conn in mpc.wait(list(self.open.values()), timeout):
            idx = next(i for i, c in self.open.items() if c is conn)
            while True:
                try:
                    chunk = conn.recv_bytes()
                except (EOFError, OSError):
                    del self.open[idx]
                    break
                self._handle(idx, chunk)
                if not conn.poll():
                    break

    def _handle(self, idx: int, chunk: bytes) -> None:
        tag, body = records.parse(chunk, self.msg_dtype)
        if tag == records.MESSAGES:
            body = body.copy()
            self.messages.append(body)
            self.finished += len(body)
            seqs = np.unique(body["seq"])
            if len(seqs):
                top = int(seqs[-1]) + 1
                if top > len(self._seen):
                    grown = np.zeros(max(top, 2 * len(self._seen)), dtype=bool)
                    grown[:len(self._seen)] = self._seen
                    self._seen = grown
                new = seqs[~self._seen[seqs]]
                self._seen[new] = True
                self.distinct += len(new)
        elif tag == records.FRAMES:
            body = body.copy()
            self.frames.append(body)
            self.sent += int(body["n"].sum())
        elif tag == records.READY:
            self.ready[idx] = body
        elif tag == records.DONE:
            self.done = body
        elif tag == records.STOPPED:
            self.stopped.add(idx)
            self.corrupt += int(body.get("corrupt", 0))
        elif tag == records.FAILED:
            self.failed.append(body)
        elif tag == records.ERROR:
            self.errors.append(body)

    def frames_array(self) -> np.ndarray:
        from testbed.harness.records import FRAME_DTYPE
        return np.concatenate(self.frames) if self.frames else np.zeros(0, FRAME_DTYPE)

    def messages_array(self) -> np.ndarray:
        return np.concatenate(self.messages) if self.messages else np.zeros(0, self.msg_dtype)


def _raise_on_sigterm():
    def handler(signum, frame):
        raise KeyboardInterrupt
    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None


def execute(cfg: RunConfig, progress=None, run_id: str | None = None, broker_handle=None) -> RunResult:
    """Run one experiment and write its folder. ``progress`` receives one status line a second.

    ``broker_handle``: an already started broker (sweeps start one per block of runs); else one is
    launched and stopped here.
    """
    run_id = run_id or new_run_id(cfg.broker)
    created = not os.path.exists(cfg.out or os.path.join("results", run_id))
    run_dir = prepare_run_dir(cfg, run_id)
    a_steps, b_steps = stages.step_names(cfg.pipeline)
    msg_dtype = records.message_dtype(a_steps, b_steps)
    topic = f"tb-{run_id}"
    started_wall = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    old_term = _raise_on_sigterm()
    handle = None
    st = None
    col = None
    admin = None
    t0 = 0
    error = ""
    interrupted = False
    samples: dict[int, dict] = {}
    own_handle = broker_handle is None
    try:
        handle = broker_handle or launch(cfg, run_id, run_dir)
        endpoint = handle.endpoint
        adapter_cls = brokers.get(cfg.broker)
        admin = adapter_cls(endpoint)
        admin.connect(cfg.connect_timeout)
        admin.ensure_topic(topic, max(1, cfg.replicas))
        st = Stages(cfg, endpoint, topic)
        col = Collector(st, msg_dtype)
        st.start()
        n_workers = len(st.workers)
        deadline = time.monotonic() + READY_TIMEOUT_S + cfg.connect_timeout
        while len(col.ready) < n_workers:
            col.poll(0.1)
            _check(col, st)
            if time.monotonic() > deadline:
                raise StageError(f"stages not ready after {READY_TIMEOUT_S + cfg.connect_timeout:g}s "
                                 f"({len(col.ready)} of {n_workers})")
        t0 = time.monotonic_ns() + 50_000_000
        st.t0.value = t0
        st.start_evt.set()
        load_end = t0 + int(cfg.duration * 1e9)
        drain_end = load_end + int(cfg.drain * 1e9)
        next_tick = t0 + 1_000_000_000
        last = (0, 0)
        while True:
            now = time.monotonic_ns()
            col.poll(max(0.0, min(next_tick - now, 100_000_000) / 1e9))
            _check(col, st)
            now = time.monotonic_ns()
            if now >= next_tick:
                sec = int((next_tick - t0) // 1_000_000_000) - 1
                samples[sec] = _sample(handle, admin, topic)
                if progress:
                    phase = "load" if now < load_end else "drain"
                    backlog = col.sent - col.distinct
                    progress(f"[{sec + 1:>4d}s {phase}] in {col.sent - last[0]:>6d} msg/s  "
                             f"out {col.finished - last[1]:>6d} msg/s  backlog {backlog}")
                last = (col.sent, col.finished)
                next_tick += 1_000_000_000
            if col.done is not None and col.distinct >= col.done["sent"]:
                break
            if now >= drain_end:
                break
    except KeyboardInterrupt:
        interrupted = True
        error = "interrupted (Ctrl-C)"
    except TestbedError as exc:
        error = str(exc)
        if isinstance(exc, ConfigError):  # bad input found late: nothing is written
            _cleanup(st, col, admin, handle if own_handle else None, topic)
            if created:
                shutil.rmtree(run_dir, ignore_errors=True)
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
            raise
    end_ns = time.monotonic_ns()
    try:
        _cleanup(st, col, admin, handle if own_handle else None, topic)
    except KeyboardInterrupt:
        interrupted = True
        error = error or "interrupted (Ctrl-C)"
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    if col is not None and col.errors and not error:
        error = col.errors[0].splitlines()[0]
    complete = not interrupted and not error and t0 > 0
    options = admin.options if admin is not None else None  # the adapter's resolved options
    result = _write(cfg, run_id, run_dir, col, t0, end_ns, a_steps, b_steps, samples, handle, complete,
                    error, started_wall, options)
    if interrupted:
        raise Interrupted(f"interrupted: partial results (complete=false) in {run_dir}")
    if error:
        raise StageError(f"{error} (partial results in {run_dir})" if t0 else error)
    return result


def _check(col: Collector, st: Stages) -> None:
    if col.errors:
        first = col.errors[0]
        raise StageError(first.splitlines()[0] + ("" if "\n" not in first else " (traceback in run.json)"))
    dead = [n for i, n in enumerate(st.names) if not st.workers[i].is_alive() and i not in col.stopped]
    if dead:
        col.poll(0.2)  # its last words (an error record) may still be in the pipe
        if col.errors:
            _check(col, st)
        raise StageError(f"{dead[0]} exited unexpectedly")


def _sample(handle, admin, topic: str) -> dict:
    out = {}
    try:
        b = admin.broker_backlog(topic, f"testbed-{topic}")
        if b is not None:
            out["broker_backlog"] = b
    except Exception:  # noqa: BLE001 - a figure we could not read is left empty
        pass
    try:
        out.update(handle.sample())
    except Exception:  # noqa: BLE001
        pass
    return out


def _cleanup(st, col, admin, handle, topic) -> None:
    try:
        if st is not None:
            st.stop_evt.set()
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while col is not None and col.open and time.monotonic() < deadline:
                col.poll(0.1)
                if len(col.stopped) + len(st.dead()) >= len(st.workers) and not any(
                        c.poll() for c in col.open.values()):
                    break
            st.stop()
            if col is not None:
                col.poll(0)
    finally:
        try:
            if admin is not None:
                try:
                    admin.delete_topic(topic)
                except Exception:  # noqa: BLE001
                    pass
                admin.close()
        finally:
            if handle is not None:
                handle.stop()


def _write(cfg, run_id, run_dir, col, t0, end_ns, a_steps, b_steps, samples, handle, complete, error,
           started_wall, options=None) -> RunResult:
    from testbed.harness.records import FRAME_DTYPE
    frames = col.frames_array() if col else np.zeros(0, FRAME_DTYPE)
    messages = col.messages_array() if col else np.zeros(0, records.message_dtype(a_steps, b_steps))
    data = RunData(cfg, t0 or time.monotonic_ns(), frames, messages, a_steps, b_steps, samples,
                   col.failed if col else [], col.corrupt if col else 0, end_ns)
    summary, ts, acc = summarize(data)
    env = environment()
    ep = handle.endpoint if handle is not None else None
    row = {
        "run_id": run_id, "complete": complete, "broker": cfg.broker,
        "broker_impl": ep.impl if ep else "", "launcher": ep.launcher if ep else cfg.launcher,
        "pipeline": cfg.pipeline, "machine": env["machine"], "arrival": cfg.arrival,
        "offered_rate": cfg.rate, "producer_rate": cfg.producer_rate, "consumer_rate": cfg.consumer_rate,
        "fanout": cfg.fanout, "fanout_mean": cfg.fanout_dist.mean, "replicas": cfg.replicas,
        "batch_max": cfg.batch_max, "batch_wait_ms": cfg.batch_wait_ms, "service_dist": cfg.service_dist,
        "service_mode": cfg.service_mode, "message_bytes": cfg.message_bytes, "duration_s": cfg.duration,
        "warmup_s": cfg.warmup, "seed": cfg.seed, **summary, "error": error,
    }
    report.write_summary(os.path.join(run_dir, "summary.csv"), row)
    if t0:  # the load never started: there is no time series to write
        report.write_csv(os.path.join(run_dir, "timeseries.csv"), ts)
    if not cfg.no_trace and t0:
        report.write_messages(os.path.join(run_dir, "messages.csv"), messages, acc.first, frames,
                              acc.lost_seqs, t0)
    stage_info = {v.get("role") + (f"-{v['replica']}" if "replica" in v else ""): v for v in col.ready.values()} \
        if col else {}
    meta = {
        "run_id": run_id, "complete": complete, "error": error, "errors": col.errors if col else [],
        "started": started_wall, "config": cfg.to_dict(), "seed": cfg.seed,
        "broker": {"name": cfg.broker, "impl": ep.impl if ep else "", "launcher": ep.launcher if ep else "",
                   "url": ep.url if ep else "",
                   "options": options if options is not None else brokers_options(cfg),
                   "launch": ep.extra if ep else {}},
        "stages": stage_info, "failed_frames": col.failed[:1000] if col else [],
        "environment": env,
    }
    report.write_json(os.path.join(run_dir, "run.json"), meta)
    return RunResult(run_id, run_dir, row, complete)


def brokers_options(cfg: RunConfig) -> dict:
    from brokers.base import resolve_options
    try:
        return resolve_options(brokers.get(cfg.broker), cfg.broker_opt)
    except TestbedError:
        return dict(cfg.broker_opt)
