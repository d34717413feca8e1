"""Docker launcher: the broker of a run as a container, through the docker SDK.

- Engine: the first that answers (``engine``: $DOCKER_HOST, the default socket, or our private one).
  ``engine_answers()`` is what ``--launcher auto`` asks; it is cached for the process.
- Image: the implementation's row of ``images.IMAGES`` - the official image when present or pullable,
  else (one line saying the pull failed) the local image, built if missing unless ``--no-build`` (then
  the error names the command that builds it).
- Network: the host's (``network_mode=host``). The broker binds 127.0.0.1 on free ports, exactly as the
  local launcher's, so stages reach both the same way and the comparison measures the container, not a
  NAT. (Published ports need the default bridge, which the private engine here runs without.)
- Configuration: the local recipe's own plan (``container_spec``), run with ``Context.where = "docker"``
  and a folder inside the container (its working directory): a plan that is one command runs as the
  container's entry point; otherwise one shell script makes the folders, writes the config files, runs
  the steps, starts the helpers (waiting for each), then ``exec``s the server, with the plan's
  environment either way.
- Labels ``testbed=1``, ``testbed.run_id=<run id>``, ``testbed.broker`` (the image key), and the owner
  process (``testbed.owner_pid`` + ``testbed.owner_start``) so ``cleanup()`` never removes the container
  of a run still going. The owner's watchdog (lifeline.py) is told the container's name before it is
  created: if the owner dies, even by SIGKILL, the watchdog removes it.
- Ready = a real client round trip (the recipe's probe, else the adapter's ``connect`` +
  ``server_impl``). A container that exits meanwhile fails the launch with the last lines of its log.
- Limits: ``--broker-cpus`` -> cpuset, ``--broker-memory`` -> memory limit (and no swap).
- ``sample()``: one-shot container stats -> ``broker_cpu_pct`` (percent of one core, from the cgroup's
  CPU time between two samples, as psutil reports local brokers) and ``broker_rss_mb`` (RSS of the
  cgroup; cache excluded).
- Stop: the container's log is saved into the run folder as ``broker-<name>.log``, then the container
  is removed (killed: its data is throw-away). On errors, Ctrl-C and at interpreter exit too.
"""
from __future__ import annotations

import atexit
import os
import re
import secrets
import shlex
import threading
import time

import brokers
from brokers.base import Endpoint
from brokers.spec import Context
from testbed.config import RunConfig
from testbed.errors import BrokerError, ConfigError
from testbed.launchers import engine, images, lifeline
from testbed.launchers.base import (BrokerHandle, ReadyProbe, advertised_ports, free_port, impl_string, port_facts,
                                    port_in_use)
from testbed.launchers.limits import parse_cpus

LABEL = "testbed"
#: a container start takes longer than the local process's (image layers, the container's own set-up)
START_TIMEOUT_FACTOR = 1.5
PROBE_TIMEOUT_S = 3.0

_answers: bool | None = None


def engine_answers() -> bool:
    """True when a Docker engine answers (cached for the process: auto resolution asks it per run)."""
    global _answers
    if _answers is None:
        _answers = engine.find() is not None
    return _answers


# -- container specs -------------------------------------------------------------------------------
def _ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports


def _impl(cfg: RunConfig):
    spec = brokers.spec(cfg.broker)
    return spec, spec.impl(cfg.broker_impl)


def container_spec(cfg: RunConfig, image: images.ImageSpec) -> tuple[dict, str, int]:
    """(keyword arguments for ``containers.run`` except image and labels, endpoint URL, main port),
    from the implementation's local recipe."""
    spec, impl = _impl(cfg)
    recipe = impl.local
    if recipe is None:
        raise ConfigError(f"--launcher docker cannot start {image.key!r}: its spec has no recipe")
    ports = dict(zip(recipe.ports, _ports(len(recipe.ports))))
    binaries = {b.name: b.in_container() for b in (recipe.server, *recipe.helpers)}
    folder = f"/tmp/testbed-{recipe.server.name}"
    plan = recipe.plan(Context("docker", folder, ports, binaries, cfg, "", advertised=advertised_ports(ports)))
    kwargs = {"environment": dict(plan.env)} if plan.env else {}
    kwargs["working_dir"] = folder  # the engine makes it: the local launcher's private folder
    if not (plan.files or plan.dirs or plan.steps or plan.helpers):  # one command: no shell needed
        kwargs.update(entrypoint=[plan.argv[0]], command=list(plan.argv[1:]))
    elif image.scratch:
        raise ConfigError(f"image {image.local} has no shell: its plan can only be one command")
    else:
        kwargs.update(entrypoint=["/bin/sh", "-c"], command=[script(plan, folder)])
    kwargs["_facts"] = {**port_facts(ports), **plan.facts}
    return kwargs, recipe.url.format(host="127.0.0.1", **ports), ports[recipe.ports[0]]


