"""``python -m testbed.brokers``: manage what the broker launchers need and leave behind.

    python -m testbed.brokers list                 # brokers, their launchers and options
    python -m testbed.brokers install BROKER       # fetch (once, cached) what its local recipe needs
    python -m testbed.brokers cleanup              # remove every broker process/container a run left
    python -m testbed.brokers engine status|start|stop   # the Docker engine the docker launcher uses
    python -m testbed.brokers images [--build]     # the image per broker, present or not; build missing
"""
from __future__ import annotations

import argparse
import sys

import brokers
from testbed.cli import OneLineParser
from testbed.errors import TestbedError



def cmd_list(args) -> int:
    for name in brokers.names():
        spec = brokers.spec(name)
        caps = spec.capabilities
        where = "embedded (no server)" if not spec.needs_server else \
            "launchers: local, docker, external" + (f"; --broker-impl {', '.join(spec.impl_names())}"
                                                    if spec.impl_names() else "")
        print(f"{name}: {spec.summary}")
        print(f"    {where}; dispatch {caps.dispatch}, {'/'.join(caps.delivery)}"
              f"{', redelivers' if caps.redelivers else ''}{', reports its backlog' if caps.reports_backlog else ''}")
        acks = (f"--ack {' | '.join(caps.ack_modes)} (default {caps.ack_default})" if caps.ack_modes else
                "no acknowledgements (--ack does not apply)")
        print(f"    {acks}")
        for impl in spec.impls:  # --broker-nodes N: the cluster recipe, or why there is none
            which = f" ({impl.name})" if impl.name else ""
            said = f"--broker-nodes 3: {impl.cluster.replication(3, None)}" if impl.cluster is not None else \
                f"--broker-nodes above 1 refused: {impl.no_cluster or 'no cluster recipe'}"
            print(f"    cluster{which}: {said}")
        try:
            cls = brokers.get(name)
        except TestbedError as exc:
            print(f"    options unavailable ({exc})")
            continue
        for key, opt in cls.OPTIONS.items():
            print(f"    --broker-opt {key}={opt.default!r:<12} {opt.doc}")
    return 0


def _installable() -> dict[str, list]:
    """broker -> the implementations whose local recipe fetches something once."""
    out: dict[str, list] = {}
    for name in brokers.names():
        impls = [i for i in brokers.spec(name).impls if i.local is not None and i.local.install is not None]
        if impls:
            out[name] = impls
    return out


def cmd_install(args) -> int:
    impls = _installable().get(args.what)
    if not impls:
        raise TestbedError(f"install {args.what!r}: nothing to install (allowed: {', '.join(_installable())})")
    for impl in impls:
        print(impl.local.install(lambda line: print(line, file=sys.stderr, flush=True)))
    return 0


def cmd_cleanup(args) -> int:
    from testbed.launchers import cleanup
    for line in cleanup.cleanup_all():
        print(line)
    return 0


def cmd_engine(args) -> int:
    from testbed.launchers import engine
    return engine.cli(args.action)


def cmd_images(args) -> int:
    from testbed.launchers import images
    return images.cli(build=args.build)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m testbed.brokers", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="brokers and their options").set_defaults(fn=cmd_list)
    s = sub.add_parser("install", help="fetch what a local launcher needs (cached)")
    s.add_argument("what", choices=sorted(_installable()))
    s.set_defaults(fn=cmd_install)
    sub.add_parser("cleanup", help="remove broker processes and containers that runs left").set_defaults(fn=cmd_cleanup)
    s = sub.add_parser("engine", help="the Docker engine: status, start (a private one), stop")
    s.add_argument("action", choices=["status", "start", "stop"])
    s.set_defaults(fn=cmd_engine)
    s = sub.add_parser("images", help="per broker, the image the docker launcher uses")
    s.add_argument("--build", action="store_true", help="build the missing local images")
    s.set_defaults(fn=cmd_images)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except TestbedError as exc:
        print(f"testbed.brokers: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
