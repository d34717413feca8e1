"""Docker launcher: the broker of a run as a container, through the docker SDK.

- Engine: the first that answers (``docker_engine``: $DOCKER_HOST, the default socket, or our private
  one). ``engine_answers()`` is what ``--launcher auto`` asks; it is cached for the process.
- Image: per broker from the one table in ``docker_images`` - the official image when present or
  pullable, else (one line saying the pull failed) the local image, built if missing unless
  ``--no-build`` (then the error names the command that builds it).
- Network: the host's (``network_mode=host``). The broker binds 127.0.0.1 on free ports, exactly as the
  local launcher's, so stages reach both the same way and the comparison measures the container, not a
  NAT. (Published ports need the default bridge, which the private engine here runs without.)
- Configuration: the same as the local launcher's (redis without persistence; a private RabbitMQ node
  name, epmd and distribution ports; Kafka from ``kafka_dist.server_properties`` as ``KAFKA_*``
  variables, which the official apache/kafka image and ours both read).
- Labels ``testbed=1``, ``testbed.run_id=<run id>``, ``testbed.broker``, and the owner process
  (``testbed.owner_pid`` + ``testbed.owner_start``) so ``cleanup()`` never removes the container of a
  run still going.
- Ready = a real client round trip through the adapter (``connect`` + ``server_impl``). A container
  that exits meanwhile fails the launch with the last lines of its log.
- Limits: ``--broker-cpus`` -> cpuset, ``--broker-memory`` -> memory limit (and no swap).
- ``sample()``: one-shot container stats -> ``broker_cpu_pct`` (percent of one core, from the cgroup's
  CPU time between two samples, as psutil reports local brokers) and ``broker_rss_mb`` (RSS of the
  cgroup; cache excluded).
- Stop: the container's log is saved into the run folder as ``broker-<broker>.log``, then the
  container is removed (killed: its data is throw-away). On errors, Ctrl-C and at interpreter exit too.
"""
from __future__ import annotations

import atexit
import os
import re
import secrets
import threading
import time

import brokers
from brokers.base import Endpoint
from testbed.config import RunConfig
from testbed.errors import BrokerError, ConfigError
from testbed.launchers import docker_engine, docker_images
from testbed.launchers.base import BrokerHandle, free_port, port_in_use

LABEL = "testbed"
START_TIMEOUT_S = {"redis": 30.0, "rabbitmq": 90.0, "kafka": 90.0}
PROBE_TIMEOUT_S = 3.0

_answers: bool | None = None


def engine_answers() -> bool:
    """True when a Docker engine answers (cached for the process: auto resolution asks it per run)."""
    global _answers
    if _answers is None:
        _answers = docker_engine.find() is not None
    return _answers


# -- container specs -------------------------------------------------------------------------------
def _ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports


def kafka_env(port: int, controller_port: int, heap: str) -> dict:
    """kafka_dist's server.properties as the ``KAFKA_*`` variables both kafka images read."""
    from testbed.launchers import kafka_dist
    env = {"CLUSTER_ID": kafka_dist.new_cluster_id(),
           "KAFKA_HEAP_OPTS": f"-Xms{heap} -Xmx{heap}"}
    props = kafka_dist.server_properties(port, controller_port, "/tmp/kraft-combined-logs")
    for line in props.splitlines():
        key, sep, value = line.partition("=")
        if not sep or line.startswith("#"):
            continue
        name = key.strip().replace("_", "__").replace("-", "___").replace(".", "_").upper()
        env[f"KAFKA_{name}"] = value.strip()
    return env


