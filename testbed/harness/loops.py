"""The harness side of the stages: the loops that run stage A and stage B and stamp every clock.

Both loops run as separate OS processes (or, for the in-process queue, as threads of the orchestrator)
and talk to the orchestrator only through a one-way pipe of binary records (testbed/harness/records.py) and
two events (start, stop). Timestamps are ``time.monotonic_ns()``, one system-wide clock on Linux, so
records from different processes compare directly.

Stage A (``producer_main``): follows the precomputed schedule open-loop. A frame is taken at
``max(now, intended)``, so frames that stage A cannot keep up with queue in front of it and their lateness
shows as publish delay. Each message is stamped ``published`` immediately before its header is encoded
and handed to the broker client.

Stage B (``consumer_main``): blocks on the broker (never a polling sleep), forms a batch of up to
``batch_max`` messages within ``batch_wait_ms`` of the first, stamps ``received`` when the client
returned each message, ``start``/``end`` around the stage's work, then acks.

Both loops also time the broker client calls (publish, receive, ack) apart from their own bookkeeping
(see records.py for the fields), with a few extra clock reads per message and per batch and no other
per-message work: the client calls are the broker's cost to a stage, the bookkeeping is ours.
"""
from __future__ import annotations

import os
import signal
import time
import traceback

import brokers
import stages
from brokers.base import Broker, Endpoint
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
        prep = records.Reporter(conn, records.PUBLISH_DTYPE, records.PUBLISHES)
        rep.send_json(records.READY, {"role": "producer", "pid": os.getpid(), "stage": stage.describe()})
        if not _wait_start(start_evt, stop_evt):
            return
        start0 = t0.value
        # The base publish_envelope encodes the header and calls publish: do that here, so the
        # encoding counts as our bookkeeping and only the client call as publish_call. An adapter
        # with its own publish_envelope (the in-process queue passes envelopes) is timed as a whole.
        own_encode = type(broker).publish_envelope is Broker.publish_envelope
        publish, publish_env = broker.publish, broker.publish_envelope
        add_call = prep.rows.append
        seq = 0
        frames = 0
        next_check = 0
        for fid, off in enumerate(offsets):
            intended = start0 + off
            top = now_ns()
            delay = intended - top
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
            calls = 0
            for i, item in enumerate(items):
                env = Envelope(seq + i, fid, i, n, intended, 0, item.payload, item.shape, item.dtype, res.steps)
                env.published_ns = now_ns()
                if own_encode:
                    head = env.header()
                    c0 = now_ns()
                    publish(topic, head, env.payload)
                else:
                    c0 = env.published_ns
                    publish_env(topic, env)
                c1 = now_ns()
                calls += c1 - c0
                add_call((seq + i, c1 - c0))
            pub = now_ns()
            if res.failed:
                rep.send_json(records.FAILED, {"frame_id": fid, "reason": res.failed})
            rep.maybe_flush(pub)
            prep.maybe_flush(pub)
            # bookkeeping: the loop's time outside the stage's work and the publish calls (and, when
            # the frame is late so nothing sleeps, the loop's top)
            a_harness = now_ns() - end - calls + (start - top if delay <= 0 else 0)
            rep.add((fid, seq, n, 1 if res.failed else 0, intended, start, end, pub, a_harness))
            seq += n
            frames += 1
        broker.flush()
        prep.flush()
        rep.flush()
        rep.send_json(records.DONE, {"frames": frames, "sent": seq})
        stage.close()
        # Keep the connection open until the orchestrator has drained: closing right after the last
        # send can drop the tail (a brokerless socket transport does, even with its linger set).
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
        rep = records.Reporter(conn, records.message_dtype(a_steps, b_steps), records.MESSAGES, tail="b_harness",
                               skip=records.JOINED_FIELDS)
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
        add = rep.rows.append
        corrupt = 0
        done = 0
        next_check = 0
        # free: when this replica could take the next batch; mark: where the bookkeeping being
        # counted for the next batch began (moved past idle receive calls, which are not cost)
        free = mark = now_ns()
        while True:
            c0 = now_ns()
            got = receive(batch_max, POLL_S)
            t = now_ns()
            if t >= next_check:  # an Event check costs ~1 us: look every 20 ms
                if stop_evt.is_set():
                    break
                next_check = t + STOP_CHECK_NS
            if not got:
                rep.maybe_flush(t)
                mark = now_ns()
                continue
            in_calls = t - c0  # time inside receive calls for this batch
            received = [t] * len(got)
            calls = [in_calls] * len(got)
            if wait_ns and len(got) < batch_max:
                deadline = t + wait_ns
                while len(got) < batch_max:
                    c1 = now_ns()
                    left = deadline - c1
                    if left <= 0:
                        break
                    more = receive(batch_max - len(got), left / 1e9)
                    t1 = now_ns()
                    in_calls += t1 - c1
                    if more:
                        got.extend(more)
                        received.extend([t1] * len(more))
                        calls.extend([t1 - c1] * len(more))
            try:
                envs = [decode(d.data) for d in got]
            except EnvelopeError:
                envs, ok_r, ok_c = [], [], []
                for d, r, c in zip(got, received, calls):
                    try:
                        envs.append(decode(d.data))
                        ok_r.append(r)
                        ok_c.append(c)
                    except EnvelopeError:
                        corrupt += 1
                received, calls = ok_r, ok_c
            start = now_ns()
            steps = process(envs) if envs else ()
            end = now_ns()
            ack(got)
            acked = now_ns()
            ack_call = acked - end
            rep.maybe_flush(acked)  # ships earlier batches only: this one's rows come next
            nb = len(envs)
            for env, r, c in zip(envs, received, calls):
                add((env.seq, env.frame_id, env.index, env.count, replica, nb, env.intended_ns,
                     env.published_ns, r, start, end, free, c, ack_call, *env.steps, *steps))
            done += nb
            free = now_ns()
            rep.end_batch(nb, start - mark - in_calls + free - acked)
            mark = free
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
