"""The in-process queue: stages are threads of one process, the envelope object itself is queued."""
from __future__ import annotations

import sys

from brokers.spec import BrokerSpec, Capabilities, Embedded


def _impl() -> str:
    return f"queue.SimpleQueue (python {sys.version.split()[0]})"


SPEC = BrokerSpec(
    name="inproc",
    summary="in-process queue (threads of one process, no serialisation): the no-transport baseline",
    capabilities=Capabilities(needs_server=False, in_process=True, redelivers=False, competing_consumers=True,
                              reports_backlog=True, dispatch="shared", delivery=("at-most-once",)),
    embedded=Embedded(url="inproc://{run_id}", impl=_impl),
)