def container_spec(cfg: RunConfig, spec: docker_images.ImageSpec) -> tuple[dict, str, int]:
    """(keyword arguments for ``containers.run`` except image and labels, endpoint URL, main port)."""
    if spec.key == "redis":
        (port,) = _ports(1)
        cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--protected-mode", "yes",
               "--save", "", "--appendonly", "no", "--daemonize", "no", "--databases", "1"]
        return {"command": cmd}, f"redis://127.0.0.1:{port}/0", port
    if spec.key == "rabbitmq":
        port, dist_port, epmd_port = _ports(3)
        home = "/tmp/testbed-rabbitmq"
        env = {
            "HOME": home, "ERL_EPMD_PORT": str(epmd_port), "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODENAME": f"testbed-{secrets.token_hex(4)}@localhost", "RABBITMQ_USE_LONGNAME": "false",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_MNESIA_BASE": f"{home}/mnesia", "RABBITMQ_LOG_BASE": f"{home}/log", "RABBITMQ_LOGS": "-",
            "RABBITMQ_CONFIG_FILE": f"{home}/rabbitmq.conf", "RABBITMQ_CONFIG_FILES": f"{home}/conf.d",
            "RABBITMQ_ENABLED_PLUGINS_FILE": f"{home}/enabled_plugins",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        from testbed.launchers.local_rabbitmq import CONFIG
        conf = CONFIG.format(port=port)
        script = (f"mkdir -p {home}/conf.d {home}/mnesia {home}/log && cat > {home}/rabbitmq.conf <<'EOF'\n"
                  f"{conf}EOF\necho '[].' > {home}/enabled_plugins && exec rabbitmq-server")
        return {"command": ["sh", "-c", script], "environment": env}, \
            f"amqp://guest:guest@127.0.0.1:{port}/%2F", port
    if spec.key == "kafka":
        from testbed.launchers import kafka_dist
        heap = kafka_dist.check_heap(cfg.broker_heap)
        port, controller_port = _ports(2)
        return {"environment": kafka_env(port, controller_port, heap)}, f"kafka://127.0.0.1:{port}", port
    if spec.key == "kafka-tansu":
        (port,) = _ports(1)
        listen = f"tcp://127.0.0.1:{port}"
        # the local launcher's configuration: the memory engine (the only solid one in this build)
        cmd = ["broker", "--listener-url", listen, "--advertised-listener-url", listen,
               "--storage-engine", "memory://tansu/", "--cluster-id", f"testbed-{secrets.token_hex(4)}"]
        return {"command": cmd, "environment": {"RUST_LOG": os.environ.get("TESTBED_TANSU_LOG", "warn")}}, \
            f"kafka://127.0.0.1:{port}", port
    raise ConfigError(f"--launcher docker cannot start {spec.key!r}")


def impl_of(spec: docker_images.ImageSpec) -> str:
    """What the container runs, as broker_impl says it (the kafka adapter picks tansu's defaults by it)."""
    if spec.key == "kafka":
        return f"apache-kafka {spec.upstream}"
    if spec.key == "kafka-tansu":
        return f"tansu {spec.upstream} (kafka protocol)"
    return ""  # redis and rabbitmq say it themselves, asked by the adapter


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
            return
        except Exception as exc:  # noqa: BLE001
            if "No such container" in str(exc) or "404" in str(exc):
                return
            if "removal of container" in str(exc) and "already in progress" in str(exc):
                return
            time.sleep(0.5)


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
    spec = docker_images.spec_for(cfg.broker, cfg.broker_impl)
    limits = {}
    if cfg.broker_cpus:
        from testbed.launchers.local_limits import parse_cpus
        parse_cpus(cfg.broker_cpus)  # bad input fails before anything starts
        limits["cpuset_cpus"] = cfg.broker_cpus
    if cfg.broker_memory:
        limits["mem_limit"] = _mem_limit(cfg.broker_memory)
        limits["memswap_limit"] = limits["mem_limit"]
    client = docker_engine.client()
    host, version = docker_engine.find()
    say = lambda line: print(line, file=__import__("sys").stderr, flush=True)  # noqa: E731
    image, image_id = docker_images.ensure(client, spec, cfg.no_build, progress=say)
    kwargs, url, port = container_spec(cfg, spec)
    if port_in_use(port):
        raise BrokerError(f"port {port} on 127.0.0.1 is in use: cannot start {spec.key} there")
    name = f"testbed-{re.sub(r'[^A-Za-z0-9_.-]', '-', run_id)}-{spec.key}-{secrets.token_hex(2)}"
    labels = {LABEL: "1", "testbed.run_id": run_id, "testbed.broker": spec.key, **_owner_labels()}
    log_path = os.path.join(run_dir, f"broker-{cfg.broker}.log")
    container = None
    try:
        container = client.containers.run(image, detach=True, name=name, labels=labels, network_mode="host",
                                          **kwargs, **limits)
        extra = {"engine": host, "engine_version": version, "image": image, "image_id": image_id,
                 "container": name, "container_id": container.id, "port": port, "log": log_path}
        if limits:
            extra["limits"] = {k: v for k, v in limits.items() if k != "memswap_limit"}
        impl = _wait_ready(container, cfg, url, impl_of(spec), START_TIMEOUT_S.get(cfg.broker, 60.0))
    except docker.errors.APIError as exc:
        if container is not None:
            _remove(container, log_path)
        why = str(getattr(exc, "explanation", None) or exc).strip().splitlines()[0]
        raise BrokerError(f"docker could not start {image}: {why}") from None
    except BaseException:
        if container is not None:
            _remove(container, log_path)
        raise
    ep = Endpoint(cfg.broker, url, cfg.broker_opt, impl, "docker", extra)
    return DockerHandle(ep, client, container, log_path)


def _wait_ready(container, cfg: RunConfig, url: str, impl: str, timeout_s: float) -> str:
    """Until the adapter's real round trip works (Kafka: also a produced message acknowledged, the
    local launcher's check): the server's implementation string."""
    cls = brokers.get(cfg.broker)
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    kafka_probe = _kafka_probe(url, impl) if cfg.broker == "kafka" else None
    try:
        while time.monotonic() < deadline:
            container.reload()
            if container.status in ("exited", "dead"):
                code = container.attrs.get("State", {}).get("ExitCode")
                raise BrokerError(f"{cfg.broker} container {container.name} exited during start-up (code {code}); "
                                  f"last log lines: {_log_tail(container)}")
            try:
                b = cls(Endpoint(cfg.broker, url, {}, impl, "docker"))
                b.connect(PROBE_TIMEOUT_S)
                try:
                    answer = b.server_impl()
                finally:
                    b.close()
                if kafka_probe is not None:
                    kafka_probe()
                container.reload()  # the answer came from our container, not something else on the port
                if container.status == "running":
                    return answer
            except BrokerError as exc:
                last = exc
            except Exception as exc:  # noqa: BLE001 - not ready yet
                last = exc
            time.sleep(0.25)
    finally:
        if kafka_probe is not None:
            kafka_probe.close()
    raise BrokerError(f"{cfg.broker} container {container.name} did not become ready within {timeout_s:g}s: "
                      f"{' '.join(str(last).split())[:200]}; last log lines: {_log_tail(container)}")


def _kafka_probe(url: str, impl: str):
    """The local Kafka launcher's round trip (a topic created, a message acknowledged), where it exists."""
    try:
        from testbed.launchers.local_kafka import _RoundTrip
    except ImportError:
        return None
    return _RoundTrip(url, impl)


# -- cleanup ---------------------------------------------------------------------------------------
def _owner_alive(labels: dict) -> bool:
    try:
        import psutil
        p = psutil.Process(int(labels.get("testbed.owner_pid", "0")))
        return abs(p.create_time() - float(labels.get("testbed.owner_start", "0"))) < 1.0
    except Exception:  # noqa: BLE001 - no owner, or gone
        return False


def cleanup(include_live: bool = False) -> list[str]:
    """Remove every container and network labelled ``testbed=1`` whose run is over (``include_live``:
    also those of runs still going)."""
    if not engine_answers():
        return ["no engine answers: nothing to clean"]
    client = docker_engine.client()
    lines = []
    for c in client.containers.list(all=True, filters={"label": f"{LABEL}=1"}):
        labels = c.labels or {}
        if not include_live and _owner_alive(labels):
            lines.append(f"container {c.name} belongs to a run still going (pid {labels.get('testbed.owner_pid')}): "
                         "left alone")
            continue
        _remove(c, None)
        lines.append(f"removed container {c.name} (run {labels.get('testbed.run_id', '?')})")
    for n in client.networks.list(filters={"label": f"{LABEL}=1"}):
        try:
            n.remove()
            lines.append(f"removed network {n.name}")
        except Exception as exc:  # noqa: BLE001
            lines.append(f"network {n.name} not removed: {' '.join(str(exc).split())[:160]}")
    return lines or ["no testbed containers or networks left"]
