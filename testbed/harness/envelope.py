"""The message envelope: a small fixed binary header in front of the payload bytes.

Every message that crosses a broker is ``header + payload``. The header carries the ids and the
harness's own timestamps (monotonic nanoseconds, stamped by our code, never by a broker), the payload's
shape and dtype, and the step times stage A measured for the message. Nothing is pickled: a broker is a
network input, so ``decode`` checks the magic, the version and every length before it trusts them.

Layout (little endian)::

    magic  4s   b"TBE1"
    dtype  B    index into DTYPES
    ndim   B    0..4
    nsteps H    number of int64 step times that follow the fixed part
    seq    Q    global message sequence number (dense, from 0, in publish order)
    frame  Q    frame id
    index  I    index of this message within its frame
    count  I    number of messages of the frame (fan-out of this frame)
    intended q  when the schedule said the frame was due (monotonic ns)
    published q when stage A handed the message to the broker client (monotonic ns)
    shape  4I   payload shape (unused dims are 0)
    steps  nsteps x q   stage A step times in ns, in the order the stage declares them
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

MAGIC = b"TBE1"
DTYPES = ("uint8", "float32", "float16", "int64")
_FIXED = struct.Struct("<4sBBHQQIIqq4I")
FIXED_SIZE = _FIXED.size  # 60 bytes
MAX_STEPS = 32


class EnvelopeError(ValueError):
    """A message that is not a well-formed envelope."""


@dataclass(slots=True)
class Envelope:
    seq: int
    frame_id: int
    index: int
    count: int
    intended_ns: int
    published_ns: int = 0
    payload: object = b""  # bytes, bytearray, memoryview or numpy array
    shape: tuple = ()
    dtype: str = "uint8"
    steps: tuple = field(default_factory=tuple)

    def header(self) -> bytes:
        """The binary header for this message (call after ``published_ns`` is stamped)."""
        return encode_header(self)


def header_size(nsteps: int) -> int:
    return FIXED_SIZE + 8 * nsteps


def encode_header(env: Envelope) -> bytes:
    shape = tuple(env.shape) if env.shape else (_nbytes(env.payload),)
    if len(shape) > 4:
        raise EnvelopeError(f"payload has {len(shape)} dimensions; at most 4 are carried")
    dims = shape + (0,) * (4 - len(shape))
    nsteps = len(env.steps)
    head = _FIXED.pack(MAGIC, DTYPES.index(env.dtype), len(shape), nsteps, env.seq, env.frame_id,
                       env.index, env.count, env.intended_ns, env.published_ns, *dims)
    if nsteps:
        head += struct.pack(f"<{nsteps}q", *env.steps)
    return head


#: the fixed part's packer, for a stage that builds headers itself (stage A's loop: ``item_layout`` once per
#: payload layout, then per message ``pack_fixed(MAGIC, dtype, ndim, nsteps, seq, frame, index, count,
#: intended, published, d0, d1, d2, d3) + steps_bytes(steps)``: the same bytes as ``encode_header``)
pack_fixed = _FIXED.pack


def item_layout(payload, shape=(), dtype: str = "uint8") -> tuple[int, int, int, int, int, int]:
    """(dtype index, ndim, d0, d1, d2, d3) of a payload, checked as ``encode_header`` checks them."""
    shape = tuple(shape) if shape else (_nbytes(payload),)
    if len(shape) > 4:
        raise EnvelopeError(f"payload has {len(shape)} dimensions; at most 4 are carried")
    dims = shape + (0,) * (4 - len(shape))
    return (DTYPES.index(dtype), len(shape), *dims)


def steps_bytes(steps) -> bytes:
    """The step times that follow the fixed part (b"" for none)."""
    return struct.pack(f"<{len(steps)}q", *steps) if steps else b""


def encode(env: Envelope) -> bytes:
    """Header and payload as one bytes object (for brokers that carry one buffer per message)."""
    return encode_header(env) + bytes(memoryview(env.payload).cast("B"))


def decode(parts) -> Envelope:
    """Parse one message: either one buffer (header + payload) or ``[header, payload]``.

    The payload is returned as a zero-copy memoryview into the received buffer.
    """
    if isinstance(parts, Envelope):
        return parts  # the in-process queue passes envelopes through, unserialised
    if isinstance(parts, (list, tuple)):
        if len(parts) == 2:
            head, payload = memoryview(parts[0]), memoryview(parts[1])
        elif len(parts) == 1:
            head, payload = memoryview(parts[0]), None
        else:
            raise EnvelopeError(f"expected 1 or 2 message parts, got {len(parts)}")
    else:
        head, payload = memoryview(parts), None
    if head.nbytes < FIXED_SIZE:
        raise EnvelopeError(f"message of {head.nbytes} bytes is shorter than the {FIXED_SIZE}-byte header")
    (magic, dtype, ndim, nsteps, seq, frame_id, index, count, intended, published,
     d0, d1, d2, d3) = _FIXED.unpack_from(head, 0)
    if magic != MAGIC:
        raise EnvelopeError(f"bad magic {magic!r}: not a testbed message")
    if dtype >= len(DTYPES) or ndim > 4 or nsteps > MAX_STEPS:
        raise EnvelopeError("corrupt header (dtype, ndim or step count out of range)")
    hsize = header_size(nsteps)
    if head.nbytes < hsize:
        raise EnvelopeError(f"header announces {nsteps} step times but the message is too short")
    steps = struct.unpack_from(f"<{nsteps}q", head, FIXED_SIZE) if nsteps else ()
    if payload is None:
        payload = head[hsize:]
    shape = (d0, d1, d2, d3)[:ndim]
    return Envelope(seq, frame_id, index, count, intended, published, payload, shape, DTYPES[dtype], steps)


def _nbytes(buf) -> int:
    return memoryview(buf).nbytes
