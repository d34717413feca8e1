"""The watchdog of one orchestrating process (started by ``lifeline``): ``watchdog.py OWNER_PID START``.

It reads what the owner started from its standard input (``dir PATH``, ``container HOST NAME``,
``-container NAME``, ``hosts STATE`` / ``-hosts STATE``: simulated hosts) until end of file, which
comes when the owner is gone (exit, crash or SIGKILL: the kernel closes its end of the pipe). Then, once the owner is dead, it removes what is still there:
the containers left (by name, on their engine), the simulated hosts left (testbed/hosts/teardown.py),
the process groups pointing into the folders left
(``cleanup.reap_dirs``; the owner's own process group only process by process), those folders.
Nothing left (a normal exit): it exits at once, importing nothing. Run as a script, not ``-m``: it
imports no package until there is something to remove.
"""
from __future__ import annotations

import os
import sys
import time

OWNER_DEATH_WAIT_S = 5.0
REAP_GRACE_S = 0.5  # a dead run's broker has nothing to save: SIGKILL soon after SIGTERM


def _dead(pid: int, start: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] in ("Z", "X") or fields[19] != start


def read_until_eof(stream) -> tuple[list[str], dict[str, str], list[str]]:
    dirs: list[str] = []
    containers: dict[str, str] = {}  # name -> engine address
    hosts: dict[str, None] = {}      # state files of simulated hosts, in order
    for raw in stream:
        parts = raw.decode("utf-8", "replace").rstrip("\n").split(" ", 2)
        if parts[0] == "dir" and len(parts) >= 2:
            dirs.append(" ".join(parts[1:]))
        elif parts[0] == "container" and len(parts) == 3:
            containers[parts[2]] = parts[1]
        elif parts[0] == "-container" and len(parts) == 2:
            containers.pop(parts[1], None)
        elif parts[0] == "hosts" and len(parts) >= 2:
            hosts[" ".join(parts[1:])] = None
        elif parts[0] == "-hosts" and len(parts) >= 2:
            hosts.pop(" ".join(parts[1:]), None)
    return dirs, containers, list(hosts)


def remove_containers(containers: dict[str, str]) -> None:
    try:
        import docker
    except ImportError:
        return
    by_host: dict[str, list[str]] = {}
    for name, host in containers.items():
        by_host.setdefault(host, []).append(name)
    for host, names in by_host.items():
        try:
            client = docker.DockerClient(base_url=host, timeout=30)
        except Exception:  # noqa: BLE001 - no engine: nothing we can do from here
            continue
        for name in names:
            for _ in range(3):
                try:
                    client.containers.get(name).remove(force=True)
                    break
                except docker.errors.NotFound:
                    break
                except Exception:  # noqa: BLE001 - busy (removal in progress): try again
                    time.sleep(0.5)
        client.close()


def main(argv: list[str]) -> int:
    owner, start = int(argv[0]), argv[1]
    try:
        protect = {os.getpgid(owner)}  # the owner's own group may hold processes that are not ours
    except OSError:
        protect = set()
    dirs, containers, hosts = read_until_eof(sys.stdin.buffer)
    left = [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]
    hosts = [h for h in hosts if os.path.exists(h)]
    if not left and not containers and not hosts:
        return 0
    deadline = time.monotonic() + OWNER_DEATH_WAIT_S
    while not _dead(owner, start) and time.monotonic() < deadline:
        time.sleep(0.02)
    if containers:
        remove_containers(containers)
    for state in hosts:
        try:
            from testbed.hosts.teardown import remove_state_file
            remove_state_file(state)
        except Exception:  # noqa: BLE001 - the next start's sweep remains
            pass
    if left:
        from testbed.launchers.cleanup import reap_dirs
        reap_dirs(left, protect=protect, grace_s=REAP_GRACE_S)
    return 0


if __name__ == "__main__":
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main(sys.argv[1:]))
