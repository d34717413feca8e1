"""Listening ports the launchers pick (testbed/launchers/base.py): free, distinct, and never from the
kernel's ephemeral range, which outgoing connections draw from while a cluster's members start."""
import socket

from testbed.launchers.base import LISTEN_PORTS_FROM, _ephemeral_low, free_port, named_ports


def test_picked_ports_are_below_the_ephemeral_range_and_bindable():
    low = _ephemeral_low()
    ports = [free_port() for _ in range(50)]
    assert all(LISTEN_PORTS_FROM <= p < low for p in ports), (low, ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))


def test_a_port_in_use_is_never_picked():
    held = []
    try:
        for _ in range(20):
            p = free_port()
            s = socket.socket()
            s.bind(("127.0.0.1", p))
            s.listen()
            held.append(s)
        taken = {s.getsockname()[1] for s in held}
        assert len(taken) == 20
        assert not taken & set(named_ports(tuple(f"p{i}" for i in range(200))).values())
    finally:
        for s in held:
            s.close()


def test_outgoing_connections_take_ports_the_picker_never_gives():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        with socket.create_connection(srv.getsockname()) as c:
            assert c.getsockname()[1] >= _ephemeral_low() > free_port()
