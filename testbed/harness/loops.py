"""The harness side of the stages: the loops that run stage A and stage B and stamp every clock.

Both loops run as separate OS processes (or, for the in-process queue, as threads of the orchestrator)
and talk to the orchestrator only through a one-way pipe of binary records (testbed/harness/records.py) and
two events (start, stop). Timestamps are ``time.monotonic_ns()``, one system-wide clock on Linux, so
records from different processes compare directly.

Stage A (``producer_main``, one per camera stream: testbed/load/streams.py): follows the precomputed
schedule open-loop. A frame is taken at ``max(now, intended)``, so frames that stage A cannot keep up with
queue in front of it and their lateness shows as publish delay; the wait for a frame that is not yet due
sleeps to a tracked margin and spins the rest (testbed/load/pacing.py), so it ends on time. Each message
is stamped ``published`` immediately before its header is built and handed to the broker client. In a
closed-loop run (``--arrival closed:K``) stage A keeps K frames in flight instead: it releases a new frame
(its intended time) each time the stage B replicas report one of its frames finished, over a side channel
that does not cross the broker (testbed/harness/completions.py).

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

import collections
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
from testbed.harness.envelope import (MAGIC, Envelope, EnvelopeError, decode, header_size, item_layout, pack_fixed,
                                      steps_bytes)
from testbed.harness.message_log import MessageLog, head_of
from testbed.load import closed_window, schedule, stream_config
from testbed.load.pacing import Pacer

now_ns = time.monotonic_ns
POLL_S = 0.05
STOP_CHECK_NS = 20_000_000
#: stage B looks at the stop event this often while it is busy (at every empty receive when idle)
BUSY_STOP_CHECK_NS = 100_000_000


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


def producer_main(cfg_dict: dict, ep_dict: dict, topic: str, conn, start_evt, stop_evt, t0, in_process=False,
                  stream: int = 0, done_at=None):
    """Stage A of camera stream ``stream`` (0 .. streams-1; testbed/load/streams.py: its rate, seed, frame
    numbers and seqs). ``done_at``: (host, port) where this stage listens for finished messages in a
    closed-loop run (testbed/harness/completions.py); None in open loop."""
    _child_init(in_process)
    cfg = RunConfig.from_dict(cfg_dict)
    scfg = stream_config(cfg, stream)  # this stream's rate and seed (cfg itself with one stream)
    broker = None
    listener = None
    try:
        window = closed_window(cfg.arrival)
        if window:
            from testbed.harness.completions import Listener
            listener = Listener(done_at[0], int(done_at[1]), stream)
        stage = stages.make(scfg, "producer")
        stage.setup()
        broker = brokers.get(cfg.broker)(Endpoint(**ep_dict))
        broker.connect(cfg.connect_timeout)
        broker.open_stream(stream, cfg.streams)
        broker.wait_consumers(topic, cfg.replicas, cfg.connect_timeout)
        offsets = None if window else schedule(scfg.arrival, scfg.rate, scfg.duration, scfg.seed).tolist()
        rep = records.FlatReporter(conn, records.FRAME_DTYPE, records.FRAMES)
        prep = records.FlatReporter(conn, records.PUBLISH_DTYPE, records.PUBLISHES)
        ready = {"role": "producer", "pid": os.getpid(), "stage": stage.describe()}
        if cfg.streams > 1:
            ready.update(stream=stream, seed=scfg.seed, rate=scfg.rate)
        if listener is not None:
            ready["closed_loop"] = {"window": window, "listen": "%s:%d" % listener.address}
        rep.send_json(records.READY, ready)
        if not _wait_start(start_evt, stop_evt):
            return
        a = _StageA(cfg, ep_dict, topic, stream, stage, broker, rep, prep)
        if listener is None:
            a.open_loop(t0.value, offsets, stop_evt)
        else:
            a.closed_loop(t0.value, window, listener, stop_evt)
        broker = a.client
        reasons = a.reasons
        if a.survive:
            while broker is None and not stop_evt.is_set():  # the last messages' acks need a client
                broker = a.again.attempt()
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
        bins = getattr(broker, "take_ack_bins", None) if broker is not None else None
        rep.send_json(records.DONE, {"frames": a.frames, "sent": a.sent, "publish_errors": dict(reasons),
                                     "reconnects": a.again.reconnects, "stream": stream,
                                     # when acknowledgements arrived, for a client whose calls return first
                                     # (10 ms bins of the monotonic clock: testbed/analysis/availability.py)
                                     "ack_bins": bins() if bins is not None else None})
        stage.close()
        # Keep the connection open until the orchestrator has drained: closing right after the last
        # send can drop the tail (a brokerless socket transport does, even with its linger set).
        while not stop_evt.wait(POLL_S):
            if listener is not None:
                listener.poll(0)  # keep reading what the replicas report, so their sends never block
        rep.send_json(records.STOPPED, {"role": "producer", "stream": stream})
    except BaseException as exc:  # noqa: BLE001 - reported to the orchestrator, which decides
        _fail(conn, "stage A (producer)" if cfg.streams == 1 else f"stage A (producer, stream {stream})", exc)
    finally:
        if broker is not None:
            try:
                broker.close()
            except Exception:  # noqa: BLE001
                pass
        if listener is not None:
            listener.close()
        if not in_process:
            conn.close()


class _StageA:
    """Stage A's frame loop for one stream: open loop (a precomputed schedule) or closed loop (K frames in
    flight). ``frame`` takes one frame: the stage's work, then its messages' headers built and published
    one by one, every publish call timed, the frame's bookkeeping measured (``_frame_function``)."""

    def __init__(self, cfg: RunConfig, ep_dict: dict, topic: str, stream: int, stage, broker, rep, prep):
        self.cfg, self.topic, self.stage, self.broker = cfg, topic, stage, broker
        self.rep, self.prep = rep, prep
        self.stream, self.streams = stream, cfg.streams
        self.survive = bool(cfg.faults)
        self.again = Reconnect(cfg, ep_dict, lambda b: b.open_stream(stream, cfg.streams))
        self.reasons: Counter = Counter()
        self.pacer = Pacer()
        self.k = 0          # messages this stream has published (its own count; seq = k * streams + stream)
        self.frames = 0
        self.frame = self._frame_function()

    @property
    def sent(self) -> int:
        return self.k

    @property
    def client(self):
        """The broker client now (None in a fault run that could not reconnect yet)."""
        return self._state[0]

    def open_loop(self, start0: int, offsets: list, stop_evt) -> None:
        frame, wait = self.frame, self.pacer.wait_until
        next_check = 0
        for fid, off in enumerate(offsets):
            intended = start0 + off
            top = now_ns()
            late = intended <= top
            if not late:
                wait(intended)
            if intended >= next_check:  # an Event check costs ~1 us: look every 20 ms of schedule
                if stop_evt.is_set():
                    break
                next_check = intended + STOP_CHECK_NS
            frame(fid, intended, top, late)

    def closed_loop(self, start0: int, window: int, listener, stop_evt) -> None:
        """K = ``window`` frames in flight: K released at the start, then one each time one of this stream's
        frames has finished at stage B (all its messages' service ended; a frame without messages at once).
        A frame's intended time is when it was released: when stage A learnt a slot was free."""
        frame, poll = self.frame, listener.poll
        end_ns = start0 + int(self.cfg.duration * 1e9)
        slots = collections.deque([start0] * window)  # release times of frames that may be taken now
        fid = 0
        next_check = 0
        while True:
            if not slots:
                t = now_ns()
                if t >= end_ns:
                    break
                if t >= next_check:
                    if stop_evt.is_set():
                        break
                    next_check = t + STOP_CHECK_NS
                got = poll(min(POLL_S, (end_ns - t) / 1e9))
                if got:
                    slots.extend([now_ns()] * got)
                continue
            intended = slots.popleft()
            if intended >= end_ns:
                break
            top = now_ns()
            late = intended <= top
            if not late:
                self.pacer.wait_until(intended)
            if top >= next_check:
                if stop_evt.is_set():
                    break
                next_check = top + STOP_CHECK_NS
            n = frame(fid, intended, top, late)
            if n:
                listener.expect(fid, n)
            else:
                slots.append(now_ns())  # nothing to wait for: finished at once
            fid += 1
            got = poll(0)
            if got:
                slots.extend([now_ns()] * got)

    def _frame_function(self):
        """``frame(fid, intended, top, late) -> messages``: one frame, as a closure over everything that stays
        the same from frame to frame (the loop's per-message cost is what a run can offer at most).

        The base publish_envelope encodes the header and calls publish: the closure builds the header
        itself (the envelope's layout, testbed/harness/envelope.py) so the encoding counts as our bookkeeping
        and only the client call as publish_call. An adapter with its own publish_envelope (the in-process
        queue passes envelopes) is timed as a whole.
        """
        a = self
        process = self.stage.process
        topic, stream, streams, survive = self.topic, self.stream, self.streams, self.survive
        add_call = self.prep.add
        rep, prep, reasons, again = self.rep, self.prep, self.reasons, self.again
        # the records' buffers, packed in place (records.FlatReporter): one C call per row, no call layer
        pack_call, call_buf, call_at, call_end, call_size = prep.pack_into, prep.buf, prep.at, prep.end, prep.size
        pack_frame, frame_buf, frame_at, limit, frame_size = rep.pack_into, rep.buf, rep.at, rep.end, rep.size
        interval = rep.interval_ns
        ACKED, SENT, FAILED, NOT_SENT = records.ACKED, records.SENT, records.PUBLISH_FAILED, records.NOT_SENT
        # the client and its bound calls (made again after a reconnect): broker, own, publish, publish_env, ok
        state = self._state = [None, False, None, None, SENT]

        def bind(broker):
            if broker is None:
                state[0] = None
                return
            state[:] = [broker, type(broker).publish_envelope is Broker.publish_envelope, broker.publish,
                        broker.publish_envelope, ACKED if broker.acknowledged else SENT]
        bind(self.broker)
        k = 0
        next_flush = 0
        lay_p = lay_s = lay_d = None  # the payload layout last computed (a frame's items are often alike)
        dt = nd = d0 = d1 = d2 = d3 = 0

        def frame(fid, intended, top, late):
            nonlocal k, next_flush, lay_p, lay_s, lay_d, dt, nd, d0, d1, d2, d3
            start = now_ns()
            res = process(fid)
            end = now_ns()
            items = res.items
            n = len(items)
            seq = seq0 = k * streams + stream  # seq of the frame's first message
            calls = 0
            if n:
                broker, own, publish, publish_env, ok = state
                steps = res.steps
                nsteps = len(steps)
                tail = steps_bytes(steps) if nsteps else b""
                i = 0
                for item in items:
                    payload = item.payload
                    if survive and broker is None:
                        broker = again.attempt()
                        bind(broker)
                        if broker is None:
                            reasons["not sent: no connection to the broker"] += 1
                            add_call((seq, 0, NOT_SENT))
                            seq += streams
                            i += 1
                            continue
                        broker, own, publish, publish_env, ok = state
                    p = now_ns()
                    try:
                        if own:
                            if payload is not lay_p or item.shape is not lay_s or item.dtype is not lay_d:
                                dt, nd, d0, d1, d2, d3 = item_layout(payload, item.shape, item.dtype)
                                lay_p, lay_s, lay_d = payload, item.shape, item.dtype
                            head = pack_fixed(MAGIC, dt, nd, nsteps, seq, fid, i, n, intended, p, d0, d1, d2, d3)
                            if nsteps:
                                head += tail
                            c0 = now_ns()
                            publish(topic, head, payload)
                        else:
                            c0 = p
                            publish_env(topic, Envelope(seq, fid, i, n, intended, p, payload, item.shape,
                                                        item.dtype, steps))
                    except Exception as exc:  # noqa: BLE001 - in a fault run: counted, then reconnect
                        if not survive:
                            raise
                        c1 = now_ns()
                        calls += c1 - p
                        reasons[_reason(exc)] += 1
                        add_call((seq, c1 - p, FAILED))
                        if not broker.reconnects_itself:
                            again.drop(broker)
                            broker = None
                            bind(None)
                        seq += streams
                        i += 1
                        continue
                    c1 = now_ns()
                    c1 -= c0
                    calls += c1
                    o = call_at[0]
                    if o >= call_end:
                        prep.flush(c0)
                        o = call_at[0]
                    pack_call(call_buf, o, seq, c1, ok)
                    call_at[0] = o + call_size
                    seq += streams
                    i += 1
                k += n
                a.k = k
            pub = now_ns()
            failed = res.failed
            if failed:
                rep.send_json(records.FAILED, {"frame_id": fid, "reason": failed}
                              if streams == 1 else {"frame_id": fid, "stream": stream, "reason": failed})
            o = frame_at[0]
            if pub >= next_flush or o >= limit:  # ship records every 50 ms (or 4096 frames)
                rep.flush(pub)
                prep.flush(pub)
                next_flush = pub + interval
                o = frame_at[0]
            # bookkeeping: the loop's time outside the stage's work and the publish calls (and, when the frame
            # is late so nothing waits, the loop's top)
            pack_frame(frame_buf, o, fid, seq0, n, 1 if failed else 0, intended, start, end, pub,
                       now_ns() - end - calls + (start - top if late else 0), stream)
            frame_at[0] = o + frame_size
            a.frames += 1
            return n
        return frame

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
        prep.add((seq, 0, records.PUBLISH_FAILED))


