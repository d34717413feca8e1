"""A hosts file (YAML): where a run's stages and brokers can be placed, and what each host is.

    ray: simulated            # simulated (namespaces on this machine) | HEAD:PORT of an existing Ray cluster
    hosts:
      cam:  {cpus: 1, clock_offset_s: 1000}
      mq:   {cpus: 1}
      gpu1: {cpus: 1, clock_offset_s: -37.5, link_mbit: 200}

Per host: ``cpus`` (a whole number >= 1: the Ray node's CPUs; on an existing cluster, the least the node
must advertise), ``clock_offset_s`` (simulated only: the host's monotonic clock runs this far from the
orchestrator's, a time namespace), ``link_mbit`` (simulated only: the host's link, a token bucket on
its veth in both directions). Every check fails with one line (``ConfigError``) naming the value.
``check_place`` checks a run's ``--place`` against the hosts.
"""
from __future__ import annotations

import difflib
import math
import numbers
import re
from dataclasses import dataclass, field

import yaml

from testbed.errors import ConfigError
from testbed.hosts.placement import ROLES as PLACE_ROLES  # = testbed.config.PLACE_ROLES (config reads this module)

SIMULATED = "simulated"
TOP_KEYS = ("ray", "hosts")
HOST_KEYS = ("cpus", "clock_offset_s", "link_mbit")
MAX_HOSTS = 64
#: the kernel keeps a time namespace's offsets within about +-146 years; a test bed needs far less
MAX_OFFSET_S = 10 * 365 * 86400.0
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
ADDRESS = re.compile(r"^(?P<host>[A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:]+\]):(?P<port>[0-9]{1,5})$")


@dataclass(frozen=True)
class HostSpec:
    name: str
    cpus: int = 1
    clock_offset_s: float = 0.0
    link_mbit: float | None = None

    @property
    def clock_offset_ns(self) -> int:
        return round(self.clock_offset_s * 1e9)


@dataclass(frozen=True)
class HostsSpec:
    ray: str = SIMULATED                        # "simulated" or "HEAD:PORT"
    hosts: dict = field(default_factory=dict)   # name -> HostSpec, in file order
    path: str = ""                              # where it was read from ("" = built in code)

    @property
    def simulated(self) -> bool:
        return self.ray == SIMULATED

    @property
    def names(self) -> list[str]:
        return list(self.hosts)

    def to_dict(self) -> dict:
        """The file's content again (run.json, the state of hosts that are up)."""
        out = {}
        for h in self.hosts.values():
            d = {"cpus": h.cpus}
            if h.clock_offset_s:
                d["clock_offset_s"] = h.clock_offset_s
            if h.link_mbit is not None:
                d["link_mbit"] = h.link_mbit
            out[h.name] = d
        return {"ray": self.ray, "hosts": out}


def _did_you_mean(key: str, allowed) -> str:
    hint = difflib.get_close_matches(key, allowed, n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def load(path: str) -> HostsSpec:
    """The hosts file at ``path``, parsed and checked."""
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"--hosts {path!r}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"--hosts {path!r} cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"--hosts {path!r} is not valid YAML{where}") from None
    return parse(data, path)


