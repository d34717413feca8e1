"""Faults under load: the schedule of what goes wrong in a run, and the network proxy that makes it.

    schedule.py       parse and check ``--fault`` flags / the YAML ``faults:`` list (``parse_all``)
    proxy.py          a private Toxiproxy server in front of the broker, its proxies and toxics
    toxiproxy_bin.py  where the Toxiproxy server binary lives and how set-up builds it (Go)
"""
from testbed.faults.schedule import KINDS, Event, Fault, Schedule, parse, parse_all  # noqa: F401
