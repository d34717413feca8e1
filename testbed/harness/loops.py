"""The harness side of the stages: the loops that run stage A and stage B and stamp every clock.

Both loops run as separate OS processes (or, for the in-process queue, as threads of the orchestrator)
and talk to the orchestrator only through a one-way pipe of binary records (testbed/harness/records.py) and
two events (start, stop). Timestamps are ``time.monotonic_ns()``, one system-wide clock on Linux, so
records from different processes compare directly.

Stage A (``producer_main``): follows the precomputed schedule open-loop. A frame is taken at
``max(now, intended)``, so frames that stage A cannot keep up with queue in front of it and their lateness
shows as publish delay. Each message is stamped ``published`` immediately before the broker client call.

Stage B (``consumer_main``): blocks on the broker (never a polling sleep), forms a batch of up to
``batch_max`` messages within ``batch_wait_ms`` of the first, stamps ``received`` when the client
returned each message, ``start``/``end`` around the stage's work, then acks.
"""
from __future__ import annotations

import os
import signal
import time
import traceback

import brokers
import stages
from brokers.base import Endpoint
from testbed.harness import records
from testbed.config import RunConfig
from testbed.harness.envelope import Envelope, EnvelopeError, decode
from testbed.load import schedule

now_ns = time.monotonic_ns
POLL_S = 0.05
STOP_CHECK_NS = 20_000_000


def _child_init(in_process: bool) -> None:
    if not in_process:
        # Ctrl-C reaches the whole process group: the orchestrator alone handles it and stops us.
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _wait_start(start_evt, stop_evt) -> bool:
    while not start_evt.wait(POLL_S):
        if stop_evt.is_set():
            return False
    return not stop_evt.is_set()


def _fail(conn, role: str, exc: BaseException) -> None:
    from testbed.errors import TestbedError
    msg = str(exc) if isinstance(exc, TestbedError) else f"{type(exc).__name__}: {exc}"
    detail = "" if isinstance(exc, TestbedError) else "\n" + traceback.format_exc()
    try:
        conn.send_bytes(records.ERROR + f"{role}: {msg}{detail}".encode())
    except (OSError, ValueError):
        pass


def producer_main(cfg_dict: dict, ep_dict: dict, topic: str, conn, start_evt, stop_evt, t0, in_process=False):
    _child_init(in_process)
    cfg = RunConfig.from_dict(cfg_dict)
    broker = None
    try:
        stage = stages.make(cfg, "producer")
        stage.setup()
        broker = brokers.get(cfg.broker)(Endpoint(**ep_dict))
        broker.connect(cfg.connect_timeout)
        broker.wait_consumers(topic, cfg.replicas, cfg.connect_timeout)
        offsets = schedule(cfg.arrival, cfg.rate, cfg.duration, cfg.seed).tolist()
        rep = records.Reporter(conn, records.FRAME_DTYPE, records.FRAMES)
        rep.send_json(records.READY, {"role": "producer", "pid": os.getpid(), "stage": stage.describe()})
        if not _wait_start(start_evt, stop_evt):
            return
        start0 = t0.value
        publish = broker.publish_envelope
        seq = 0
        frames = 0
        next_check = 0
        for fid, off in enumerate(offsets):
            intended = start0 + off
            delay = intended - now_ns()
            if delay > 0:
                time.sleep(delay / 1e9)
            if intended >= next_check:  # an Event check costs ~1 us: look every 20 ms of schedule
                if stop_evt.is_set():
                    break
                next_check = intended + STOP_CHECK_NS
            start = now_ns()
            res = stage.process(fid)
            end = now_ns()
            items = res.items
            n = len(items)
            for i, item in enumerate(items):
                env = Envelope(seq + i, fid, i, n, intended, 0, item.payload, item.shape, item.dtype, res.steps)
                env.published_ns = now_ns()
                publish(topic, env)
            pub = now_ns()
            if res.failed:
                rep.send_json(records.FAILED, {"frame_id": fid, "reason": res.failed})
            rep.add((fid, seq, n, 1 if res.failed else 0, intended, start, end, pub))
            seq += n
            frames += 1
            rep.maybe_flush(pub)
        broker.flush()
        rep.flush()
        rep.send_json(records.DONE, {"frames": frames, "sent": seq})
        stage.close()
        # Keep the connection open until the orchestrator has drained: closing right after the last
        # send can drop the tail (ZeroMQ does, even with LINGER).
        while not stop_evt.wait(POLL_S):
            pass
        rep.send_json(records.STOPPED, {"role": "producer"})
    except BaseException as exc:  # noqa: BLE001 - reported to the orchestrator, which decides
        _fail(conn, "stage A (producer)", exc)
    finally:
        if broker is not None:
            try:
                broker.close()
            except Exception:  # noqa: BLE001
                pass
        if not in_process:
            conn.close()


