"""Hosts: stages and brokers placed on several machines through Ray, or on simulated hosts of this
machine (network + time namespaces), with every host's clock mapped onto the orchestrator's.

    spec.py         the hosts file (YAML) and the check of a run's --place against it
    state.py        names we give the machine and the state file of simulated hosts that are up
    netns.py        the simulated network: bridge, namespaces, veths, tbf links, partitions
    ray_nodes.py    the Ray nodes of simulated hosts; this process as a driver of any Ray cluster
    cluster.py      up / attach / connect / close: the ``Cluster`` a run holds (its hosts, their agents)
    agent.py        the Ray actor per host (host side): broker processes, stage processes, clock server
    handle.py       the orchestrator's handle on an agent (Ray calls, errors, cached stage status)
    remote_node.py  a host as a launchers ``Node`` (brokers), ``RemoteProcess``
    listener.py     where stage processes connect back (authkey), ``PendingConnection``
    workers.py      a stage process on a host as the orchestrator sees it; start/stop/t0 control
    child.py        the stage process on the host (``python -m testbed.hosts.child``)
    wire.py         hello and control messages on a stage's connection, argument placeholders
    clock.py        clock server and ``ClockMap`` (Cristian/NTP exchanges, offset + drift fit)
    placement.py    which host each stream, replica and broker node goes to (--place), and its clock
    timeline.py     records converted onto the orchestrator's clock
    teardown.py     removing simulated hosts; the sweep of dead runs' leftovers
    __main__.py     python -m testbed.hosts up FILE | status | down

Ray is imported only where a cluster is used (the ``hosts`` extra: pip install -e '.[hosts]').
docs/hosts.md says what simulated hosts are and are not, and how to run on a real cluster.
"""
from __future__ import annotations

import importlib

#: what ``from testbed.hosts import X`` gives, imported on first use (the sweep imports only teardown.py)
_EXPORTS = {
    "Cluster": "cluster", "Host": "cluster", "attach": "cluster", "connect": "cluster", "open_hosts": "cluster",
    "up": "cluster", "up_state": "cluster",
    "HostSpec": "spec", "HostsSpec": "spec", "check_place": "spec", "load": "spec", "parse": "spec",
    "sweep": "teardown",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"testbed.hosts.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'testbed.hosts' has no attribute {name!r}")