def script(plan, folder: str) -> str:
    """The plan as one POSIX shell script: folders, files, steps (once per container), helpers (each
    waited for), server."""
    q = shlex.quote
    lines = ["set -e", f"mkdir -p {q(folder)}", f"cd {q(folder)}"]
    lines += [f"mkdir -p {q(os.path.join(folder, d))}" for d in plan.dirs]
    lines += [f"printf '%s' {q(text)} > {q(os.path.join(folder, rel))}" for rel, text in plan.files.items()]
    if plan.steps:  # once per container: a restart of the same container (restart-broker) keeps its data
        lines.append("if [ ! -e .testbed-steps-done ]; then")
        lines += ["  " + " ".join(map(q, step.argv)) for step in plan.steps]
        lines += ["  touch .testbed-steps-done", "fi"]
    for h in plan.helpers:
        env = " ".join(f"{k}={q(v)}" for k, v in h.env.items())
        prefix = f"env {env} " if env else ""
        lines.append(f"{prefix}{' '.join(map(q, h.argv))} &")
        lines.append(f"until {prefix}{' '.join(map(q, h.ready_argv))} >/dev/null 2>&1; do sleep 0.1; done")
    lines.append("exec " + " ".join(map(q, plan.argv)))
    return "\n".join(lines) + "\n"


# -- the handle ------------------------------------------------------------------------------------
class DockerHandle(BrokerHandle):
    """A broker container: sampled from its stats, removed (log saved first) by ``stop()``."""

    def __init__(self, endpoint: Endpoint, client, container, log_path: str):
        super().__init__(endpoint)
        self.client = client
        self.container = container
        self.log_path = log_path
        self._last: tuple[int, int] | None = None  # (monotonic ns, cgroup cpu ns)
        self._lock = threading.Lock()
        atexit.register(self.stop)

    def sample(self) -> dict:
        with self._lock:
            if self.container is None:
                return {}
            try:
                st = self.container.stats(stream=False, one_shot=True)
            except Exception:  # noqa: BLE001 - gone or busy: leave the figures empty this second
                return {}
        return self._figures(st, time.monotonic_ns())

    def _figures(self, st: dict, now_ns: int) -> dict:
        out = {}
        cpu_ns = ((st.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
        if cpu_ns is not None:
            if self._last is not None and now_ns > self._last[0]:
                out["broker_cpu_pct"] = round(100.0 * (cpu_ns - self._last[1]) / (now_ns - self._last[0]), 1)
            self._last = (now_ns, cpu_ns)
        mem = st.get("memory_stats") or {}
        stats = mem.get("stats") or {}
        rss = stats.get("rss")  # cgroup v1
        if rss is None and "anon" in stats:  # cgroup v2
            rss = stats["anon"]
        if rss is None and "usage" in mem:
            rss = mem["usage"] - stats.get("cache", stats.get("inactive_file", 0))
        if rss is not None:
            out["broker_rss_mb"] = round(rss / 2**20, 1)
        return out

    def pids(self) -> list[int]:
        try:
            self.container.reload()
            pid = self.container.attrs.get("State", {}).get("Pid")
        except Exception:  # noqa: BLE001 - gone
            return []
        return [pid] if pid else []

    def signal(self, sig: int) -> None:
        self.container.kill(signal=int(sig))

    def pause(self) -> None:
        self.container.pause()

    def resume(self) -> None:
        self.container.unpause()

    #: set by ``launch``: () -> wait until the restarted container answers a real round trip
    wait_ready = None

    def kill(self) -> None:
        self.container.kill()

    def restart(self) -> None:
        """``docker start`` the same container: same ports (host network) and filesystem (its data)."""
        self.container.reload()
        if self.container.status == "paused":
            self.container.unpause()
        if self.container.status == "running":
            self.container.stop(timeout=10)
        self.container.start()
        if self.wait_ready is not None:
            self.wait_ready()
        self.endpoint.extra["restarts"] = self.endpoint.extra.get("restarts", 0) + 1

    def stop(self) -> None:
        with self._lock:
            container, self.container = self.container, None
        if container is not None:
            _remove(container, self.log_path)
        try:
            atexit.unregister(self.stop)
        except Exception:  # noqa: BLE001
            pass


def _save_log(container, log_path: str) -> None:
    try:
        data = container.logs(stdout=True, stderr=True)
    except Exception:  # noqa: BLE001 - nothing to save
        return
    try:
        os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
        with open(log_path, "ab") as fh:
            fh.write(data)
    except OSError:
        pass


def _remove(container, log_path: str | None) -> None:
    if log_path:
        _save_log(container, log_path)
    for _ in range(3):
        try:
            container.remove(force=True)
            break
        except Exception as exc:  # noqa: BLE001
            if "No such container" in str(exc) or "404" in str(exc):
                break
            if "removal of container" in str(exc) and "already in progress" in str(exc):
                break
            time.sleep(0.5)
    else:
        return  # still there: the watchdog keeps it on its list
    lifeline.untrack_container(container.name)


def _by_name(client, name: str):
    """The container called ``name``, or None (never created, or already gone)."""
    try:
        return client.containers.get(name)
    except Exception:  # noqa: BLE001 - not there (or the engine is gone: the watchdog tries again)
        return None


def _log_tail(container, lines: int = 5) -> str:
    try:
        text = container.logs(tail=lines).decode("utf-8", "replace")
    except Exception:  # noqa: BLE001
        return "(log unavailable)"
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:]) or "(empty log)"


