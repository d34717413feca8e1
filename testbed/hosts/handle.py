"""The orchestrator's handle on one host's agent (agent.py): its Ray actor, made and called from here.

``call(method, *args)`` is one Ray call, waited for; an error raised on the host is raised here as it
was (a ``BrokerError``, a ``FileNotFoundError``), an agent that is gone (its Ray node died) raises
``HostDown`` naming the host, and the handle remembers it (``dead``). ``stage_exits`` is what the
stage workers' ``is_alive`` reads: answered from a cache refreshed by at most one call in flight, so
asking often costs nothing but a look (no Ray call per message, nor per poll).
"""
from __future__ import annotations

import time

from testbed.errors import TestbedError
from testbed.hosts.errors import HostDown, HostError
from testbed.hosts.ray_nodes import RESOURCE

CALL_TIMEOUT_S = 60.0
AGENT_START_S = 60.0
STATUS_MAX_AGE_S = 0.2


class AgentHandle:
    def __init__(self, name: str, actor, info: dict):
        self.name = name
        self.actor = actor
        self.info = info
        self.address = info["address"]
        self.clock_port = info["clock_port"]
        self.pid = info["pid"]
        self.dead = ""                 # why the agent is gone ("" while it lives)
        self._exits: dict = {}
        self._exits_at = 0.0
        self._pending = None

    @classmethod
    def create(cls, ray, name: str, address: str | None, clock_key: bytes) -> "AgentHandle":
        """The agent of host ``name`` (an actor on its node), returned once it answers."""
        return cls.create_many(ray, {name: address}, clock_key)[name]

    @classmethod
    def create_many(cls, ray, addresses: dict, clock_key: bytes, timeout_s: float = AGENT_START_S) -> dict:
        """One agent per host (name -> address, None: the node's own), all started at once."""
        from testbed.hosts.agent import HostAgent
        remote = ray.remote(HostAgent)
        actors = {n: remote.options(num_cpus=0, resources={RESOURCE + n: 0.001}, max_restarts=0,
                                    max_concurrency=1).remote(n, a, clock_key) for n, a in addresses.items()}
        refs = {n: a.info.remote() for n, a in actors.items()}
        out = {}
        for n, ref in refs.items():
            try:
                info = ray.get(ref, timeout=timeout_s)
            except Exception as exc:  # noqa: BLE001 - one line naming the host
                for a in actors.values():
                    ray.kill(a, no_restart=True)
                raise HostError(f"the agent of host {n} did not start: {_first_line(exc)}") from None
            out[n] = cls(n, actors[n], info)
        return out

    # -- calls --------------------------------------------------------------------------------------
    def call(self, method: str, *args, timeout_s: float = CALL_TIMEOUT_S):
        if self.dead:
            raise HostDown(self.name, self.dead)
        return self.get(getattr(self.actor, method).remote(*args), method, timeout_s)

    def get(self, ref, method: str = "", timeout_s: float = CALL_TIMEOUT_S):
        import ray
        from ray import exceptions as rex
        try:
            return ray.get(ref, timeout=timeout_s)
        except rex.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, (TestbedError, OSError, ValueError)):
                raise cause from None
            raise HostError(f"host {self.name}: {method} failed: {_first_line(cause or exc)}") from None
        except rex.GetTimeoutError:
            raise HostError(f"host {self.name}: {method} did not answer within {timeout_s:g}s") from None
        except (rex.RayActorError, rex.ActorUnavailableError) as exc:
            self.dead = f"its agent is gone ({_first_line(exc)})"
            raise HostDown(self.name, self.dead) from None

    # -- what the stage workers ask often -------------------------------------------------------------
    def stage_exits(self, max_age_s: float = STATUS_MAX_AGE_S, fresh: bool = False) -> dict:
        """worker -> exit code (None: running); at most ``max_age_s`` old plus one call, or ``fresh``."""
        import ray
        if self.dead:
            return {w: -9 if c is None else c for w, c in self._exits.items()}
        if fresh:
            self._pending = None
            self._take(self.call("stage_exits", timeout_s=10.0))
            return self._exits
        if self._pending is not None:
            done, _ = ray.wait([self._pending], timeout=0)
            if done:
                ref, self._pending = self._pending, None
                try:
                    self._take(self.get(ref, "stage_exits", 1.0))
                except HostDown:
                    return self.stage_exits()
                except HostError:
                    pass
        if self._pending is None and time.monotonic() - self._exits_at >= max_age_s:
            self._pending = self.actor.stage_exits.remote()
        return self._exits

    def _take(self, exits: dict) -> None:
        self._exits = dict(exits)
        self._exits_at = time.monotonic()

    def kill(self) -> None:
        """End the agent's actor (what it started dies with it)."""
        import ray
        try:
            ray.kill(self.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - gone already
            pass


def _first_line(exc) -> str:
    """One line of an error: a traceback's last line (the exception), else the message's first."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    return (lines[-1] if any(ln.startswith("Traceback") for ln in lines) else lines[0])[:300]
