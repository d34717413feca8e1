"""The resolved configuration of one run: defaults < ``--config FILE`` (YAML) < command-line flags.

``RunConfig`` is plain data (it goes into run.json and, as a dict, to every stage process). Every
value is checked in ``validate``; a bad one raises ``ConfigError`` with one line that names the value
and what is allowed.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import numbers
import os
import re
import sys
from dataclasses import dataclass, field

import yaml

import brokers
from testbed import broker_flags
from testbed.load.distributions import SERVICE_DISTS, Fanout
from testbed.harness.envelope import FIXED_SIZE
from testbed.errors import ConfigError
from testbed.load import check_arrival, closed_window, total_rate

LAUNCHERS = ("auto", "docker", "local", "external")
SERVICE_MODES = ("sleep", "spin")
PIPELINES = ("synthetic", "vision")
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Every frame's send time is computed before the run and every message's record is kept in memory
# (a few hundred bytes each), so a run offers at most this many messages (rate x duration x fan-out mean).
MAX_MESSAGES = 20_000_000
SEED_MAX = 2**32 - 1  # seeds are 0 .. 2**32-1: non-negative, as numpy's SeedSequence needs


@dataclass
class RunConfig:
    # broker
    broker: str = brokers.DEFAULT
    broker_impl: str = ""
    launcher: str = "auto"
    broker_url: str = ""
    broker_opt: dict = field(default_factory=dict)
    broker_cpus: str = ""
    broker_memory: str = ""
    broker_heap: str = "512m"
    no_build: bool = False
    #: nodes of a replicated broker cluster (1: today's single node; brokers/<name>/spec.py's cluster recipe)
    broker_nodes: int = 1
    #: how stage B acknowledges: "" = the broker's default (the safest it has), or per-message,
    #: per-batch, async where the broker's spec allows it
    ack: str = ""
    # placement over hosts (testbed/hosts/): a hosts file, or the address of an existing Ray cluster;
    # role (stage_a, stage_b, broker) -> host names (replicas and streams dealt over them in turn)
    hosts: str = ""
    ray_address: str = ""
    place: dict = field(default_factory=dict)
    # load and stages
    pipeline: str = "synthetic"
    rate: float = 50.0
    arrival: str = "poisson"
    producer_rate: float = 100.0
    consumer_rate: float = 250.0
    fanout: str = "poisson:4"
    replicas: int = 1
    #: camera streams: stage A processes, each with its own schedule, frame numbers and seed stream
    streams: int = 1
    #: frames/s of each stream (0: --rate is the total, split over the streams)
    rate_per_stream: float = 0.0
    batch_max: int = 1
    batch_wait_ms: float = 0.0
    service_dist: str = "fixed"
    service_mode: str = "sleep"
    message_bytes: int = 150528
    # vision pipeline (issue #4)
    image_size: str = "small"
    images: str = ""
    preprocess: str = "cpu"
    detector: str = "ssdlite"
    classifier: str = "resnet50"
    weights: str = ""
    score_threshold: float = 0.5
    device: str = "cpu"
    # run
    duration: float = 10.0
    warmup: float = 2.0
    drain: float = 5.0
    seed: int = 1
    out: str = ""
    no_trace: bool = False
    connect_timeout: float = 15.0
    # faults (testbed/faults/): the schedule, as canonical fault strings
    faults: list = field(default_factory=list)
    consumer_restart_s: float = 1.0
    delivery: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        return cls(**d)

    @property
    def fanout_dist(self) -> Fanout:
        return Fanout.parse(self.fanout)

    @property
    def offered_message_rate(self) -> float:
        """Messages/s offered by all streams (open loop; testbed/load/streams.py)."""
        return (self.rate_per_stream * self.streams if self.rate_per_stream else self.rate) * self.fanout_dist.mean

    @property
    def consumer_capacity(self) -> float:
        """Stage B's service capacity in messages/s, all replicas together."""
        return self.consumer_rate * self.replicas


FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}