def _owner_labels() -> dict:
    labels = {"testbed.owner_pid": str(os.getpid())}
    try:
        import psutil
        labels["testbed.owner_start"] = f"{psutil.Process().create_time():.3f}"
    except Exception:  # noqa: BLE001
        pass
    return labels


def _mem_limit(text: str) -> str:
    if not re.fullmatch(r"[1-9]\d*[bkmgBKMG]?", text or ""):
        raise ConfigError(f"--broker-memory {text!r} is not allowed: use a size such as 512m or 2g")
    return text.lower()


def launch(cfg: RunConfig, run_id: str, run_dir: str) -> DockerHandle:
    import docker
    spec, impl = _impl(cfg)
    image_spec = images.spec_for(cfg.broker, cfg.broker_impl)
    if impl.check is not None:
        impl.check(cfg)  # bad input fails before anything starts
    limits = {}
    if cfg.broker_cpus:
        parse_cpus(cfg.broker_cpus)
        limits["cpuset_cpus"] = cfg.broker_cpus
    if cfg.broker_memory:
        limits["mem_limit"] = _mem_limit(cfg.broker_memory)
        limits["memswap_limit"] = limits["mem_limit"]
    client = engine.client()
    host, version = engine.find()
    say = lambda line: print(line, file=__import__("sys").stderr, flush=True)  # noqa: E731
    image, image_id = images.ensure(client, image_spec, cfg.no_build, progress=say)
    kwargs, url, port = container_spec(cfg, image_spec)
    facts = kwargs.pop("_facts", {})
    if port_in_use(port):
        raise BrokerError(f"port {port} on 127.0.0.1 is in use: cannot start {image_spec.key} there")
    name = f"testbed-{re.sub(r'[^A-Za-z0-9_.-]', '-', run_id)}-{image_spec.key}-{secrets.token_hex(2)}"
    labels = {LABEL: "1", "testbed.run_id": run_id, "testbed.broker": image_spec.key, **_owner_labels()}
    log_name = impl.local.server.name if impl.local else cfg.broker
    log_path = os.path.join(run_dir, f"broker-{log_name}.log")
    container = None
    lifeline.track_container(host, name)  # before it exists: a kill during the create leaves none
    try:
        container = client.containers.run(image, detach=True, name=name, labels=labels, network_mode="host",
                                          **kwargs, **limits)
        extra = {"engine": host, "engine_version": version, "image": image, "image_id": image_id,
                 "container": name, "container_id": container.id, **facts, "port": port, "log": log_path}
        if limits:
            extra["limits"] = {k: v for k, v in limits.items() if k != "memswap_limit"}
        timeout = (impl.local.start_timeout_s if impl.local else 40.0) * START_TIMEOUT_FACTOR
        answer = _wait_ready(container, cfg, spec, impl, url, timeout)
        label = impl_string(impl, impl.local, answer, "", _logs(container) if impl.local and impl.local.version else "")
    except docker.errors.APIError as exc:
        if container is not None:
            _remove(container, log_path)
        why = str(getattr(exc, "explanation", None) or exc).strip().splitlines()[0]
        raise BrokerError(f"docker could not start {image}: {why}") from None
    except BaseException:
        # a Ctrl-C during the create can leave a container the client never handed back: find it by name
        container = container or _by_name(client, name)
        if container is not None:
            _remove(container, log_path)
        raise
    ep = Endpoint(cfg.broker, url, cfg.broker_opt, label, "docker", extra)
    handle = DockerHandle(ep, client, container, log_path)
    handle.wait_ready = lambda: _wait_ready(container, cfg, spec, impl, url, timeout)
    return handle