def parse(data, path: str = "") -> HostsSpec:
    """A hosts file's content (the parsed YAML) as a ``HostsSpec``; one line naming what is wrong."""
    what = f"--hosts {path!r}" if path else "hosts"
    if not isinstance(data, dict):
        raise ConfigError(f"{what}: give a mapping with 'ray' and 'hosts', e.g. "
                          "{ray: simulated, hosts: {cam: {cpus: 1}}}")
    for key in data:
        if key not in TOP_KEYS:
            raise ConfigError(f"{what}: key {key!r} is not allowed{_did_you_mean(str(key), TOP_KEYS)}: "
                              f"use {', '.join(TOP_KEYS)}")
    ray = data.get("ray", SIMULATED)
    ray = SIMULATED if ray is None else str(ray).strip()
    if ray != SIMULATED:
        m = ADDRESS.match(ray)
        if not m or not 1 <= int(m.group("port")) <= 65535:
            raise ConfigError(f"{what}: ray = {ray!r} is not allowed: write 'simulated' (namespaces on this "
                              "machine) or the address of an existing Ray cluster, HEAD:PORT")
    raw = data.get("hosts")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{what}: 'hosts' must be a mapping of host names, e.g. hosts: {{cam: {{cpus: 1}}}}")
    if len(raw) > MAX_HOSTS:
        raise ConfigError(f"{what}: {len(raw)} hosts is not allowed: at most {MAX_HOSTS}")
    hosts = {}
    for raw_name, fields in raw.items():
        name = str(raw_name)
        if not NAME.match(name):
            raise ConfigError(f"{what}: host {name!r} is not allowed: a host name is 1-32 letters, digits, "
                              "'-' or '_' (starting with a letter or digit)")
        hosts[name] = _host(name, {} if fields is None else fields, ray == SIMULATED, what)
    return HostsSpec(ray, hosts, path)


def _host(name: str, fields, simulated: bool, what: str) -> HostSpec:
    if not isinstance(fields, dict):
        raise ConfigError(f"{what}: host {name!r} = {fields!r} is not allowed: give a mapping such as "
                          "{cpus: 1, clock_offset_s: 0}")
    for key in fields:
        if key not in HOST_KEYS:
            raise ConfigError(f"{what}: host {name!r}: key {key!r} is not allowed"
                              f"{_did_you_mean(str(key), HOST_KEYS)}: use {', '.join(HOST_KEYS)}")
    cpus = fields.get("cpus", 1)
    if isinstance(cpus, bool) or not isinstance(cpus, numbers.Integral) or cpus < 1:
        raise ConfigError(f"{what}: host {name!r}: cpus = {cpus!r} is not allowed: a whole number >= 1")
    offset = fields.get("clock_offset_s", 0.0)
    if isinstance(offset, bool) or not isinstance(offset, numbers.Real) or not math.isfinite(offset) \
            or abs(offset) > MAX_OFFSET_S:
        raise ConfigError(f"{what}: host {name!r}: clock_offset_s = {offset!r} is not allowed: a finite number "
                          f"of seconds within +-{MAX_OFFSET_S:.0f}")
    if offset and not simulated:
        raise ConfigError(f"{what}: host {name!r}: clock_offset_s is only for simulated hosts (ray: simulated); "
                          "a real host's clock is measured, not set")
    link = fields.get("link_mbit")
    if link is not None:
        if isinstance(link, bool) or not isinstance(link, numbers.Real) or not (math.isfinite(link) and link > 0):
            raise ConfigError(f"{what}: host {name!r}: link_mbit = {link!r} is not allowed: a number of Mbit/s > 0")
        if not simulated:
            raise ConfigError(f"{what}: host {name!r}: link_mbit is only for simulated hosts (ray: simulated); "
                              "a real host's link is what its network gives")
    return HostSpec(name, int(cpus), float(offset), None if link is None else float(link))


def check_place(place: dict, spec: HostsSpec, what: str = "--place") -> dict:
    """``place`` (RunConfig.place: role -> [host names]) checked against the hosts of ``spec``: every
    role known, every host there. Returns ``place`` unchanged."""
    for role, names in (place or {}).items():
        if role not in PLACE_ROLES:
            raise ConfigError(f"{what}: role {role!r} is not allowed{_did_you_mean(role, PLACE_ROLES)}: "
                              f"use one of {', '.join(PLACE_ROLES)}")
        if not names:
            raise ConfigError(f"{what}: {role} names no host")
        for name in names:
            if name not in spec.hosts:
                where = f" in {spec.path}" if spec.path else ""
                raise ConfigError(f"{what}: {role}={name}: there is no host {name!r}{_did_you_mean(name, spec.names)}"
                                  f"; the hosts{where} are {', '.join(spec.names)}")
    return place
