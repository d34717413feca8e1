"""What run.json records about the machine and the software a run ran on."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import sys

import brokers

#: the packages whose versions run.json records: ours, every broker's client (from the registry), the stages'
PACKAGES = ("numpy", "hdrhistogram", "PyYAML", "psutil",
            *dict.fromkeys(s.client for s in brokers.specs() if s.client),
            "torch", "torchvision", "nvidia-dali-cuda120", "docker")


def environment() -> dict:
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {
        "python": sys.version.split()[0], "platform": platform.platform(), "machine": socket.gethostname(),
        "cpu_count": os.cpu_count(), "packages": versions,
    }
