"""The cluster launcher's docker path: each member of a cluster (cluster.py) as one container on the host
network, from the broker's image (the same one the single-node docker launcher runs, docker.py), running
that member's plan (``MemberContext.where = "docker"``, its folder inside the container) as the single
launcher's script does: folders, files, steps once, helpers, then ``exec`` of the server.

Each container is labelled as the docker launcher labels its own (``testbed=1``, the run, the owner
process) and told to the owner's watchdog before it is created, so cleanup, the watchdog and the start-up
sweep remove it however the run ends. Ports are free ports of 127.0.0.1 (host network), distinct per
member, the recipe's shared ports one number for all. A member's kill is ``docker kill``, its pause
``docker pause``, its restart ``docker start`` of the same container (its data is in the container's
filesystem; the steps do not run again). Stop saves each container's log into the run folder as
``broker-<member>.log`` and removes it.
"""
from __future__ import annotations

import os
import re
import secrets
import time

from brokers.spec import ClusterView, MemberContext
from testbed.errors import BrokerError, ConfigError
from testbed.launchers import engine, images, lifeline
from testbed.launchers.base import ReadyProbe, port_facts
from testbed.launchers.docker import LABEL, START_TIMEOUT_FACTOR, _log_tail, _logs, _owner_labels, _remove, script
from testbed.launchers.nodes import LOCAL


