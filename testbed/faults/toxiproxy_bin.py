"""The Toxiproxy server binary: where it lives, and building it once with Go.

Toxiproxy (github.com/Shopify/toxiproxy) is a Go module; set-up builds its server with
``go install github.com/Shopify/toxiproxy/v2/cmd/server@VERSION`` into a temporary folder and keeps it
as ``<cache>/toxiproxy-<VERSION>/toxiproxy-server`` (``~/.cache/testbed`` without XDG_CACHE_HOME), so a
second call returns at once. ``TESTBED_TOXIPROXY`` names another binary to use instead.

    python -m testbed.faults.toxiproxy_bin            build it if missing; print its path
    python -m testbed.faults.toxiproxy_bin --check    print its path, or exit 1 with what to do
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from testbed.errors import BrokerError

VERSION = "v2.5.0"
MODULE = "github.com/Shopify/toxiproxy/v2/cmd/server"
ENV = "TESTBED_TOXIPROXY"
BUILD_TIMEOUT_S = 900
#: where Go may be when it is not on PATH (the upstream tarball's place, Debian's golang-go)
GO_CANDIDATES = ("/usr/local/go/bin/go", "/usr/lib/go/bin/go")


def cache_root() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "testbed")


def cached_path(version: str = VERSION) -> str:
    return os.path.join(cache_root(), f"toxiproxy-{version}", "toxiproxy-server")


def find() -> str | None:
    """The server binary to run, or None."""
    override = os.environ.get(ENV)
    if override:
        return override if os.access(override, os.X_OK) else None
    path = cached_path()
    return path if os.access(path, os.X_OK) else None


def require() -> str:
    """The binary's path, or a clear error saying how to get it."""
    path = find()
    if path:
        return path
    if os.environ.get(ENV):
        raise BrokerError(f"{ENV}={os.environ[ENV]!r} is not an executable file (the Toxiproxy server for "
                          f"network faults)")
    raise BrokerError(f"the Toxiproxy server for network faults is not built ({cached_path()} is missing): "
                      f"run `make setup` (it needs Go) or `python -m testbed.faults.toxiproxy_bin`")


def go_binary() -> str | None:
    found = shutil.which("go")
    if found:
        return found
    return next((g for g in GO_CANDIDATES if os.access(g, os.X_OK)), None)


def install(version: str = VERSION) -> str:
    """Build the server once into the cache; return its path (at once when it is there already)."""
    target = cached_path(version)
    if os.access(target, os.X_OK):
        return target
    go = go_binary()
    if not go:
        raise BrokerError("Go is not installed (Debian package 'golang-go'): it builds the Toxiproxy server "
                          "for network faults")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="toxiproxy-build-", dir=os.path.dirname(target)) as gobin:
        env = {**os.environ, "GOBIN": gobin, "CGO_ENABLED": "0"}
        try:
            done = subprocess.run([go, "install", f"{MODULE}@{version}"], env=env, capture_output=True,
                                  text=True, timeout=BUILD_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise BrokerError(f"go install {MODULE}@{version} took longer than {BUILD_TIMEOUT_S} s") from None
        built = os.path.join(gobin, "server")
        if done.returncode != 0 or not os.access(built, os.X_OK):
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            raise BrokerError(f"go install {MODULE}@{version} failed (code {done.returncode}): {tail}")
        os.replace(built, target)  # same file system: the cache never holds half a binary
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        path = require() if "--check" in args else install()
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
