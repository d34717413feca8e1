"""Experiment files (``experiments/*.yaml``): the schema, its checks, and the expansion into runs.

An experiment file declares a grid; every combination of the grid's values is one configuration, run
``repetitions`` times::

    name: broker_compare            # optional; names the sweep in compare's output
    description: ...                # optional
    repetitions: 2                  # optional, default 1; repetition k runs with seed + k
    grid:                           # key -> non-empty list of values; the product is run
      broker: [NAME, NAME]          # names from brokers.names()
      message_bytes: [1024, 153600]
      consumer_capacity: [0.8, 1.0, 1.2]
    fixed:                          # key -> one value, the same in every run
      arrival: bursty
      duration: 15

Keys (in ``grid`` or ``fixed``, not both) are the fields of ``RunConfig`` (every ``testbed.run`` flag,
with ``_`` or ``-``; ``out`` excepted: the sweep names the folders), plus two ways to set stage B's rate
relative to the offered crop rate (``rate`` x mean fan-out, in messages/s), so the load stays the same
whatever the rate:

    consumer_capacity   stage B capacity (all replicas) as a fraction of the offered crop rate:
                        0.8 = the consumer can take 80% of what is offered (overloaded, rho 1.25)
    consumer_load       rho = offered crop rate / stage B capacity: 0.8 = 80% busy (rho 0.8)

At most one of ``consumer_rate``, ``consumer_capacity``, ``consumer_load`` may be given.

Everything is checked before anything runs: unknown keys (with "did you mean"), keys given twice,
wrong types, empty lists, values the run itself would refuse (``config.validate`` on every point),
brokers whose adapter does not import and pipelines whose stages do not import. Each problem is one
``ConfigError`` line naming the file, the line and the key.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib.util
import itertools
import json
import math
import re
from dataclasses import dataclass, field

import yaml

import brokers
from testbed import broker_flags
from testbed.config import FIELDS, RunConfig, validate
from testbed.errors import ConfigError
from testbed.orchestration.campaign import BROKER_KEYS, broker_key

TOP_KEYS = ("name", "description", "repetitions", "grid", "fixed")
DERIVED = ("consumer_capacity", "consumer_load")
RUN_KEYS = tuple(k for k in FIELDS if k != "out") + DERIVED
#: Short names for run folder names (keys not listed keep their own name).
ALIAS = {"rate": "r", "message_bytes": "b", "fanout": "f", "replicas": "x", "consumer_capacity": "cap",
         "consumer_load": "rho", "producer_rate": "pa", "consumer_rate": "cb", "image_size": "img",
         "preprocess": "pre", "arrival": "arr", "batch_max": "bm", "pipeline": "p"}


def _type_of(key: str) -> str:
    if key in DERIVED:
        return "float"
    t = FIELDS[key].type
    return getattr(t, "__name__", t)


@dataclass
class Point:
    """One run of the sweep: its configuration, its grid values and its folder name."""

    cfg: RunConfig
    values: dict            # the grid values of this point (what varies), plus the repetition
    repetition: int
    name: str
    block: tuple            # the broker settings shared by a block of runs

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values.items())


@dataclass
class Sweep:
    path: str
    name: str
    description: str
    repetitions: int
    grid: dict
    fixed: dict
    lines: dict = field(default_factory=dict)
    points: list = field(default_factory=list)
    #: one line per flag some points ignore (testbed/broker_flags.py), each once
    ignored: list = field(default_factory=list)


class _Where:
    """Line numbers of every key and list item, from the YAML node tree."""

    def __init__(self, path: str):
        self.path = path
        self.lines: dict[tuple, int] = {}

    def line(self, *keys) -> int | None:
        while keys:
            if keys in self.lines:
                return self.lines[keys]
            keys = keys[:-1]
        return None

    def error(self, keys: tuple, message: str) -> ConfigError:
        n = self.line(*keys)
        where = f" line {n}" if n else ""
        dotted = ".".join(str(k) for k in keys if not isinstance(k, int))
        prefix = f"{dotted}: " if dotted else ""
        return ConfigError(f"{self.path}{where}: {prefix}{message}")


def _walk(node, data, keys: tuple, where: _Where) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for knode, vnode in node.value:
            k = str(knode.value)
            line = knode.start_mark.line + 1
            if k in seen:
                where.lines[keys + (k,)] = line
                raise where.error(keys + (k,), f"key {k!r} appears twice (lines {seen[k]} and {line})")
            seen[k] = line
            where.lines[keys + (k,)] = line
            if isinstance(data, dict):
                kd = next((dk for dk in data if str(dk) == k), None)
                if kd is not None:
                    _walk(vnode, data[kd], keys + (k,), where)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            where.lines[keys + (i,)] = item.start_mark.line + 1
            if isinstance(data, list) and i < len(data):
                _walk(item, data[i], keys + (i,), where)


def read(path: str) -> tuple[dict, _Where]:
    """The file's data and the line of every key, or one ConfigError line."""
    where = _Where(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        w = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{w}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if data is None:
        raise ConfigError(f"{path}: the file is empty: it needs at least a 'grid' mapping")
    if not isinstance(data, dict):
        raise ConfigError(f"{path} line 1: the file must hold a mapping (name, grid, fixed, ...), "
                          f"not a {type(data).__name__}")
    _walk(node, data, (), where)
    return data, where


def _suggest(key: str, allowed) -> str:
    hint = difflib.get_close_matches(key, allowed, n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def _convert(key: str, value, keys: tuple, where: _Where):
    """A YAML value as the field's type, or an error naming the key and its line."""
    t = _type_of(key)
    if key == "faults":  # one schedule: a list of fault strings or mappings (config.validate checks them)
        from testbed.config import faults_value
        try:
            return faults_value(value, "faults")
        except ConfigError as exc:
            raise where.error(keys, str(exc)) from None
    if key == "place":
        from testbed.config import place_value
        try:
            return place_value(value, "place")
        except ConfigError as exc:
            raise where.error(keys, str(exc)) from None
    if key == "broker_opt":
        if not isinstance(value, dict):
            raise where.error(keys, f"{value!r} is not allowed: broker_opt is a mapping of option: value")
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, (dict, list)):
        raise where.error(keys, f"expected one {t}, got a {'mapping' if isinstance(value, dict) else 'list'}")
    if t == "float":
        if isinstance(value, str) and value.strip().lower() in ("inf", "+inf"):
            return math.inf
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise where.error(keys, f"{value!r} is not a number")
        return float(value)
    if t == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (isinstance(value, float) and not value.is_integer()):
            raise where.error(keys, f"{value!r} is not a whole number")
        return int(value)
    if t == "bool":
        if not isinstance(value, bool):
            raise where.error(keys, f"{value!r} is not true or false")
        return value
    if value is None:
        raise where.error(keys, "has no value")
    if isinstance(value, bool):
        raise where.error(keys, f"{value!r} is not a text value")
    return value if isinstance(value, str) else (f"{value:g}" if isinstance(value, float) else str(value))


def _norm(key) -> str:
    return str(key).replace("-", "_")


def _section(data: dict, name: str, where: _Where, is_grid: bool) -> dict:
    raw = data.get(name)
    if raw is None:
        if is_grid:
            if name in data:
                raise where.error((name,), "is empty: give at least one key with a list of values")
            raise ConfigError(f"{where.path}: no 'grid' mapping: declare at least one key with a list of values, "
                              f"e.g. grid: {{broker: [{', '.join(brokers.names()[:2])}]}}")
        return {}
    if not isinstance(raw, dict):
        raise where.error((name,), f"must be a mapping of key: {'[values]' if is_grid else 'value'}, "
                                   f"not a {type(raw).__name__}")
    if is_grid and not raw:
        raise where.error((name,), "is empty: give at least one key with a list of values")
    out = {}
    for raw_key, value in raw.items():
        key = _norm(raw_key)
        keys = (name, str(raw_key))
        if key not in RUN_KEYS:
            raise where.error(keys[:1] + (str(raw_key),),
                              f"unknown key {str(raw_key)!r}{_suggest(key, RUN_KEYS)}; allowed: "
                              + ", ".join(RUN_KEYS))
        if is_grid:
            if not isinstance(value, list):
                raise where.error(keys, f"must be a list of values, e.g. [{value!r}], not one "
                                        f"{type(value).__name__ if value is not None else 'empty value'}")
            if not value:
                raise where.error(keys, "is an empty list: give at least one value")
            vals = [_convert(key, v, keys + (i,), where) for i, v in enumerate(value)]
            seen = []
            for i, v in enumerate(vals):
                if v in seen:
                    raise where.error(keys + (i,), f"value {v!r} is listed twice")
                seen.append(v)
            out[key] = vals
        else:
            out[key] = _convert(key, value, keys, where)
    return out


def load(path: str, brokers_override: list[str] | None = None, overrides: dict | None = None) -> Sweep:
    """Read, check and expand an experiment file. ``brokers_override`` replaces the broker list;
    ``overrides`` (key -> text, from ``--set``) replace fixed values."""
    data, where = read(path)
    for k in data:
        if str(k) not in TOP_KEYS:
            raise where.error((str(k),), f"unknown key {str(k)!r}{_suggest(str(k), TOP_KEYS)}; "
                                         f"allowed at the top: {', '.join(TOP_KEYS)}")
    name = data.get("name", "")
    if not isinstance(name, (str, int, float)) or isinstance(name, bool) or name is None:
        raise where.error(("name",), "must be a text value")
    description = data.get("description", "") or ""
    if not isinstance(description, str):
        raise where.error(("description",), "must be a text value")
    reps = data.get("repetitions", 1)
    if isinstance(reps, bool) or not isinstance(reps, int) or reps < 1:
        raise where.error(("repetitions",), f"{reps!r} is not allowed: a whole number >= 1")
    grid = _section(data, "grid", where, True)
    fixed = _section(data, "fixed", where, False)
    for k in grid:
        if k in fixed:
            raise where.error(("fixed", k), f"is given in both grid (line {where.line('grid', k)}) and fixed; "
                                            "keep one")
    if brokers_override:
        grid.pop("broker", None)
        fixed.pop("broker", None)
        grid["broker"] = list(dict.fromkeys(brokers_override))
        grid = {"broker": grid.pop("broker"), **grid}
    for text_key, text in (overrides or {}).items():
        key = _norm(text_key)
        if key not in RUN_KEYS:
            raise ConfigError(f"--set {text_key}: unknown key{_suggest(key, RUN_KEYS)}; allowed: "
                              + ", ".join(RUN_KEYS))
        grid.pop(key, None)
        fixed[key] = _convert(key, yaml.safe_load(text) if text != "" else "", ("--set " + text_key,),
                              _Where("--set"))
    given = [k for k in ("consumer_rate", *DERIVED) if k in grid or k in fixed]
    if len(given) > 1:
        k = given[1]
        sec = "grid" if k in grid else "fixed"
        raise where.error((sec, k), f"give only one of {', '.join(given)}: each sets stage B's rate")
    sweep = Sweep(path, str(name or ""), description, reps, grid, fixed, where.lines)
    _check_imports(sweep, where)
    sweep.points = expand(sweep, where)
    return sweep


def _where_value(sweep: Sweep, key: str, value=None) -> tuple:
    if key in sweep.grid:
        vals = sweep.grid[key]
        if value in vals:
            return ("grid", key, vals.index(value))
        return ("grid", key)
    return ("fixed", key)


def _check_imports(sweep: Sweep, where: _Where) -> None:
    """Brokers and pipelines must import now, not fail an hour into the sweep."""
    import stages
    names = sweep.grid.get("broker", [sweep.fixed.get("broker", RunConfig.broker)])
    for b in names:
        try:
            brokers.check_name(b)
            module_name = brokers.REGISTRY[b].split(":")[0]
            if importlib.util.find_spec(module_name) is None:
                raise ConfigError(f"its adapter module {module_name} does not exist (yet); "
                                  f"drop {b!r} from the list or use --brokers")
            brokers.get(b)
        except ConfigError as exc:
            raise where.error(_where_value(sweep, "broker", b), f"broker {b!r} cannot be used: {exc}") from None
    for p in sweep.grid.get("pipeline", [sweep.fixed.get("pipeline", RunConfig.pipeline)]):
        if p not in stages.PIPELINES:
            raise where.error(_where_value(sweep, "pipeline", p),
                              f"{p!r} is not allowed: use one of {', '.join(stages.PIPELINES)}")
        try:
            stages.module(p)
        except ImportError as exc:
            raise where.error(_where_value(sweep, "pipeline", p),
                              f"pipeline {p!r} cannot be used: its stages do not import ({exc})") from None


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dict):
        return "+".join(f"{k}={x}" for k, x in sorted(v.items())) or "none"
    return str(v)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "", text.replace(":", "").replace("-", "to"))


