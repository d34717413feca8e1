"""What every docker test needs: an engine (skip with the reason where none can be had; in CI, where
``TESTBED_REQUIRE_DOCKER=1``, fail instead: a docker test that skipped there proved nothing), and a check
that a test left no container of ours behind."""
from __future__ import annotations

import os

import pytest

REQUIRED = os.environ.get("TESTBED_REQUIRE_DOCKER") == "1"


def engine_or_skip() -> None:
    from testbed.launchers import engine as docker_engine
    try:
        import docker  # noqa: F401
    except ImportError:
        reason = "the docker SDK is not installed (pip install docker)"
    else:
        reason = "" if docker_engine.find() else docker_engine.no_engine_reason()
    if reason:
        if REQUIRED:
            pytest.fail(f"TESTBED_REQUIRE_DOCKER=1 but {reason}")
        pytest.skip(reason)


def compose_tool() -> list[str] | None:
    """``docker compose`` (v2) where installed, else ``docker-compose`` (v1), else None."""
    import shutil
    import subprocess
    from testbed.launchers import engine as docker_engine
    docker = shutil.which("docker")
    if docker:
        r = subprocess.run([docker, "compose", "version"], capture_output=True, text=True,
                           env=docker_engine.env_for_tools())
        if r.returncode == 0:
            return [docker, "compose"]
    v1 = shutil.which("docker-compose")
    return [v1] if v1 else None


def our_containers(pid: int | None = None, all_owners: bool = False) -> list:
    """Containers labelled testbed=1 (of this test process, or of ``pid``)."""
    from testbed.launchers import engine as docker_engine
    client = docker_engine.client()
    try:
        found = client.containers.list(all=True, filters={"label": "testbed=1"})
    finally:
        client.close()
    if all_owners:
        return found
    owner = str(pid or os.getpid())
    return [c for c in found if (c.labels or {}).get("testbed.owner_pid") == owner]


class DockerLaunched:
    """A conformance class on the docker launcher: the engine is there (or the class skips; fails in CI),
    and after the class no container of this test process is left."""
    launcher = "docker"

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _engine_and_no_leftovers(cls):
        engine_or_skip()
        yield
        left = [c.name for c in our_containers()]
        assert not left, f"containers left after the class: {left}"