def _logs(container) -> str:
    try:
        return container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - no log: the pinned version stands
        return ""


def _wait_ready(container, cfg: RunConfig, spec, impl, url: str, timeout_s: float) -> str:
    """Until a real round trip works (the recipe's probe, else the adapter's): what answers."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    probe = ReadyProbe(spec, impl.local, url, impl.impl_label(), "docker", PROBE_TIMEOUT_S)
    try:
        while time.monotonic() < deadline:
            container.reload()
            if container.status in ("exited", "dead"):
                code = container.attrs.get("State", {}).get("ExitCode")
                raise BrokerError(f"{cfg.broker} container {container.name} exited during start-up (code {code}); "
                                  f"last log lines: {_log_tail(container)}")
            try:
                answer = probe()
                container.reload()  # the answer came from our container, not something else on the port
                if container.status == "running":
                    return answer
            except Exception as exc:  # noqa: BLE001 - not ready yet
                last = exc
            time.sleep(0.25)
    finally:
        probe.close()
    raise BrokerError(f"{cfg.broker} container {container.name} did not become ready within {timeout_s:g}s: "
                      f"{' '.join(str(last).split())[:200]}; last log lines: {_log_tail(container)}")


# -- cleanup ---------------------------------------------------------------------------------------
def _owner_alive(labels: dict) -> bool:
    try:
        import psutil
        p = psutil.Process(int(labels.get("testbed.owner_pid", "0")))
        return abs(p.create_time() - float(labels.get("testbed.owner_start", "0"))) < 1.0
    except Exception:  # noqa: BLE001 - no owner, or gone
        return False


def cleanup(include_live: bool = False, dead_owners_only: bool = False) -> list[str]:
    """Remove every container and network labelled ``testbed=1`` whose run is over (``include_live``:
    also those of runs still going; ``dead_owners_only``, the start-up sweep: only those that name an
    owner process, which is gone)."""
    if not engine_answers():
        return ["no engine answers: nothing to clean"]
    client = engine.client()
    lines = []
    for c in client.containers.list(all=True, filters={"label": f"{LABEL}=1"}):
        labels = c.labels or {}
        if dead_owners_only and "testbed.owner_pid" not in labels:
            continue
        if not include_live and _owner_alive(labels):
            lines.append(f"container {c.name} belongs to a run still going (pid {labels.get('testbed.owner_pid')}): "
                         "left alone")
            continue
        _remove(c, None)
        lines.append(f"removed container {c.name} (run {labels.get('testbed.run_id', '?')})")
    for n in client.networks.list(filters={"label": f"{LABEL}=1"}):
        if dead_owners_only and ("testbed.owner_pid" not in (n.attrs.get("Labels") or {})
                                 or _owner_alive(n.attrs.get("Labels") or {})):
            continue
        try:
            n.remove()
            lines.append(f"removed network {n.name}")
        except Exception as exc:  # noqa: BLE001
            lines.append(f"network {n.name} not removed: {' '.join(str(exc).split())[:160]}")
    return lines or ["no testbed containers or networks left"]
