"""Stage B's records built in bulk from the received headers (testbed/harness/message_log.py): the same
records a per-message decode gives, whichever path builds them, with corrupt messages left out and counted."""
from __future__ import annotations

import numpy as np
import pytest

from testbed.harness import records
from testbed.harness.envelope import Envelope, decode, encode, encode_header
from testbed.harness.message_log import BULK_FROM, MessageLog, head_of


class Pipe:
    def __init__(self):
        self.chunks = []

    def send_bytes(self, data):
        self.chunks.append(data)


A_STEPS, B_STEPS = ("decode", "infer"), ("prep",)


def make_log(a_steps=A_STEPS, b_steps=B_STEPS):
    pipe = Pipe()
    dtype = records.message_dtype(a_steps, b_steps)
    return MessageLog(pipe, dtype, records.MESSAGES, a_steps, b_steps, replica=3,
                      skip=records.JOINED_FIELDS), pipe, dtype


def envelope(seq, nsteps=2):
    return Envelope(seq, 1000 + seq // 3, seq % 3, 3, 10_000 + seq, 20_000 + seq, bytes(100), (100,), "uint8",
                    tuple(range(7 * seq, 7 * seq + nsteps)))


def feed(log, datas, per_batch=3, per_group=2):
    """``datas`` in batches of ``per_batch`` formed from receive calls of ``per_group``; the expected rows
    of the well-formed ones, as the per-message decode builds them."""
    expected = []
    for b0 in range(0, len(datas), per_batch):
        batch = datas[b0:b0 + per_batch]
        groups = []
        for g0 in range(0, len(batch), per_group):
            part = batch[g0:g0 + per_group]
            log.add([head_of(d, log.size) for d in part])
            received, call = 5_000 + b0 * 10 + g0, 70 + g0
            log.group(len(part), received, call)
            groups += [(received, call)] * len(part)
        ok = []
        for d, (r, c) in zip(batch, groups):
            try:
                env = decode(d)
            except Exception:  # noqa: BLE001 - corrupt
                continue
            if len(env.steps) == len(A_STEPS):
                ok.append((env, r, c))
        start, end, free, ack, bh = 100 + b0, 200 + b0, 50 + b0, 9 + b0, 4 + b0
        log.batch(len(batch), start, end, free, ack, bh, (b0 * 11,))
        for env, r, c in ok:
            expected.append((env.seq, env.frame_id, env.index, env.count, 3, len(ok), env.intended_ns,
                             env.published_ns, r, start, end, free, c, ack, bh, 0, 0, *env.steps, b0 * 11))
    return expected


def shipped(pipe, dtype):
    parts = [records.parse(c, dtype)[1] for c in pipe.chunks]
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


@pytest.mark.parametrize("n", [1, 7, BULK_FROM - 1, BULK_FROM, 3 * BULK_FROM + 5])
def test_records_equal_a_per_message_decode_on_either_path(n):
    log, pipe, dtype = make_log()
    forms = [lambda e: [encode_header(e), e.payload], lambda e: encode(e), lambda e: e]  # split, joined, in-process
    datas = [forms[i % 3](envelope(i)) for i in range(n)]
    expected = feed(log, datas)
    log.flush()
    got = shipped(pipe, dtype)
    assert [tuple(r) for r in got.tolist()] == expected
    assert log.corrupt == 0 and log.shipped == n


@pytest.mark.parametrize("n", [9, 2 * BULK_FROM])
def test_corrupt_messages_are_left_out_counted_and_not_in_their_batch_size(n):
    log, pipe, dtype = make_log()
    datas = []
    for i in range(n):
        e = envelope(i)
        kind = i % 9
        if kind == 1:
            datas.append(b"\x00" * 200)                       # not an envelope
        elif kind == 4:
            datas.append([b"TBE1short", e.payload])           # a header cut short
        elif kind == 6:
            datas.append([encode_header(envelope(i, 3)), e.payload])  # another stage A's step count
        else:
            datas.append([encode_header(e), e.payload])
    expected = feed(log, datas)
    log.flush()
    got = shipped(pipe, dtype)
    assert [tuple(r) for r in got.tolist()] == expected
    assert log.corrupt == n - len(expected) > 0


def test_a_flush_ships_only_batches_already_given():
    log, pipe, dtype = make_log((), ())
    for i in range(2):
        log.add([encode_header(Envelope(i, i, 0, 1, 1, 2, b"x"))])
        log.group(1, 10 + i, 1)
        log.batch(1, 1, 2, 3, 4, 5)
    log.add([encode_header(Envelope(2, 2, 0, 1, 1, 2, b"x"))])  # the batch in service
    log.group(1, 12, 1)
    log.flush(99)
    assert [int(s) for s in shipped(pipe, dtype)["seq"]] == [0, 1]
    log.batch(1, 1, 2, 3, 4, 5)
    log.flush()
    assert [int(s) for s in shipped(pipe, dtype)["seq"]] == [0, 1, 2]
