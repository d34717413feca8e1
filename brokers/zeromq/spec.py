"""ZeroMQ PUSH/PULL: brokerless; stage A binds (one endpoint per camera stream), the stage B replicas connect
to all of them."""
from __future__ import annotations

from brokers.spec import BrokerSpec, Capabilities, Embedded


def _impl() -> str:
    import zmq
    return f"pyzmq {zmq.__version__} (libzmq {zmq.zmq_version()})"


SPEC = BrokerSpec(
    name="zeromq",
    summary="ZeroMQ PUSH/PULL, brokerless (pyzmq): messages dealt round-robin, no acknowledgement",
    capabilities=Capabilities(needs_server=False, redelivers=False, competing_consumers=True,
                              reports_backlog=False, dispatch="round_robin", delivery=("at-most-once",)),
    client="pyzmq",
    url_form="tcp://HOST:PORT or ipc://PATH",
    embedded=Embedded(url="tcp://{host}:{port}", impl=_impl, url_schemes=("tcp://", "ipc://"), per_stream=True),
)