def config_hash(cfg: RunConfig) -> str:
    d = cfg.to_dict()
    d.pop("out", None)
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:6]


def build_config(values: dict) -> RunConfig:
    """A RunConfig from grid + fixed values, with stage B's rate derived where asked."""
    base = {k: v for k, v in values.items() if k not in DERIVED}
    cfg = RunConfig(**{**RunConfig().to_dict(), **base})
    offered = cfg.offered_message_rate  # messages/s (rate x mean fan-out)
    if "consumer_capacity" in values:
        cfg.consumer_rate = values["consumer_capacity"] * offered / cfg.replicas
    elif "consumer_load" in values:
        cfg.consumer_rate = offered / (values["consumer_load"] * cfg.replicas)
    return cfg


def expand(sweep: Sweep, where: _Where) -> list[Point]:
    """Every grid point x repetition, ordered so runs sharing a broker are consecutive (one block)."""
    keys = list(sweep.grid)
    broker_first = [k for k in keys if k in BROKER_KEYS] + [k for k in keys if k not in BROKER_KEYS]
    combos = [dict(zip(broker_first, c)) for c in itertools.product(*(sweep.grid[k] for k in broker_first))]
    varying = [k for k in broker_first if len(sweep.grid[k]) > 1 or k == "broker"]
    blocks: dict[tuple, list[dict]] = {}
    for combo in combos:
        values = {**sweep.fixed, **combo}
        try:
            for k in ("consumer_capacity", "consumer_load"):
                if k in values and not (values[k] > 0 and math.isfinite(values[k])):
                    raise ConfigError(f"--{k.replace('_', '-')} {values[k]:g} is not allowed: a number > 0")
            cfg = build_config(values)
            validate(cfg)
            sweep.ignored += [line for line in broker_flags.ignored(cfg) if line not in sweep.ignored]
        except ConfigError as exc:
            msg = str(exc)
            m = re.match(r"--([a-z-]+)", msg)
            key = _norm(m.group(1)) if m else ""
            if key in ("consumer_rate",) and key not in values:
                key = next((k for k in DERIVED if k in values), key)
            at = _where_value(sweep, key, values.get(key)) if key in values else ()
            point = ", ".join(f"{k}={_fmt(v)}" for k, v in combo.items())
            raise where.error(at, f"{msg} (grid point {point})") from None
        block = broker_key(cfg)
        blocks.setdefault(block, []).append({"cfg": cfg, "combo": combo})
    points = []
    for block, entries in blocks.items():
        for rep in range(sweep.repetitions):
            for e in entries:
                cfg = dataclasses.replace(e["cfg"], seed=e["cfg"].seed + rep, broker_opt=dict(e["cfg"].broker_opt))
                shown = {k: e["combo"][k] for k in varying}
                parts = [_slug(_fmt(shown.get("broker", cfg.broker)))]
                parts += [f"{ALIAS.get(k, k)}{_slug(_fmt(v))}" for k, v in shown.items() if k != "broker"]
                name = "-".join(parts + [f"rep{rep + 1}", config_hash(cfg)])
                points.append(Point(cfg, {**shown, "repetition": rep + 1}, rep + 1, name, block))
    return points
