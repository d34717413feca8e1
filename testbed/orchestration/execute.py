"""One run, end to end, as named phases:

    start broker -> make topic -> start stages -> wait ready -> load -> drain -> stop -> collect -> write

    load (testbed/load/) -> stage A (stages/, testbed/harness/loops.py) -> broker (brokers/)
        -> stage B -> records -> metrics (testbed/analysis/metrics.py) -> CSV (testbed/analysis/report.py)

Stages run as separate OS processes (testbed/orchestration/stages.py), except with an in-process broker,
where they are threads of this process. The run waits until every stage is connected and ready (a
consumer that is dealt partitions only once it has them), then sets the start time ``t0`` shared by all of them, prints a
progress line a second, stops the load after ``--duration``, drains for at most ``--drain`` seconds (or
until every message sent is finished), stops the stages and writes the run folder.

Every phase that starts something registers its undoing on one exit stack (stages stopped, topic
deleted, admin client closed, broker stopped when this run started it), so whatever happens the stack
undoes exactly what was done, in reverse order.

Ctrl-C (SIGINT) or SIGTERM: every stage is stopped, what was measured so far is written with
``complete=false`` and ``Interrupted`` is raised (the CLI exits 130). Bad input found late
(``ConfigError``): nothing is written, the run folder is removed if this run created it. Any other
error: one line, partial results written.

``hooks`` act on a run while it runs (a fault schedule): see ``RunHook``.

Over hosts (``--hosts FILE`` / ``--ray-address``, testbed/hosts/runs.py): the hosts are opened first
(and closed last), the broker and the stages start where ``--place`` puts them, every host's clock is
sampled at the start, every few seconds and at the end, and every record is converted onto this
process's clock before metrics; a host whose Ray node dies ends the run naming it (complete=false).
Without them nothing of this is imported.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import secrets
import shutil
import signal
import time
from dataclasses import dataclass, field

import numpy as np

import brokers
import stages
from testbed.analysis import report
from testbed.analysis.metrics import RunData, summarize
from testbed.config import RunConfig
from testbed.errors import ConfigError, StageError, TestbedError
from testbed.harness import records
from testbed.launchers import launch
from testbed.load import closed_window, stream_rate, stream_seed, total_rate
from testbed.orchestration.collector import Collector
from testbed.orchestration.environment import PACKAGES, environment  # noqa: F401 (re-exported)
from testbed.orchestration.stages import STOP_TIMEOUT_S, Stages

READY_TIMEOUT_S = 180.0  # model loading (vision) can take a while on a busy 2-core machine
START_DELAY_NS = 50_000_000  # t0 is this far after "go", so every stage sees the event before t0
TICK_NS = 1_000_000_000
POLL_MAX_NS = 100_000_000


class Interrupted(TestbedError):
    exit_code = 130


@dataclass
class RunResult:
    run_id: str
    run_dir: str
    summary: dict
    complete: bool


@dataclass
class RunState:
    """What one run gathers on its way, and what ``_write`` needs to write its folder."""

    cfg: RunConfig
    run_id: str
    run_dir: str
    a_steps: tuple
    b_steps: tuple
    started_wall: str
    handle: object = None          # the BrokerHandle (ours or the caller's)
    collector: Collector | None = None
    t0: int = 0                    # load start (monotonic ns); 0: the load never started
    end_ns: int = 0                # end of the measurement (before the stages are stopped)
    samples: dict = field(default_factory=dict)  # second -> broker figures
    complete: bool = False
    error: str = ""
    options: dict | None = None    # the adapter's resolved options
    faults: object = None          # the FaultHook of a run with faults (testbed/faults/hook.py)
    hosts: object = None           # the HostsRun of a run over hosts (testbed/hosts/runs.py)


class RunHook:
    """Acts on a run while it runs (e.g. a fault schedule). Every method is optional.

    ``on_broker(run, stack)`` once the broker is up, before the topic and the stages (a hook may set
    ``run.stage_endpoint``: where the stages connect instead, e.g. a proxy; undo on ``stack``);
    ``on_start(run)`` once, when the load starts (``run.state.t0`` is set); ``on_tick(run, now_ns)`` from
    the orchestrator's loop, at least every 100 ms during load and drain; ``on_stop(run)`` before the
    stages are stopped, also on errors and Ctrl-C (to undo what the hook did: resume a paused broker).
    A hook reaches the run's parts through ``run.handle`` (the broker), ``run.kill_replica`` and
    ``run.restart_replica`` (stage B replicas), ``run.partition_host`` and ``run.heal_host`` (simulated hosts).
    """

    def on_start(self, run: "Run") -> None:
        pass

    def on_tick(self, run: "Run", now_ns: int) -> None:
        pass

    def on_stop(self, run: "Run") -> None:
        pass


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


def progress_line(second: int, phase: str, sent_per_s: int, finished_per_s: int, backlog: int) -> str:
    """The status line of one second (testbed/orchestration/live.py reads it back)."""
    return (f"[{second:>4d}s {phase}] in {sent_per_s:>6d} msg/s  out {finished_per_s:>6d} msg/s  "
            f"backlog {max(0, backlog)}")


class Run:
    """One run: each phase is a method; ``execute`` calls them in order on one exit stack."""

    def __init__(self, cfg: RunConfig, progress=None, run_id: str | None = None, broker_handle=None,
                 hooks=()):
        self.cfg, self.progress, self.hooks = cfg, progress, list(hooks)
        self.run_id = run_id or new_run_id(cfg.broker)
        self.given_handle = broker_handle
        self.handle = broker_handle
        self.admin = None
        self.stages: Stages | None = None
        self.collector: Collector | None = None
        self.hosts = None              # HostsRun (testbed/hosts/runs.py) of a run over hosts
        self.topic = f"tb-{self.run_id}"
        self.created_dir = not os.path.exists(cfg.out or os.path.join("results", self.run_id))
        run_dir = prepare_run_dir(cfg, self.run_id)
        a_steps, b_steps = stages.step_names(cfg.pipeline)
        self.msg_dtype = records.message_dtype(a_steps, b_steps)
        self.state = RunState(cfg, self.run_id, run_dir, a_steps, b_steps,
                              _dt.datetime.now().astimezone().isoformat(timespec="seconds"))
        self._last = (0, 0)
        self.stage_endpoint = None     # set by a hook: where the stages connect (default: the broker)
        self.ports_hook = None         # set by a hook: called with the broker's ports before it starts
        self.broker_faulted = False    # set by a fault hook: skip sampling the broker meanwhile
        self.reconnect_admin = False   # set by a fault hook after a broker restart
        if cfg.faults:
            from testbed.faults.hook import FaultHook
            self.state.faults = FaultHook.from_config(cfg, run_dir)
            self.hooks.append(self.state.faults)
            if self.given_handle is None:
                self.ports_hook = self.state.faults.ports_hook()
        if cfg.broker_nodes > 1:  # a cluster: its leader sampled once a second (leaders.py)
            from testbed.orchestration.leaders import LeaderWatch
            self.hooks.append(LeaderWatch())

    # -- the whole run --------------------------------------------------------------------------------
    def execute(self) -> RunResult:
        s = self.state
        interrupted = False
        old_term = _raise_on_sigterm()
        try:
            try:
                with contextlib.ExitStack() as stack:
                    try:
                        self.open_hosts(stack)
                        self.start_broker(stack)
                        for h in self.hooks:
                            _call(h, "on_broker", self, stack)
                        self.make_topic(stack)
                        self.start_stages(stack)
                        self.wait_ready()
                        if not self.load():
                            self.drain()
                    except KeyboardInterrupt:
                        interrupted, s.error = True, "interrupted (Ctrl-C)"
                    except ConfigError:
                        raise
                    except TestbedError as exc:
                        s.error = str(exc)
                    s.end_ns = time.monotonic_ns()
                    # leaving the stack: stop (hooks undone, stages stopped), topic, admin, broker
            except KeyboardInterrupt:
                interrupted, s.error = True, s.error or "interrupted (Ctrl-C)"
        except ConfigError:  # bad input found late: nothing is written
            if self.created_dir:
                shutil.rmtree(s.run_dir, ignore_errors=True)
            raise
        finally:
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
        self.collect(interrupted)
        result = self.write()
        if interrupted:
            raise Interrupted(f"interrupted: partial results (complete=false) in {s.run_dir}")
        if s.error:
            raise StageError(f"{s.error} (partial results in {s.run_dir})" if s.t0 else s.error)
        return result

    # -- phases -----------------------------------------------------------------------------------------
    def open_hosts(self, stack: contextlib.ExitStack) -> None:
        """A run over hosts: the cluster, opened before anything else and closed after everything."""
        if not (self.cfg.hosts or self.cfg.ray_address):
            return
        from testbed.hosts.runs import HostsRun
        self.hosts = self.state.hosts = HostsRun.open(self.cfg, say=self.progress)
        stack.callback(self.hosts.close)
        _raise_on_sigterm()  # Ray's driver installs a SIGTERM handler of its own (it exits at once)
        if self.state.faults is not None:  # the proxy in front of the broker, reachable from the hosts
            self.state.faults.broker_host = self.hosts.broker_address()
            self.state.faults.listen_host = self.hosts.address

    def start_broker(self, stack: contextlib.ExitStack) -> None:
        """The broker: the caller's (a campaign's), or one launched here and stopped at the end."""
        if self.handle is None:
            from testbed.launchers.base import PORTS_HOOK
            token = PORTS_HOOK.set(self.ports_hook) if self.ports_hook is not None else None
            try:
                where = {"place": self.hosts} if self.hosts is not None else {}  # over hosts: where things go
                self.handle = launch(self.cfg, self.run_id, self.state.run_dir, **where)
            finally:
                if token is not None:
                    PORTS_HOOK.reset(token)
            stack.callback(self.handle.stop)
        self.state.handle = self.handle

    def make_topic(self, stack: contextlib.ExitStack) -> None:
        self.admin = brokers.get(self.cfg.broker)(self.handle.endpoint)
        stack.callback(self._close_admin)
        self.admin.connect(self.cfg.connect_timeout)
        self.admin.ensure_topic(self.topic, partitions(self.cfg))
        stack.callback(self._delete_topic)

    def start_stages(self, stack: contextlib.ExitStack) -> None:
        h = self.hosts
        self.stages = Stages(self.cfg, self.stage_endpoint or self.handle.endpoint, self.topic,
                             workers=h.workers(self.cfg) if h is not None else None,
                             cluster=h.cluster if h is not None else None, log_dir=self.state.run_dir)
        self.collector = Collector(self.stages.conns, self.msg_dtype, self.cfg.streams)
        self.state.collector = self.collector
        stack.callback(self.stop)
        self.stages.start()

    def wait_ready(self) -> None:
        col, n = self.collector, len(self.stages.workers)
        limit = READY_TIMEOUT_S + self.cfg.connect_timeout
        deadline = time.monotonic() + limit
        while len(col.ready) < n:
            col.poll(0.1)
            self._check()
            if time.monotonic() > deadline:
                raise StageError(f"stages not ready after {limit:g}s ({len(col.ready)} of {n})")

    def load(self) -> bool:
        """Start the clock; run the load for ``--duration``. True when every message is already done."""
        s = self.state
        if self.hosts is not None:
            self.hosts.start_clocks()
        s.t0 = time.monotonic_ns() + START_DELAY_NS
        self.stages.t0.value = s.t0
        self.stages.start_evt.set()
        self._next_tick = s.t0 + TICK_NS
        for h in self.hooks:
            _call(h, "on_start", self)
        return self._pump(s.t0 + int(self.cfg.duration * 1e9))

    def drain(self) -> bool:
        """Wait for what was sent to be finished, at most ``--drain`` seconds."""
        end = self.state.t0 + int((self.cfg.duration + self.cfg.drain) * 1e9)
        return self._pump(end)

    def stop(self) -> None:
        """Undo the hooks, stop the stages and read their last records."""
        st, col = self.stages, self.collector
        try:
            for h in self.hooks:
                _call(h, "on_stop", self)
        finally:
            st.stop_evt.set()
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while col.open and time.monotonic() < deadline:
                col.poll(0.1)
                if len(col.stopped) + len(st.dead()) >= len(st.workers) and not any(
                        c.poll() for c in col.open.values()):
                    break
            st.stop()
            col.poll(0)
            if self.hosts is not None:
                self.hosts.stop_clocks()  # the last sample, after the last record

    def collect(self, interrupted: bool) -> None:
        """The run's verdict: its first error, whether it is complete, the adapter's options."""
        s, col = self.state, self.collector
        if col is not None and col.errors and not s.error:
            s.error = col.errors[0].splitlines()[0]
        s.complete = not interrupted and not s.error and s.t0 > 0
        s.options = self.admin.options if self.admin is not None else None

    def write(self) -> RunResult:
        return _write(self.state)

    # -- what hooks (fault schedules) call ------------------------------------------------------------
    def kill_replica(self, replica: int) -> None:
        """SIGKILL stage B replica ``replica``; the run goes on (its death is expected)."""
        self.stages.kill_replica(replica)

    def restart_replica(self, replica: int) -> None:
        """A new stage B replica in the place of ``replica`` (same consumer name), starting at once."""
        slot, conn = self.stages.restart_replica(replica)
        self.collector.replace(slot, conn)

    def partition_host(self, name: str) -> None:
        """Cut simulated host ``name`` off: its link down (``partition-host``)."""
        self.hosts.partition(name)

    def heal_host(self, name: str) -> None:
        self.hosts.heal(name)

    # -- helpers ----------------------------------------------------------------------------------------
    def _pump(self, until_ns: int) -> bool:
        """Read records, tick the progress line and the hooks until ``until_ns``; True when every message
        stage A sent is finished."""
        col = self.collector
        while True:
            now = time.monotonic_ns()
            col.poll(max(0.0, min(self._next_tick - now, POLL_MAX_NS) / 1e9))
            self._check()
            now = time.monotonic_ns()
            for h in self.hooks:
                _call(h, "on_tick", self, now)
            if now >= self._next_tick:
                self._tick(now)
            if col.done is not None and col.distinct >= col.done["sent"]:
                return True
            if now >= until_ns:
                return False

    def _tick(self, now: int) -> None:
        s, col = self.state, self.collector
        sec = int((self._next_tick - s.t0) // TICK_NS) - 1
        if self.reconnect_admin:  # the broker was restarted: the admin client's connection is gone, and a
            self.reconnect_admin = False  # broker that kept nothing (in memory) lost the run's topic
            with contextlib.suppress(Exception):
                self.admin.close()
                self.admin.connect(min(2.0, self.cfg.connect_timeout))
                self.admin.ensure_topic(self.topic, partitions(self.cfg))
        s.samples[sec] = {} if self.broker_faulted else _sample(self.handle, self.admin, self.topic)
        if self.progress:
            phase = "load" if now < s.t0 + int(self.cfg.duration * 1e9) else "drain"
            self.progress(progress_line(sec + 1, phase, col.sent - self._last[0], col.finished - self._last[1],
                                        col.backlog))
        self._last = (col.sent, col.finished)
        self._next_tick += TICK_NS

    def _check(self) -> None:
        col, st = self.collector, self.stages
        if self.hosts is not None:
            self.hosts.check()  # HostDown naming a host whose Ray node died
            if col.errors or st.unexpectedly_dead(col.stopped):
                from testbed.hosts.runs import HOST_SETTLE_S
                self.hosts.check(HOST_SETTLE_S)  # a dead host is the cause to name, if that is what it was
        if col.errors:
            first = col.errors[0]
            raise StageError(first.splitlines()[0] + ("" if "\n" not in first else " (traceback in run.json)"))
        dead = st.unexpectedly_dead(col.stopped)
        if dead:
            col.poll(0.2)  # its last words (an error record) may still be in the pipe
            if col.errors:
                self._check()
            raise StageError(f"{dead[0]} exited unexpectedly")

    def _delete_topic(self) -> None:
        try:
            self.admin.delete_topic(self.topic)
        except Exception:  # noqa: BLE001 - a topic we could not delete goes with the broker
            pass

    def _close_admin(self) -> None:
        self.admin.close()


def execute(cfg: RunConfig, progress=None, run_id: str | None = None, broker_handle=None, hooks=()) -> RunResult:
    """Run one experiment and write its folder. ``progress`` receives one status line a second.

    ``broker_handle``: an already started broker (a campaign's, see campaign.py); else one is launched
    and stopped here. ``hooks``: ``RunHook`` objects acting on the run while it runs.
    """
    return Run(cfg, progress, run_id, broker_handle, hooks).execute()


def _call(hook, name: str, *args) -> None:
    fn = getattr(hook, name, None)
    if fn is not None:
        fn(*args)


def _raise_on_sigterm():
    def handler(signum, frame):
        raise KeyboardInterrupt
    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None


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


def _write(s: RunState) -> RunResult:
    cfg, col = s.cfg, s.collector
    frames = col.frames_array() if col else np.zeros(0, records.FRAME_DTYPE)
    messages = col.messages_array() if col else np.zeros(0, records.message_dtype(s.a_steps, s.b_steps))
    done = (col.done or {}) if col else {}
    if s.hosts is not None:  # every timestamp onto this process's clock, before anything reads it
        frames, messages = s.hosts.convert(frames, messages)
        done = s.hosts.convert_done(done, getattr(col, "_done", {}) if col else {})
    data = RunData(cfg, s.t0 or time.monotonic_ns(), frames, messages, s.a_steps, s.b_steps, s.samples,
                   col.failed if col else [], col.corrupt if col else 0, s.end_ns or time.monotonic_ns(),
                   publishes=col.publishes_array() if col else None,
                   publish_errors=(col.done or {}).get("publish_errors", {}) if col else {})
    summary, ts, acc = summarize(data)
    fault_rows = []
    if s.faults is not None:
        from testbed.faults.recovery import fault_figures
        fault_rows, fault_summary = fault_figures(data, ts, s.faults.windows(), acc)
        summary.update(fault_summary)
    env = environment()
    ep = s.handle.endpoint if s.handle is not None else None
    from testbed.analysis.availability import cluster_columns  # broker_nodes, replication, leader_changes, ...
    summary.update(cluster_columns(data, ep.extra if ep else None, done))
    summary.update(s.hosts.columns(messages) if s.hosts is not None else {"hosts": "", "clock_uncertainty_us": ""})
    row = {
        "run_id": s.run_id, "complete": s.complete, "broker": cfg.broker,
        "broker_impl": ep.impl if ep else "", "launcher": ep.launcher if ep else cfg.launcher,
        "pipeline": cfg.pipeline, "machine": env["machine"], "arrival": cfg.arrival,
        "offered_rate": total_rate(cfg), "streams": cfg.streams, "producer_rate": cfg.producer_rate,
        "consumer_rate": cfg.consumer_rate,
        "fanout": cfg.fanout, "fanout_mean": cfg.fanout_dist.mean, "replicas": cfg.replicas,
        "batch_max": cfg.batch_max, "batch_wait_ms": cfg.batch_wait_ms, "service_dist": cfg.service_dist,
        "service_mode": cfg.service_mode, "message_bytes": cfg.message_bytes, "duration_s": cfg.duration,
        "warmup_s": cfg.warmup, "seed": cfg.seed, **summary, "error": s.error,
    }
    run_dir = s.run_dir
    report.write_summary(os.path.join(run_dir, "summary.csv"), row)
    if s.t0:  # the load never started: there is no time series to write
        report.write_csv(os.path.join(run_dir, "timeseries.csv"), ts)
    if s.faults is not None:
        from testbed.faults.recovery import FAULT_COLUMNS
        report.write_csv(os.path.join(run_dir, "faults.csv"), fault_rows, FAULT_COLUMNS)
    if not cfg.no_trace and s.t0:
        report.write_messages(os.path.join(run_dir, "messages.csv"), messages, acc.first, frames,
                              acc.lost_seqs, s.t0, cfg.streams)
    stage_info = {v.get("role") + (f"-{v['replica']}" if "replica" in v else f"-{v['stream']}" if "stream" in v
                                   else ""): v for v in col.ready.values()} if col else {}
    meta = {
        "run_id": s.run_id, "complete": s.complete, "error": s.error, "errors": col.errors if col else [],
        "started": s.started_wall, "config": cfg.to_dict(), "seed": cfg.seed,
        "broker": {"name": cfg.broker, "impl": ep.impl if ep else "", "launcher": ep.launcher if ep else "",
                   "url": ep.url if ep else "",
                   "options": s.options if s.options is not None else brokers_options(cfg),
                   "launch": ep.extra if ep else {}},
        "stages": stage_info, "load": load_info(cfg), "failed_frames": col.failed[:1000] if col else [],
        "delivery": cfg.delivery or "broker default",
        "faults": {**s.faults.info(), "publish_errors": data.publish_errors,
                   "stage_a_reconnects": (col.done or {}).get("reconnects", 0) if col else 0,
                   "stage_b": col.survived if col else {}} if s.faults is not None else None,
        "hosts": s.hosts.info(messages) if s.hosts is not None else None,
        "environment": env,
    }
    report.write_json(os.path.join(run_dir, "run.json"), meta)
    return RunResult(s.run_id, run_dir, row, s.complete)


def partitions(cfg: RunConfig) -> int:
    """Partitions of the run's topic (where a broker has them): at least one per consumer, and one per
    camera stream (a broker that keys a stream's messages puts each stream on a partition of its own)."""
    return max(1, cfg.replicas, cfg.streams)


def load_info(cfg: RunConfig) -> dict:
    """run.json's ``load``: open or closed loop, the streams, each stream's rate and seed."""
    window = closed_window(cfg.arrival)
    out = {"loop": "closed" if window else "open", "arrival": cfg.arrival, "streams": cfg.streams,
           "stream_seeds": [stream_seed(cfg.seed, s) for s in range(cfg.streams)]}
    if window:
        out["frames_in_flight_per_stream"] = window
        out["note"] = ("closed loop: a frame is released when one of its stream's frames has finished, and its "
                       "latency counts from that release; no coordinated-omission correction applies "
                       "(docs/validation.md, closed loop)")
    else:
        out["offered_rate"] = total_rate(cfg)
        out["stream_rate"] = stream_rate(cfg)
    return out


def brokers_options(cfg: RunConfig) -> dict:
    from brokers.base import resolve_options
    try:
        return resolve_options(brokers.get(cfg.broker), cfg.broker_opt)
    except TestbedError:
        return dict(cfg.broker_opt)