def _rate(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


HELP = {
    "broker": f"broker between the stages: {', '.join(brokers.names())} (default {brokers.DEFAULT})",
    "broker_impl": "implementation behind a protocol, where there are several ("
                   + "; ".join(f"{s.name}: {', '.join(s.impl_names())}" for s in brokers.specs() if s.impl_names())
                   + ")",
    "launcher": "how the broker is started: auto (docker if an engine answers, else local), docker, local, "
                "or external (an existing broker at --broker-url). Embedded brokers ignore it",
    "broker_url": "URL of an existing broker (--launcher auto then means external; local and docker refuse it)",
    "broker_opt": "KEY=VALUE broker option (repeatable); the adapter's docstring lists them",
    "broker_cpus": "pin the broker to these CPUs, e.g. 1 or 0-1 (docker cpuset; local: CPU affinity)",
    "broker_memory": "cap the broker's memory, e.g. 2g (docker only)",
    "broker_heap": "JVM heap of a JVM broker the testbed starts (default 512m)",
    "no_build": "docker launcher: never build a missing image; fail with the command to build it",
    "broker_nodes": "nodes of a replicated broker cluster (default 1: a single node)",
    "ack": "how stage B acknowledges: per-message, per-batch or async, where the broker allows it "
           "(default: the broker's safest; python -m testbed.brokers list shows each broker's modes)",
    "hosts": "hosts file (YAML): simulated hosts on this machine, or the hosts of an existing Ray cluster "
             "(hosts/three.yaml; docs/hosts.md)",
    "ray_address": "address of an existing Ray cluster (HEAD:PORT) whose nodes carry testbed_host:NAME resources",
    "place": "ROLE=HOST[,HOST...] (repeatable): put stage_a, stage_b or broker on these hosts; streams and "
             "replicas are dealt over the list in turn; unplaced roles stay on this machine",
    "pipeline": "stages: synthetic (service times set exactly) or vision (real detector + classifier)",
    "rate": "offered load in frames/s, all streams together (default 50; closed loop: not used)",
    "arrival": "arrival process of frames: constant, poisson or bursty (open loop), or closed:K: K frames in "
               "flight per stream, a new one when one has finished at stage B (default poisson)",
    "producer_rate": "stage A service rate in frames/s; inf = no service time (default 100)",
    "consumer_rate": "stage B service rate per replica in messages/s; inf = no service time (default 250)",
    "fanout": "messages per frame: N, poisson:MEAN or uniform:LO-HI (default poisson:4)",
    "replicas": "competing stage B consumers (default 1)",
    "streams": "camera streams: stage A processes, each with its own schedule and frame numbers (default 1)",
    "rate_per_stream": "offered frames/s of each stream (default 0: --rate is the total, split over the streams)",
    "batch_max": "stage B takes up to this many messages per batch (default 1)",
    "batch_wait_ms": "stage B waits at most this long to fill a batch (default 0)",
    "service_dist": "service time distribution: fixed, exponential, lognormal (default fixed)",
    "service_mode": "spend service time by sleeping or by burning CPU: sleep, spin (default sleep)",
    "message_bytes": f"bytes per message on the wire, header ({FIXED_SIZE} B) included (default 150528)",
    "image_size": "vision: image set size: small, medium, large (default small)",
    "images": "vision: a folder of your own JPEGs instead of the bundled photographs",
    "preprocess": "vision: preprocessing backend: cpu, dali, or pretensor (frames preprocessed once at "
                  "setup, so stage A skips decode/resize/normalize) (default cpu)",
    "detector": "vision: stage A detector: ssdlite, fasterrcnn, fasterrcnn_resnet50 (default ssdlite)",
    "classifier": "vision: stage B classifier: resnet50, resnet18, mobilenet_v3, resnet152 (default resnet50)",
    "weights": "vision: weights file for the models (default: random init, nothing downloaded)",
    "score_threshold": "vision: detections above this score become crops (with weights) (default 0.5)",
    "device": "vision: cpu or cuda (default cpu)",
    "duration": "seconds of offered load, warm-up included (default 10)",
    "warmup": "first seconds excluded from latency statistics and rates (default 2)",
    "drain": "after the load stops, wait at most this long for messages in flight (default 5)",
    "seed": "seed of every random dimension (arrivals, fan-out, service times), 0 .. 2**32-1 (default 1)",
    "out": "run folder to write (default results/<run_id>)",
    "no_trace": "do not write messages.csv (one row per message)",
    "connect_timeout": "seconds to wait for a broker to answer (default 15)",
    "faults": "a fault during the run (repeatable), e.g. bounce-broker@10s:2s, pause-broker@10s:3s, "
              "kill-consumer:0@20s, net-delay@10s:5s:20ms (docs/faults.md lists every kind)",
    "consumer_restart_s": "seconds between kill-consumer and the replica's restart (default 1)",
    "delivery": "delivery guarantee the broker is set up for: at-most-once or at-least-once "
                "(default: the broker's own settings, as --broker-opt leaves them)",
}

CHOICES = {
    "launcher": LAUNCHERS, "service_dist": SERVICE_DISTS,
    "service_mode": SERVICE_MODES, "pipeline": PIPELINES,
    "image_size": ("small", "medium", "large"), "preprocess": ("cpu", "dali", "pretensor"),
    "detector": ("ssdlite", "fasterrcnn", "fasterrcnn_resnet50"),
    "classifier": ("resnet50", "resnet18", "mobilenet_v3", "resnet152"),
    "device": ("cpu", "cuda"),
}


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Every RunConfig field as a flag with no default (so flags given can be told from defaults)."""
    s = argparse.SUPPRESS
    parser.add_argument("--config", metavar="FILE", default=s,
                        help="YAML file with the same keys as the flags (flags override it)")
    for name, f in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        if name == "faults":
            parser.add_argument("--fault", dest="faults", action="append", metavar="FAULT", default=s,
                                help=HELP[name])
        elif f.type in (bool, "bool"):
            parser.add_argument(flag, action="store_true", default=s, help=HELP[name])
        elif name == "broker_opt":
            parser.add_argument(flag, action="append", metavar="KEY=VALUE", default=s, help=HELP[name])
        elif name == "place":
            parser.add_argument(flag, action="append", metavar="ROLE=HOST[,HOST...]", default=s, help=HELP[name])
        elif f.type in (float, "float"):
            parser.add_argument(flag, type=_rate, metavar="N", default=s, help=HELP[name])
        elif f.type in (int, "int"):
            parser.add_argument(flag, type=int, metavar="N", default=s, help=HELP[name])
        else:
            parser.add_argument(flag, metavar=name.upper(), default=s, help=HELP[name])


def resolve(ns: argparse.Namespace) -> RunConfig:
    """Defaults, then the YAML file, then the flags; then validate."""
    values: dict = {}
    given = vars(ns)
    if "config" in given:
        values.update(read_yaml(given["config"]))
    for k, v in given.items():
        if k in FIELDS:
            if k == "broker_opt":
                v = brokers_base().parse_broker_opts(v)
                values["broker_opt"] = {**values.get("broker_opt", {}), **v}
            elif k == "place":
                values["place"] = {**values.get("place", {}), **parse_place(v, "--place")}
            else:
                values[k] = v
    cfg = RunConfig(**{**RunConfig().to_dict(), **values})
    validate(cfg)
    for line in broker_flags.ignored(cfg):
        print(line, file=sys.stderr)
    return cfg


def brokers_base():
    import brokers.base
    return brokers.base


def read_yaml(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"--config {path!r} cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"--config {path!r} is not valid YAML{where}: "
                          f"{getattr(exc, 'problem', None) or exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path!r} must hold a mapping of keys to values, not {type(data).__name__}")
    out = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in FIELDS:
            raise ConfigError(f"--config {path!r}: unknown key {raw_key!r}; allowed: "
                              + ", ".join(k.replace("_", "-") for k in FIELDS))
        if key == "broker_opt":
            if isinstance(value, dict):
                value = {str(k): str(v) for k, v in value.items()}
            elif isinstance(value, list):
                value = brokers_base().parse_broker_opts([str(v) for v in value])
            else:
                raise ConfigError(f"--config {path!r}: broker-opt must be a mapping or a list of KEY=VALUE")
        elif key == "faults":
            value = faults_value(value, f"--config {path!r}: faults")
        elif key == "place":
            value = place_value(value, f"--config {path!r}: place")
        else:
            value = _coerce(path, key, value)
        out[key] = value
    return out


def _coerce(path: str, key: str, value):
    t = FIELDS[key].type
    try:
        if t in (float, "float"):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if t in (int, "int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if t in (bool, "bool"):
            if not isinstance(value, bool):
                raise ValueError
            return value
        return str(value)
    except (TypeError, ValueError):
        tname = getattr(t, "__name__", t)
        raise ConfigError(f"--config {path!r}: {key.replace('_', '-')} = {value!r} is not a {tname}") from None


#: the roles --place puts on hosts
PLACE_ROLES = ("stage_a", "stage_b", "broker")
_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")


def parse_place(pairs, what: str = "--place") -> dict:
    """``["stage_a=cam", "stage_b=gpu1,gpu2"]`` -> {"stage_a": ["cam"], "stage_b": ["gpu1", "gpu2"]}
    (syntax only; whether the hosts exist is checked against the hosts file, testbed/hosts/)."""
    out: dict = {}
    for pair in pairs or []:
        role, eq, hosts = str(pair).partition("=")
        role = role.strip().replace("-", "_")
        if not eq or not hosts.strip():
            raise ConfigError(f"{what} {pair!r} is not allowed: write ROLE=HOST[,HOST...], e.g. stage_b=gpu1,gpu2")
        out.update(place_value({role: hosts}, what))
    return out


def place_value(value, what: str) -> dict:
    """A ``place:`` mapping (role: host, or role: [hosts], or role: "h1,h2"), checked for syntax."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{what} = {value!r} is not allowed: give a mapping such as "
                          "{stage_a: cam, stage_b: [gpu1, gpu2]}")
    out = {}
    for raw_role, raw_hosts in value.items():
        role = str(raw_role).strip().replace("-", "_")
        if role not in PLACE_ROLES:
            hint = difflib.get_close_matches(role, PLACE_ROLES, n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{what}: role {raw_role!r} is not allowed{did}: use one of {', '.join(PLACE_ROLES)}")
        items = raw_hosts if isinstance(raw_hosts, list) else str(raw_hosts).split(",")
        hosts = [str(h).strip() for h in items]
        for h in hosts:
            if not _HOST_NAME.match(h):
                raise ConfigError(f"{what}: host {h!r} of {role} is not allowed: a host name is 1-32 letters, "
                                  "digits, '-' or '_'")
        out[role] = hosts
    return out


def faults_value(value, what: str) -> list:
    """A YAML ``faults:`` value (one fault or a list of strings/mappings) as a list."""
    if value is None:
        return []
    if isinstance(value, (str, dict)):
        return [value]
    if not isinstance(value, list):
        raise ConfigError(f"{what} = {value!r} is not allowed: give a list of faults such as "
                          "['bounce-broker@10s:2s']")
    return list(value)


def check_faults(cfg: RunConfig) -> None:
    """The fault schedule and the delivery mode: canonical, checked against the run and the broker."""
    from brokers.spec import DELIVERY
    from testbed.faults.schedule import parse_all
    spec = brokers.spec(cfg.broker)
    caps = spec.caps(cfg.broker_impl) if spec.impls else spec.capabilities
    if not (cfg.consumer_restart_s >= 0 and math.isfinite(cfg.consumer_restart_s)):
        raise ConfigError(f"--consumer-restart-s {cfg.consumer_restart_s:g} is not allowed: it must be a "
                          "number of seconds >= 0")
    if cfg.delivery:
        if cfg.delivery not in DELIVERY:
            raise ConfigError(f"--delivery {cfg.delivery!r} is not allowed: use one of {', '.join(DELIVERY)}")
        if cfg.delivery not in caps.delivery:
            raise ConfigError(f"--delivery {cfg.delivery} is not possible with broker {cfg.broker!r}: it "
                              f"gives {' or '.join(caps.delivery)} only")
        opts = {k: str(v) for k, v in spec.delivery_options.get(cfg.delivery, {}).items()}
        cfg.broker_opt = {**opts, **cfg.broker_opt}  # what the user set explicitly wins
    schedule = parse_all(cfg.faults)
    cfg.faults = [str(f) for f in schedule]
    if schedule:
        schedule.validate(cfg.duration, cfg.replicas, cfg.consumer_restart_s, nodes=cfg.broker_nodes)
        hosts = None
        if cfg.hosts:  # partition-host names one of them (testbed/hosts/checks.py)
            from testbed.hosts.checks import fault_hosts
            hosts = fault_hosts(cfg)
        schedule.check_applies(_launcher_kind(cfg, spec), caps, nodes=cfg.broker_nodes, hosts=hosts)


def check_cluster(cfg: RunConfig) -> None:
    """--broker-nodes N > 1: the broker's spec must have a cluster recipe (brokers/<name>/cluster.py);
    the adapter options a cluster of N nodes needs (replication factor, quorum queue, stream replicas,
    WAIT) are set, an explicit --broker-opt winning."""
    if cfg.broker_nodes == 1 or isinstance(cfg.broker_nodes, bool):
        return
    from brokers.spec import cluster_refusal
    spec = brokers.spec(cfg.broker)
    why = cluster_refusal(spec, cfg.broker_impl)
    if why:
        raise ConfigError(f"--broker-nodes {cfg.broker_nodes} is not allowed: {why}")
    recipe = spec.impl(cfg.broker_impl).cluster
    opts = {k: str(v) for k, v in recipe.options(cfg.broker_nodes, cfg).items()}
    cfg.broker_opt = {**opts, **cfg.broker_opt}


def check_ack(cfg: RunConfig) -> None:
    """``--ack``: one of the broker's modes (its spec's ``ack_modes``); "" becomes its default, so run.json
    records the mode used ("none" for a broker without acknowledgements)."""
    from brokers.spec import ACK_MODES, NO_ACK
    spec = brokers.spec(cfg.broker)
    caps = spec.caps(cfg.broker_impl) if spec.impls else spec.capabilities
    if cfg.ack not in ("", NO_ACK, *ACK_MODES):
        extra = "" if caps.ack_modes else f" (broker {cfg.broker!r} has no acknowledgements: leave --ack out)"
        raise ConfigError(f"--ack {cfg.ack!r} is not allowed: use one of {', '.join(ACK_MODES)}{extra}")
    if not caps.ack_modes:
        if cfg.ack not in ("", NO_ACK):
            raise ConfigError(f"--ack {cfg.ack} is not possible with broker {cfg.broker!r}: it has no "
                              "acknowledgements (nothing is acked, at most once); leave --ack out")
        cfg.ack = NO_ACK
    elif not cfg.ack:
        cfg.ack = caps.ack_default
    elif cfg.ack not in caps.ack_modes:
        raise ConfigError(f"--ack {cfg.ack} is not possible with broker {cfg.broker!r}: it has "
                          f"{', '.join(caps.ack_modes)}")


def _launcher_kind(cfg: RunConfig, spec) -> str:
    """The launcher as the fault checks see it (testbed.launchers.resolve_launcher without probing an
    engine: auto is docker or local, and every fault applies to both alike)."""
    if not spec.needs_server:
        takes_url = spec.embedded is not None and bool(spec.embedded.url_schemes)
        return "external" if (cfg.broker_url and takes_url) else "embedded"
    return "local" if cfg.launcher == "auto" else cfg.launcher


def _rate_flag(cfg: RunConfig) -> str:
    """The flag that set the offered rate, as the user wrote it."""
    if cfg.rate_per_stream:
        return f"--rate-per-stream {cfg.rate_per_stream:g} x --streams {cfg.streams}"
    return f"--rate {cfg.rate:g}"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def validate(cfg: RunConfig) -> None:
    brokers.check_name(cfg.broker)
    for name, allowed in CHOICES.items():
        v = getattr(cfg, name)
        if v not in allowed:
            raise ConfigError(f"{_flag(name)} {v!r} is not allowed: use one of {', '.join(allowed)}")
    if not (cfg.rate > 0 and math.isfinite(cfg.rate)):
        raise ConfigError(f"--rate {cfg.rate:g} is not allowed: the offered rate must be a number > 0 (frames/s)")
    for name in ("producer_rate", "consumer_rate"):
        v = getattr(cfg, name)
        if not v > 0:  # NaN fails too
            raise ConfigError(f"{_flag(name)} {v:g} is not allowed: a service rate must be > 0 (or inf)")
    Fanout.parse(cfg.fanout)
    for name, lo in (("replicas", 1), ("batch_max", 1)):
        if getattr(cfg, name) < lo:
            raise ConfigError(f"{_flag(name)} {getattr(cfg, name)} is not allowed: it must be >= {lo}")
    if cfg.replicas > 64:
        raise ConfigError(f"--replicas {cfg.replicas} is not allowed: at most 64")
    for name, lo, hi in (("streams", 1, 64), ("broker_nodes", 1, 9)):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not lo <= v <= hi:
            raise ConfigError(f"{_flag(name)} {v!r} is not allowed: it must be a whole number from {lo} to {hi}")
    if not (cfg.rate_per_stream >= 0 and math.isfinite(cfg.rate_per_stream)):
        raise ConfigError(f"--rate-per-stream {cfg.rate_per_stream:g} is not allowed: it must be a number of "
                          "frames/s > 0 (or 0: --rate split over the streams)")
    if cfg.hosts and cfg.ray_address:
        raise ConfigError("--hosts and --ray-address are not allowed together: a hosts file says where its Ray "
                          "cluster is (ray: simulated, or its address)")
    if cfg.place and not (cfg.hosts or cfg.ray_address):
        raise ConfigError("--place needs --hosts FILE or --ray-address HEAD:PORT: there are no hosts to place on")
    for name in ("batch_wait_ms", "warmup", "drain"):
        v = getattr(cfg, name)
        if not (v >= 0 and math.isfinite(v)):
            raise ConfigError(f"{_flag(name)} {v:g} is not allowed: it must be a number >= 0")
    if not (cfg.duration > 0 and math.isfinite(cfg.duration)):
        raise ConfigError(f"--duration {cfg.duration:g} is not allowed: it must be a number of seconds > 0")
    if cfg.duration <= cfg.warmup:
        raise ConfigError(f"--duration {cfg.duration:g} is not allowed: it must be longer than "
                          f"--warmup {cfg.warmup:g} (the warm-up is part of the duration)")
    check_arrival(cfg.arrival)
    if closed_window(cfg.arrival) and cfg.rate_per_stream:
        raise ConfigError(f"--rate-per-stream {cfg.rate_per_stream:g} is not allowed with --arrival "
                          f"{cfg.arrival}: a closed loop sends a frame when one finishes, at no set rate")
    frames = total_rate(cfg) * cfg.duration
    if frames < 1 and not closed_window(cfg.arrival):
        raise ConfigError(f"{_rate_flag(cfg)} x --duration {cfg.duration:g} s offers {frames:.3g} frames: "
                          "not allowed, a run must offer at least one frame")
    messages = frames * cfg.fanout_dist.mean
    if messages > MAX_MESSAGES and not closed_window(cfg.arrival):
        raise ConfigError(f"{_rate_flag(cfg)} x --duration {cfg.duration:g} s x fan-out mean "
                          f"{cfg.fanout_dist.mean:g} offers {messages:.3g} messages: not allowed, at most "
                          f"{MAX_MESSAGES:,} a run (every frame's send time and every message's record are "
                          "held in memory); lower --rate or --duration")
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, numbers.Integral) or not 0 <= cfg.seed <= SEED_MAX:
        raise ConfigError(f"--seed {cfg.seed!r} is not allowed: it must be a whole number from 0 to "
                          f"{SEED_MAX} (2**32-1)")
    if not (FIXED_SIZE <= cfg.message_bytes <= MAX_MESSAGE_BYTES):
        raise ConfigError(f"--message-bytes {cfg.message_bytes} is not allowed: it must be between the "
                          f"{FIXED_SIZE}-byte header and {MAX_MESSAGE_BYTES} bytes")
    if cfg.connect_timeout <= 0:
        raise ConfigError(f"--connect-timeout {cfg.connect_timeout:g} is not allowed: it must be > 0")
    if cfg.launcher == "external" and not cfg.broker_url and brokers.spec(cfg.broker).needs_server:
        raise ConfigError("--launcher external needs --broker-url (the address of the broker you run)")
    # every broker flag's value whatever the broker, and where each applies (testbed/broker_flags.py)
    broker_flags.check(cfg)
    if cfg.hosts or cfg.ray_address:  # the hosts file, --place and root (testbed/hosts/checks.py)
        from testbed.hosts.checks import check_run
        check_run(cfg)
    # options are checked against the adapter's table here, before anything starts
    check_cluster(cfg)
    check_faults(cfg)
    check_ack(cfg)
    brokers_base().resolve_options(brokers.get(cfg.broker), cfg.broker_opt)
    if cfg.images and not os.path.isdir(cfg.images):
        raise ConfigError(f"--images {cfg.images!r} is not a folder")
    if cfg.weights and not os.path.isfile(cfg.weights):
        raise ConfigError(f"--weights {cfg.weights!r} is not a file")
    if cfg.pipeline == "vision":  # images folder, DALI, CUDA and --weights (stages/vision/__init__.py)
        import stages.vision
        stages.vision.check(cfg)
