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

In a run with faults (``cfg.faults``) neither loop dies on a broker error: each error is counted,
the client is dropped and made again with capped exponential backoff (``Reconnect``), a consumer
subscribes again (and so resumes its group), and stage A keeps the schedule: a message it could not
publish gets a publish record with status ``PUBLISH_FAILED`` or ``NOT_SENT`` and its reason is counted.
Without faults the first broker error ends the run (one line), as always.

Both loops also time the broker client calls (publish, receive, ack) apart from their own bookkeeping
(see records.py for the fields), with a few extra clock reads per message and per batch and no other
per-message work: the client calls are the broker's cost to a stage, the bookkeeping is ours.
"""
from __future__ import annotations

import os
import signal
import struct
import time
import traceback
from collections import Counter

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


BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 0.5
RECONNECT_TIMEOUT_S = 2.0
_SEQ = struct.Struct("<Q")  # the envelope header's seq, at byte 8


class Reconnect:
    """A broker client made again after a failure, at most once per backoff (doubling to a cap)."""

    def __init__(self, cfg: RunConfig, ep_dict: dict, setup=None):
        self.cfg, self.ep_dict, self.setup = cfg, ep_dict, setup
        self.backoff = BACKOFF_MIN_S
        self.retry_at = 0.0
        self.reconnects = 0

    def drop(self, broker) -> None:
        """Forget a failed client; the next ``attempt`` may make a new one after the backoff."""
        if broker is not None:
            try:
                broker.close()
            except Exception:  # noqa: BLE001 - it failed already
                pass
        self.retry_at = time.monotonic() + self.backoff
        self.backoff = min(BACKOFF_MAX_S, self.backoff * 2)

    def attempt(self):
        """A connected client, or None (not yet time to retry, or the retry failed)."""
        if time.monotonic() < self.retry_at:
            return None
        broker = brokers.get(self.cfg.broker)(Endpoint(**self.ep_dict))
        try:
            broker.connect(min(self.cfg.connect_timeout, RECONNECT_TIMEOUT_S))
            if self.setup is not None:
                self.setup(broker)
        except Exception:  # noqa: BLE001 - still down: try again later
            self.drop(broker)
            return None
        self.backoff = BACKOFF_MIN_S
        self.reconnects += 1
        return broker


def _reason(exc: BaseException) -> str:
    """A short, countable reason (the first line, without numbers that differ per message)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return " ".join(text.split())[:160]


def _fail(conn, role: str, exc: BaseException) -> None:
    from testbed.errors import TestbedError
    msg = str(exc) if isinstance(exc, TestbedError) else f"{type(exc).__name__}: {exc}"
    detail = "" if isinstance(exc, TestbedError) else "\n" + traceback.format_exc()
    try:
        conn.send_bytes(records.ERROR + f"{role}: {msg}{detail}".encode())
    except (OSError, ValueError):
        pass


class _Down(Exception):
    """No client now (a fault run after a failure): reconnect first."""


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
        survive = bool(cfg.faults)
        again = Reconnect(cfg, ep_dict)
        reasons: Counter = Counter()
        ok = records.ACKED if broker.acknowledged else records.SENT  # what a publish that returned means
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
                if survive and broker is None:
                    broker = again.attempt()
                    if broker is None:
                        reasons["not sent: no connection to the broker"] += 1
                        add_call((seq + i, 0, records.NOT_SENT))
                        continue
                    publish, publish_env = broker.publish, broker.publish_envelope
                    ok = records.ACKED if broker.acknowledged else records.SENT
                    env.published_ns = now_ns()
                try:
                    if own_encode:
                        head = env.header()
                        c0 = now_ns()
                        publish(topic, head, env.payload)
                    else:
                        c0 = env.published_ns
                        publish_env(topic, env)
                except Exception as exc:  # noqa: BLE001 - in a fault run: counted, then reconnect
                    if not survive:
                        raise
                    c1 = now_ns()
                    calls += c1 - env.published_ns
                    reasons[_reason(exc)] += 1
                    add_call((seq + i, c1 - env.published_ns, records.PUBLISH_FAILED))
                    if not broker.reconnects_itself:
                        again.drop(broker)
                        broker = None
                    continue
                c1 = now_ns()
                calls += c1 - c0
                add_call((seq + i, c1 - c0, ok))
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
        if survive:
            while broker is None and not stop_evt.is_set():  # the last messages' acks need a client
                broker = again.attempt()
                if broker is None:
                    time.sleep(BACKOFF_MIN_S)
            try:
                if broker is not None:
                    broker.flush()
            except Exception as exc:  # noqa: BLE001
                reasons[_reason(exc)] += 1
            if broker is not None:
                _mark_failed(broker, prep, reasons)
        else:
            broker.flush()
        prep.flush()
        rep.flush()
        rep.send_json(records.DONE, {"frames": frames, "sent": seq, "publish_errors": dict(reasons),
                                     "reconnects": again.reconnects})
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