def consumer_main(cfg_dict: dict, ep_dict: dict, topic: str, replica: int, conn, start_evt, stop_evt, t0,
                  in_process=False):
    _child_init(in_process)
    cfg = RunConfig.from_dict(cfg_dict)
    broker = None
    try:
        stage = stages.make(cfg, "consumer", replica)
        stage.setup()
        a_steps, b_steps = stages.step_names(cfg.pipeline)
        rep = records.Reporter(conn, records.message_dtype(a_steps, b_steps), records.MESSAGES)
        broker = brokers.get(cfg.broker)(Endpoint(**ep_dict))
        broker.connect(cfg.connect_timeout)
        broker.subscribe(topic, f"testbed-{topic}", f"consumer-{replica}")
        broker.wait_assigned(cfg.connect_timeout)
        rep.send_json(records.READY, {"role": "consumer", "replica": replica, "pid": os.getpid(),
                                      "stage": stage.describe()})
        if not _wait_start(start_evt, stop_evt):
            return
        batch_max = cfg.batch_max
        wait_ns = int(cfg.batch_wait_ms * 1e6)
        receive, ack, process = broker.receive, broker.ack, stage.process
        corrupt = 0
        done = 0
        next_check = 0
        while True:
            got = receive(batch_max, POLL_S)
            t = now_ns()
            if t >= next_check:  # an Event check costs ~1 us: look every 20 ms
                if stop_evt.is_set():
                    break
                next_check = t + STOP_CHECK_NS
            if not got:
                rep.maybe_flush(t)
                continue
            received = [t] * len(got)
            if wait_ns and len(got) < batch_max:
                deadline = t + wait_ns
                while len(got) < batch_max:
                    left = deadline - now_ns()
                    if left <= 0:
                        break
                    more = receive(batch_max - len(got), left / 1e9)
                    if more:
                        got.extend(more)
                        received.extend([now_ns()] * len(more))
            envs, recv_ok = [], []
            for d, r in zip(got, received):
                try:
                    envs.append(decode(d.data))
                    recv_ok.append(r)
                except EnvelopeError:
                    corrupt += 1
            start = now_ns()
            steps = process(envs) if envs else ()
            end = now_ns()
            ack(got)
            nb = len(envs)
            for env, r in zip(envs, recv_ok):
                rep.add((env.seq, env.frame_id, env.index, env.count, replica, nb, env.intended_ns,
                         env.published_ns, r, start, end, *env.steps, *steps))
            done += nb
            rep.maybe_flush(end)
        rep.flush()
        stage.close()
        rep.send_json(records.STOPPED, {"role": "consumer", "replica": replica, "done": done, "corrupt": corrupt})
    except BaseException as exc:  # noqa: BLE001
        _fail(conn, f"stage B (consumer {replica})", exc)
    finally:
        if broker is not None:
            try:
                broker.close()
            except Exception:  # noqa: BLE001
                pass
        if not in_process:
            conn.close()
