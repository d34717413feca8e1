import numpy as np
import pytest

from testbed.harness.envelope import FIXED_SIZE, Envelope, EnvelopeError, decode, encode


def test_roundtrip_one_buffer_and_two_parts():
    payload = np.arange(3 * 4 * 5, dtype=np.uint8).tobytes()
    env = Envelope(7, 3, 1, 4, 123, 456, payload, (3, 4, 5), "uint8", (10, 20))
    for wire in (encode(env), [env.header(), payload]):
        got = decode(wire)
        assert (got.seq, got.frame_id, got.index, got.count) == (7, 3, 1, 4)
        assert (got.intended_ns, got.published_ns) == (123, 456)
        assert got.shape == (3, 4, 5) and got.dtype == "uint8" and got.steps == (10, 20)
        assert bytes(got.payload) == payload


def test_empty_payload_and_header_size():
    env = Envelope(0, 0, 0, 1, 1, 2, b"")
    wire = encode(env)
    assert len(wire) == FIXED_SIZE
    assert bytes(decode(wire).payload) == b""


@pytest.mark.parametrize("bad", [b"", b"x" * 10, b"NOPE" + bytes(FIXED_SIZE)])
def test_garbage_is_rejected(bad):
    with pytest.raises(EnvelopeError):
        decode(bad)


def test_truncated_steps_rejected():
    wire = encode(Envelope(0, 0, 0, 1, 1, 2, b"", steps=(1, 2, 3)))
    with pytest.raises(EnvelopeError):
        decode(wire[:FIXED_SIZE + 8])