class DockerMember:
    """One member of a cluster as a container (the interface of cluster.Member)."""

    def __init__(self, peer, recipe, run_dir: str, client, image: str, image_spec, run_id: str, host: str,
                 limits: dict):
        self.peer, self.recipe, self.run_dir = peer, recipe, run_dir
        self.client, self.image, self.image_spec, self.run_id, self.host = client, image, image_spec, run_id, host
        self.limits = limits
        self.node = LOCAL
        self.binaries = {b.name: b.in_container() for b in (recipe.server, *recipe.helpers)}
        self.tag = f"{peer.role}-{peer.index}" if peer.role else f"{recipe.server.name}-{peer.index}"
        self.log_path = os.path.join(run_dir, f"broker-{self.tag}.log")
        self.folder = f"/tmp/testbed-{self.tag}"
        self.name = f"testbed-{re.sub(r'[^A-Za-z0-9_.-]', '-', run_id)}-{image_spec.key}-{self.tag}-{secrets.token_hex(2)}"
        self.plan = None
        self.kwargs: dict = {}
        self.container = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return self.recipe.url.format(host=self.peer.host, **self.peer.ports)

    def make_plan(self, view: ClusterView, cfg, run_id: str) -> None:
        ctx = MemberContext("docker", self.folder, dict(self.peer.ports), self.binaries, cfg, run_id,
                            view.log, advertised={}, host=self.peer.host, member=self.peer, cluster=view)
        self.plan = plan = self.recipe.plan(ctx)
        kwargs = {"environment": dict(plan.env)} if plan.env else {}
        kwargs["working_dir"] = self.folder
        if not (plan.files or plan.dirs or plan.steps or plan.helpers):
            kwargs.update(entrypoint=[plan.argv[0]], command=list(plan.argv[1:]))
        elif self.image_spec.scratch:
            raise ConfigError(f"image {self.image_spec.local} has no shell: a cluster member's plan must be one command")
        else:
            kwargs.update(entrypoint=["/bin/sh", "-c"], command=[script(plan, self.folder)])
        self.kwargs = kwargs

    def prepare(self) -> None:
        """Nothing before the start: the container's script writes the files and runs the steps."""

    def start(self) -> None:
        labels = {LABEL: "1", "testbed.run_id": self.run_id, "testbed.broker": self.image_spec.key,
                  "testbed.member": self.tag, **_owner_labels()}
        lifeline.track_container(self.host, self.name)  # before it exists: a kill during the create leaves none
        try:
            self.container = self.client.containers.run(self.image, detach=True, name=self.name, labels=labels,
                                                        network_mode="host", **self.kwargs, **self.limits)
        except BaseException:
            try:  # a Ctrl-C during the create: find it by name
                self.container = self.client.containers.get(self.name)
            except Exception:  # noqa: BLE001 - never created
                pass
            raise

    def wait_ready(self, spec, label: str, launcher: str, timeout_s: float) -> str:
        """Until the member answers a real round trip at its own address (its recipe's probe)."""
        timeout_s *= START_TIMEOUT_FACTOR
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        probe = ReadyProbe(spec, self.recipe, self.url, label, "docker")
        c = self.container
        try:
            while time.monotonic() < deadline:
                c.reload()
                if c.status in ("exited", "dead"):
                    code = c.attrs.get("State", {}).get("ExitCode")
                    raise BrokerError(f"{self.tag} container {c.name} exited during start-up (code {code}); "
                                      f"last log lines: {_log_tail(c)}")
                try:
                    return probe()
                except Exception as exc:  # noqa: BLE001 - not ready yet
                    last = exc
                time.sleep(0.25)
        finally:
            probe.close()
        raise BrokerError(f"{self.tag} container {c.name} did not become ready within {timeout_s:g}s: "
                          f"{' '.join(str(last).split())[:200]}; last log lines: {_log_tail(c)}")

    def alive(self) -> bool:
        if self.container is None:
            return False
        try:
            self.container.reload()
        except Exception:  # noqa: BLE001 - gone
            return False
        return self.container.status in ("running", "paused")

    @property
    def pid(self) -> int | None:
        try:
            return self.container.attrs.get("State", {}).get("Pid") or None
        except Exception:  # noqa: BLE001
            return None

    def kill(self) -> None:
        if self.alive():
            if self.container.status == "paused":
                self.container.unpause()
            self.container.kill()

    def signal(self, sig: int) -> None:
        if self.alive():
            self.container.kill(signal=int(sig))

    def pause(self) -> None:
        if self.alive():
            self.container.pause()

    def resume(self) -> None:
        if self.container is not None:
            self.container.reload()
            if self.container.status == "paused":
                self.container.unpause()

    def restart_start(self) -> None:
        """``docker start`` the same container (its filesystem holds the member's data)."""
        c = self.container
        c.reload()
        if c.status == "paused":
            c.unpause()
        if c.status == "running":
            c.kill()
            c.wait(timeout=10)
        c.start()
        self.restarts += 1

    def sample(self) -> dict:
        """RSS of the container (CPU is left to the single-node handle's two-sample figure)."""
        try:
            st = self.container.stats(stream=False, one_shot=True)
        except Exception:  # noqa: BLE001
            return {}
        mem = st.get("memory_stats") or {}
        stats = mem.get("stats") or {}
        rss = stats.get("rss", stats.get("anon"))
        return {"broker_rss_mb": round(rss / 2**20, 1)} if rss is not None else {}

    def read_log(self) -> str:
        return _logs(self.container) if self.container is not None else ""

    def terminate(self) -> None:
        """Nothing to do first: ``stop`` removes the container at once (its data is throw-away)."""

    def stop(self, timeout_s: float = 0.0) -> None:
        c, self.container = self.container, None
        if c is None:
            try:  # created, but the client never handed it back
                c = self.client.containers.get(self.name)
            except Exception:  # noqa: BLE001
                lifeline.untrack_container(self.name)
                return
        _remove(c, self.log_path)

    def facts(self) -> dict:
        return {"name": self.peer.name, "role": self.peer.role or "node", "index": self.peer.index,
                "host": self.peer.host, "pid": self.pid, **port_facts(self.peer.ports), "log": self.log_path,
                "container": self.name, "container_id": self.container.id if self.container is not None else "",
                "image": self.image}


def make_members(cfg, run_id: str, run_dir: str, recipe, peers: list, say):
    """The cluster's members as containers: (members, view); ``peers`` from cluster.plan_peers (this
    machine's ports: the host network)."""
    from testbed.launchers.docker import _mem_limit
    from testbed.launchers.limits import parse_cpus
    image_spec = images.spec_for(cfg.broker, cfg.broker_impl)
    limits = {}
    if cfg.broker_cpus:
        parse_cpus(cfg.broker_cpus)
        limits["cpuset_cpus"] = cfg.broker_cpus
    if cfg.broker_memory:
        limits["mem_limit"] = limits["memswap_limit"] = _mem_limit(cfg.broker_memory)
    client = engine.client()
    host, _version = engine.find()
    image, _image_id = images.ensure(client, image_spec, cfg.no_build, progress=say)
    members = [DockerMember(peer, r, run_dir, client, image, image_spec, run_id, host, limits)
               for peer, r, _node in peers]
    view = ClusterView([m.peer for m in members], secrets.token_hex(16), cfg, run_id, "docker", say)
    return members, view

