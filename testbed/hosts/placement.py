"""Where a run's parts go: ``--place`` (RunConfig.place: role -> [host names]) read for each worker.

Stage A's streams and stage B's replicas are dealt over their role's hosts in turn (stream ``s`` on
``hosts[s % n]``, replica ``r`` on ``hosts[r % n]``); the broker's nodes likewise. A role that is not
placed stays on the orchestrator's machine (``None``), whose clock needs no mapping. ``clocks`` gives,
per host, the ``ClockMap`` that converts its timestamps (cluster.py's hosts), so the same object says
which clock each record field was stamped by (timeline.py).
"""
from __future__ import annotations

from testbed.hosts.clock import IdentityClock

ROLES = ("stage_a", "stage_b", "broker")


class Placement:
    def __init__(self, place: dict | None, clocks: dict | None = None):
        self.place = {r: list(h) for r, h in (place or {}).items() if h}
        self.clocks = dict(clocks or {})
        self._here = IdentityClock()

    @classmethod
    def of(cls, place: dict | None, cluster) -> "Placement":
        """The placement of a run over ``cluster``'s hosts (cluster.py), their clock maps included."""
        return cls(place, {n: h.clock for n, h in cluster.hosts.items()})

    def _deal(self, role: str, i: int) -> str | None:
        hosts = self.place.get(role)
        return hosts[i % len(hosts)] if hosts else None

    def stage_a_host(self, stream: int = 0) -> str | None:
        return self._deal("stage_a", stream)

    def replica_host(self, replica: int) -> str | None:
        return self._deal("stage_b", replica)

    def broker_host(self, node: int = 0) -> str | None:
        return self._deal("broker", node)

    def hosts_used(self) -> list[str]:
        return list(dict.fromkeys(h for hs in self.place.values() for h in hs))

    def clock(self, host: str | None):
        """The clock ``host``'s timestamps are on (this machine's for None)."""
        return self._here if host is None else self.clocks[host]

    def a_clocks(self, streams: int = 1):
        """Stage A's clock per stream (timeline.convert_*'s ``a_clock``): one clock when there is one."""
        if streams <= 1 or len(self.place.get("stage_a", [])) <= 1:
            return self.clock(self.stage_a_host(0))
        return {s: self.clock(self.stage_a_host(s)) for s in range(streams)}

    def b_clocks(self, replicas: int) -> dict:
        """Each replica's clock (timeline.convert_messages's ``replica_clocks``)."""
        return {r: self.clock(self.replica_host(r)) for r in range(replicas)}

    def describe(self) -> dict:
        """run.json's placement: role -> hosts ("" = this machine)."""
        return {r: self.place.get(r, [""]) for r in ROLES}