def _mark_failed(broker, prep, reasons: Counter) -> None:
    """Messages whose asynchronous publish failed after the call returned (the adapter's
    ``take_failed``: their bytes, header first) are recorded again with status PUBLISH_FAILED (the
    orchestrator keeps a seq's worst status)."""
    take = getattr(broker, "take_failed", None)
    for data, why in (take() if take is not None else ()):
        try:
            seq = _SEQ.unpack_from(data, 8)[0]
        except (struct.error, TypeError):
            continue
        reasons[_reason(why)] += 1
        prep.rows.append((seq, 0, records.PUBLISH_FAILED))


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
        survive = bool(cfg.faults)
        again = Reconnect(cfg, ep_dict, lambda b: b.subscribe(topic, f"testbed-{topic}", f"consumer-{replica}"))
        errors: Counter = Counter()
        broker = brokers.get(cfg.broker)(Endpoint(**ep_dict))
        try:
            broker.connect(cfg.connect_timeout)
            broker.subscribe(topic, f"testbed-{topic}", f"consumer-{replica}")
        except Exception:  # noqa: BLE001 - a replica restarted mid-fault: retry until it is stopped
            if not survive:
                raise
            errors["receive"] += 1
            again.drop(broker)
            while (broker := again.attempt()) is None:
                if stop_evt.is_set():
                    return
                time.sleep(BACKOFF_MIN_S)
        try:
            broker.wait_assigned(cfg.connect_timeout)
        except Exception:  # noqa: BLE001 - fault run: a group that rebalances late still assigns us
            if not survive:
                raise
            errors["receive"] += 1
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
            try:
                if broker is None:
                    raise _Down
                got = receive(batch_max, POLL_S)
            except Exception as exc:  # noqa: BLE001 - in a fault run: counted, then reconnect
                if not survive:
                    raise
                if not isinstance(exc, _Down):
                    errors["receive"] += 1
                    if broker.reconnects_itself:
                        time.sleep(BACKOFF_MIN_S)
                        continue
                    again.drop(broker)
                broker = again.attempt()
                if broker is None:
                    if stop_evt.is_set():
                        break
                    time.sleep(BACKOFF_MIN_S)
                else:
                    receive, ack = broker.receive, broker.ack
                mark = now_ns()
                continue
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
            try:
                ack(got)
            except Exception:  # noqa: BLE001 - in a fault run: counted (the broker redelivers them)
                if not survive:
                    raise
                errors["ack"] += 1
                if not broker.reconnects_itself:
                    again.drop(broker)
                    broker = None
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
            if survive:  # a replica may be SIGKILLed: ship each batch's records at once, not every 50 ms
                rep.flush(free)
            mark = free
        rep.flush()
        stage.close()
        rep.send_json(records.STOPPED, {"role": "consumer", "replica": replica, "done": done, "corrupt": corrupt,
                                        "receive_errors": errors["receive"], "ack_errors": errors["ack"],
                                        "reconnects": again.reconnects})
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
