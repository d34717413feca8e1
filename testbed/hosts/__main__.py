"""python -m testbed.hosts up FILE | status | down: simulated hosts that stay up between runs.

The package does the work (testbed/hosts/cluster.py); this is the command line over it.
"""
from __future__ import annotations

import argparse
import signal
import sys

from testbed.cli import OneLineParser
from testbed.errors import ConfigError, TestbedError

DESCRIPTION = """\
Simulated hosts on this machine (root): a network namespace and a time namespace per host, on a
private bridge, each with a Ray worker node; the orchestrator's clock is mapped onto each host's.

  up FILE   bring up the hosts of a hosts file (YAML, e.g. hosts/three.yaml) and leave them up;
            prints each host's address and its clock offset as measured
  status    what is up: hosts, addresses, whether each Ray node is alive, the clock offset and its
            uncertainty measured now
  down      remove all of it (namespaces, veths, bridge, Ray processes, what they started)

A run with --hosts FILE uses the hosts already up from the same file, else brings them up for the run
and removes them after. Only one set of hosts stays up at a time. docs/hosts.md has the details.
"""


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m testbed.hosts", description=DESCRIPTION,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="{up,status,down}", parser_class=OneLineParser)
    up = sub.add_parser("up", help="bring simulated hosts up and leave them up",
                        description="Bring up the simulated hosts of FILE (root) and leave them up.")
    up.add_argument("file", metavar="FILE", help="hosts file (YAML), e.g. hosts/three.yaml")
    sub.add_parser("status", help="what is up, with each host's clock measured now",
                   description="List the simulated hosts that are up, their Ray nodes and clocks.")
    sub.add_parser("down", help="remove the simulated hosts that are up",
                   description="Remove the simulated hosts left up (and leftovers of dead runs).")
    return p


def _fmt_offset(ns: float) -> str:
    return f"{ns / 1e9:+.6f} s"


def _clock_line(name: str, h, configured_s: float | None) -> str:
    r = h.clock.report()
    conf = f" (configured {configured_s:+g} s)" if configured_s is not None else ""
    return (f"  {name:<12} {h.address:<15} clock offset {_fmt_offset(r['clock_offset_ns'])} "
            f"+- {r['clock_uncertainty_us']:g} us{conf}, round trip {r['clock_rtt_us'].get('min', 0):g} us")


def cmd_up(path: str) -> int:
    from testbed.hosts import cluster, spec as hosts_spec
    from testbed.hosts.state import digest
    spec = hosts_spec.load(path)
    if not spec.simulated:
        raise ConfigError(f"{path}: ray = {spec.ray} is an existing cluster: nothing to bring up (a run uses it "
                          "with --hosts or --ray-address)")
    kept = cluster.up_state()
    if kept is not None:
        if kept.digest == digest(spec.to_dict()):
            print(f"the hosts of {path} are already up ({kept.id}, since {kept.created}): "
                  "python -m testbed.hosts status")
            return 0
        raise ConfigError(f"hosts of {kept.spec_path or 'another file'} are up ({', '.join(kept.hosts)}): "
                          "python -m testbed.hosts down first")
    c = cluster.up(spec, persistent=True, say=lambda line: print(line, flush=True))
    try:
        print(f"up: {len(c.hosts)} simulated hosts of {path} ({c.state.id}), orchestrator at {c.address}")
        for name, h in c.hosts.items():
            print(_clock_line(name, h, spec.hosts[name].clock_offset_s))
    finally:
        c.close()  # the driver and agents only: the hosts stay up
    return 0


def cmd_status() -> int:
    from testbed.hosts import cluster, ray_nodes
    from testbed.hosts.state import all_states
    states = all_states()
    if not states:
        print("no simulated hosts are up")
        return 0
    for st in states:
        if not st.persistent:
            who = (f"a run's (pid {st.owner_pid})" if st.owner_alive()
                   else "left by a dead run (the next sweep removes it)")
            print(f"{st.id}: {', '.join(st.hosts)} on {st.subnet}: {who}")
            continue
        print(f"{st.id}: hosts of {st.spec_path} up since {st.created}, bridge {st.bridge} {st.bridge_address}, "
              f"Ray head {st.ray_address}")
        try:
            c = cluster.attach(st)
        except TestbedError as exc:
            print(f"  cannot reach them: {exc}")
            for name in st.hosts:
                print(f"  {name:<12} {st.host(name).address}")
            continue
        try:
            nodes = ray_nodes.advertised_hosts(c.ray)
            for name, h in c.hosts.items():
                alive = "Ray node alive" if name in nodes else "Ray node DOWN"
                print(_clock_line(name, h, st.host(name).clock_offset_ns / 1e9) + f", {alive}")
        finally:
            c.close()
    return 0


def cmd_down() -> int:
    from testbed.hosts import netns, teardown
    from testbed.hosts.state import all_states, lock
    states = all_states()
    removed = 0
    for st in states:
        if st.persistent or not st.owner_alive():
            netns.require_root()
            with lock():
                teardown.remove(st, force=True)
            print(f"removed {st.id}: {', '.join(st.hosts)}")
            removed += 1
        else:
            print(f"left alone {st.id}: a run's hosts (pid {st.owner_pid})")
    for line in teardown.sweep():
        print(line)
        removed += 1
    if not removed:
        print("nothing to remove")
    return 0


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.command is None:
        parser().print_help()
        return 2

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    try:
        if args.command == "up":
            return cmd_up(args.file)
        if args.command == "status":
            return cmd_status()
        return cmd_down()
    except TestbedError as exc:
        print(f"python -m testbed.hosts {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: what was made is removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
