"""What goes wrong with hosts, as one line each (the CLI prints it; exit 1)."""
from __future__ import annotations

from testbed.errors import TestbedError


class HostError(TestbedError):
    """Hosts that cannot be brought up, reached or used."""

    exit_code = 1


class HostDown(HostError):
    """A host whose agent (its Ray node) is gone: the run ends, naming it."""

    def __init__(self, host: str, detail: str = ""):
        self.host = host
        super().__init__(f"host {host} is down{': ' + detail if detail else ''}")