def _completions(cfg: RunConfig, done_to, stop_evt):
    """Stage B's end of closed loop's side channel, connected to every stream's stage A (``done_to``:
    their (host, port), by stream); None in open loop."""
    if not done_to:
        return None
    from testbed.harness.completions import Sender
    sender = Sender(done_to, cfg.streams)
    sender.connect(cfg.connect_timeout, stop_evt)
    return sender


def consumer_main(cfg_dict: dict, ep_dict: dict, topic: str, replica: int, conn, start_evt, stop_evt, t0,
                  in_process=False, done_to=()):
    """Stage B replica ``replica``. Per batch it keeps only what the records need and stamps no clock
    twice: the received headers and a few ints (testbed/harness/message_log.py builds the records in
    bulk); it decodes the messages only for a stage that reads them (``ConsumerStage.reads_messages``;
    the synthetic stage uses only a batch's length) or for closed loop's report. The stop event is
    looked at when a receive came back empty and, while busy, every ``BUSY_STOP_CHECK_NS``: an Event
    check costs ~1 us hot and ~30 us once a 10 ms service has let the caches go cold."""
    _child_init(in_process)
    cfg = RunConfig.from_dict(cfg_dict)
    broker = None
    completions = None  # closed loop (done_to: each stream's stage A address): see _completions
    try:
        stage = stages.make(cfg, "consumer", replica)
        stage.setup()
        a_steps, b_steps = stages.step_names(cfg.pipeline)
        log = MessageLog(conn, records.message_dtype(a_steps, b_steps), records.MESSAGES, a_steps, b_steps,
                         replica, skip=records.JOINED_FIELDS)
        survive = bool(cfg.faults)
        group, consumer_name = f"testbed-{topic}", f"consumer-{replica}"

        def setup(b) -> None:
            b.use_ack(cfg.ack)
            b.subscribe(topic, group, consumer_name)
        again = Reconnect(cfg, ep_dict, setup)
        errors: Counter = Counter()
        broker = brokers.get(cfg.broker)(Endpoint(**ep_dict))
        try:
            broker.connect(cfg.connect_timeout)
            setup(broker)
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
        completions = _completions(cfg, done_to, stop_evt)  # closed loop only (else None)
        log.send_json(records.READY, {"role": "consumer", "replica": replica, "pid": os.getpid(),
                                      "stage": stage.describe()})
        if not _wait_start(start_evt, stop_evt):
            return
        batch_max = cfg.batch_max
        wait_ns = int(cfg.batch_wait_ms * 1e6)
        receive, ack, process = broker.receive, broker.ack, stage.process
        decoding = getattr(stage, "reads_messages", True) or completions is not None
        hsize = header_size(len(a_steps))
        no_steps = (0,) * len(b_steps)  # a batch of corrupt messages only: not served
        add_head, add_group, add_batch = log.heads.append, log.groups.append, log.batches.append
        interval, max_rows = log.interval_ns, log.max_rows
        is_set = stop_evt.is_set
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
                    if is_set():
                        break
                    time.sleep(BACKOFF_MIN_S)
                else:
                    receive, ack = broker.receive, broker.ack
                mark = now_ns()
                continue
            t = now_ns()
            if not got:  # idle: the stop check costs the work nothing here
                if is_set():
                    break
                log.maybe_flush(t)
                mark = now_ns()
                continue
            if t >= next_check:
                if is_set():
                    break
                next_check = t + BUSY_STOP_CHECK_NS
            n = len(got)
            in_calls = t - c0  # time inside receive calls for this batch
            for d in got:  # the headers for the records, while the deliveries are fresh in the cache
                x = d.data
                if x.__class__ is list and len(x) == 2:
                    add_head(x[0])  # [header, payload]
                else:
                    add_head(x[:hsize] if x.__class__ is bytes else head_of(x, hsize))
            add_group((n, t, in_calls))
            if wait_ns and n < batch_max:
                deadline = t + wait_ns
                while n < batch_max:
                    c1 = now_ns()
                    left = deadline - c1
                    if left <= 0:
                        break
                    more = receive(batch_max - n, left / 1e9)
                    t1 = now_ns()
                    in_calls += t1 - c1
                    if more:
                        log.add([head_of(d.data, hsize) for d in more])
                        add_group((len(more), t1, t1 - c1))
                        got.extend(more)
                        n = len(got)
            envs = got
            if decoding:
                envs = []
                for d in got:
                    try:
                        envs.append(decode(d.data))
                    except EnvelopeError:  # counted by the log (its header check is the same)
                        pass
            start = now_ns()
            steps = process(envs) if envs else no_steps
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
            if completions is not None:  # closed loop: tell each stream's stage A what finished (our cost)
                completions.send(envs)
            if acked - log.last >= interval or len(log.heads) >= max_rows:
                log.flush(acked)  # ships earlier batches only: this one's come next
            fin = now_ns()
            add_batch((n, start, end, free, acked - end, start - mark - in_calls + fin - acked, *steps))
            free = mark = fin
            if survive:  # a replica may be SIGKILLed: ship each batch's records at once, not every 50 ms
                log.flush(free)
        log.flush()
        stage.close()
        log.send_json(records.STOPPED, {"role": "consumer", "replica": replica, "done": log.shipped,
                                        "corrupt": log.corrupt, "receive_errors": errors["receive"],
                                        "ack_errors": errors["ack"], "reconnects": again.reconnects})
    except BaseException as exc:  # noqa: BLE001
        _fail(conn, f"stage B (consumer {replica})", exc)
    finally:
        if completions is not None:
            completions.close()
        if broker is not None:
            try:
                broker.close()  # an async ack still held by the client goes out here
            except Exception:  # noqa: BLE001
                pass
        if not in_process:
            conn.close()
