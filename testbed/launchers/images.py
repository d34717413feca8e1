"""The image per broker: the official one, and a local one we can build where nothing can be pulled.

``IMAGES`` is the one table of images, made from the registry (each implementation's ``Image`` in
brokers/<name>/spec.py): the docker launcher, ``python -m testbed.brokers images`` and compose/ all take
names from it (tests/test_compose.py checks that compose/ agrees).

The official tags are pinned to the versions the local launcher runs (the Debian packages of this host's
release, or the versions a broker folder pins), so ``--launcher docker`` and ``--launcher local`` compare
the same broker, whichever image is used. The local tags say which implementation and where it came from.

How local images are built, and why this way
--------------------------------------------
One Debian base, shared: ``debootstrap --variant=minbase`` of the host's Debian release from the mirror
the host's apt sources name, slimmed (no docs, man pages, locales, apt lists or caches) and imported as
``testbed/debian-base:<codename>`` (75 MB, once). Each broker image is then a Dockerfile ``FROM`` that
base whose one ``RUN`` installs the spec's Debian packages with apt (legacy builder, ``--network host``:
the only network these engines have) and checks that the version apt installed is the one the tag names;
the spec may add lines after it (files it copies in, an entry point). An implementation that is one
static binary is ``FROM scratch`` with that file.
Rejected: ``FROM scratch`` with a binary and the libraries ``ldd`` lists is smaller and faster for a C
server alone but cannot hold an Erlang release or a JRE without re-implementing dpkg's dependency
resolution; one method for all keeps the images honest (Debian's packages, resolved by apt) and the
shared base is stored once.

Caching: an image whose tag exists and whose ``testbed.recipe`` label matches its recipe is not built
again (a second ``images --build`` does nothing); a changed recipe rebuilds it.
"""
from __future__ import annotations

import fcntl
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import brokers
from testbed.errors import BrokerError, ConfigError

BASE_REPO = "testbed/debian-base"
LOCK_PATH = "/tmp/testbed-docker-images.lock"
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class ImageSpec:
    key: str                 # table key (the spec's Image.key)
    broker: str              # the --broker it serves
    impl: str                # the --broker-impl it serves ("" where a broker has one)
    official: str            # pinned official image
    local: str               # our image, built by build_image()
    upstream: str            # the version both images run
    packages: tuple = ()     # Debian packages of the local image
    env_var: str = ""        # compose/ reads the image from this variable, default the official one
    package_version: str = ""  # the version apt must install (default: upstream)
    post: str = ""           # shell appended to the install RUN line
    build: Callable[[bool], tuple[str, dict]] | None = None  # fetch -> (more Dockerfile lines, files)
    scratch: bool = False    # FROM scratch instead of the Debian base


def _table() -> dict[str, ImageSpec]:
    out: dict[str, ImageSpec] = {}
    for spec in brokers.specs():
        for impl in spec.impls:
            img = impl.image
            if img is not None:
                out[img.key] = ImageSpec(img.key, spec.name, impl.name, img.official, img.local, img.upstream,
                                         img.packages, img.env_var, img.package_version, img.post, img.build,
                                         img.scratch)
    return out


#: THE table of images (compose/ agrees with it; tests/test_compose.py checks).
IMAGES: dict[str, ImageSpec] = _table()


def spec_for(broker: str, impl: str = "") -> ImageSpec:
    """The table row for a broker and implementation (the first implementation by default)."""
    img = brokers.spec(broker).impl(impl).image
    if img is None or img.key not in IMAGES:
        raise ConfigError(f"--launcher docker has no image for broker {broker!r}; images exist for "
                          f"{', '.join(sorted({s.broker for s in IMAGES.values()}))}")
    return IMAGES[img.key]


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# -- recipes ------------------------------------------------------------------------------------
def _debian_dockerfile(spec: ImageSpec, base: str, post: str = "") -> str:
    pkgs = " ".join(spec.packages)
    main = spec.packages[0]
    want = spec.package_version or spec.upstream
    return f"""FROM {base}
LABEL testbed.image=1 testbed.broker={spec.broker} testbed.upstream={spec.upstream}
RUN mkdir -p /usr/share/man/man1 && apt-get update -q \\
 && apt-get install -y -q --no-install-recommends {pkgs} \\
 && v=$(dpkg-query -W -f='${{Version}}' {main}) && echo "{main} $v" \\
 && case "$v" in *{want}*) ;; *) echo "expected {main} {want}, apt gave $v" >&2; exit 1;; esac \\
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb{post}
"""


def recipe(spec: ImageSpec, base: str = "", fetch: bool = False) -> tuple[str, dict[str, bytes | str]]:
    """(Dockerfile, {context path: bytes or a file to copy}) for the local image of ``spec``
    (``fetch``: download what the image holds if it is not in the cache yet)."""
    if spec.scratch:
        df = f"FROM scratch\nLABEL testbed.image=1 testbed.broker={spec.broker} testbed.upstream={spec.upstream}\n"
    elif spec.packages:
        df = _debian_dockerfile(spec, base or base_image(), spec.post)
    else:
        raise ConfigError(f"no recipe for image {spec.key!r}: it names no Debian packages and is not FROM scratch")
    files: dict[str, bytes | str] = {}
    if spec.build is not None:
        tail, files = spec.build(fetch)
        df += tail
    return df, files


def recipe_hash(dockerfile: str, files: dict) -> str:
    h = hashlib.sha256(dockerfile.encode())
    for name, src in sorted(files.items()):
        h.update(name.encode())
        if isinstance(src, bytes):
            h.update(src)
        else:
            st = os.stat(src)
            h.update(f"{st.st_size}".encode())
    return h.hexdigest()[:16]


# -- the Debian base ----------------------------------------------------------------------------
def _debian_release() -> tuple[str, str]:
    """(codename, version) of the host's Debian, e.g. ("bookworm", "12")."""
    info = {}
    try:
        with open("/etc/os-release") as fh:
            for line in fh:
                k, _, v = line.strip().partition("=")
                info[k] = v.strip('"')
    except OSError:
        pass
    if info.get("ID") != "debian" or not info.get("VERSION_CODENAME"):
        raise BrokerError("local images are built from Debian's packages and this host is not Debian: "
                          "pull the official images instead (docker pull ...)")
    return info["VERSION_CODENAME"], info.get("VERSION_ID", "")


def _mirrors() -> tuple[str, str]:
    """(main mirror, security mirror) the host's apt sources name."""
    texts = []
    for path in ["/etc/apt/sources.list"] + [os.path.join("/etc/apt/sources.list.d", n) for n in
                                              sorted(os.listdir("/etc/apt/sources.list.d"))
                                              if n.endswith((".list", ".sources"))]:
        try:
            with open(path) as fh:
                texts.append(fh.read())
        except OSError:
            pass
    main = security = ""
    for text in texts:
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("#"):
                continue
            for word in line.replace("URIs:", " ").split():
                if word.startswith("http") and "/debian" in word:
                    if "security" in word:
                        security = security or word.rstrip("/")
                    elif word.rstrip("/").endswith("/debian"):
                        main = main or word.rstrip("/")
    main = main or "http://deb.debian.org/debian"
    security = security or main.rsplit("/", 1)[0] + "/debian-security"
    return main, security


def base_image() -> str:
    codename, _ = _debian_release()
    return f"{BASE_REPO}:{codename}"


def _build_base(client, progress) -> str:
    tag = base_image()
    if _image_id(client, tag):
        return tag
    codename, _ = _debian_release()
    if os.geteuid() != 0:
        raise BrokerError("building the Debian base image needs root (debootstrap); run "
                          "`python -m testbed.brokers images --build` as root")
    debootstrap = shutil.which("debootstrap")
    if not debootstrap:
        raise BrokerError("debootstrap not found: install the Debian package 'debootstrap' (apt-get install "
                          "debootstrap) or run `make setup`")
    main, security = _mirrors()
    root = tempfile.mkdtemp(prefix="testbed-rootfs-", dir="/var/tmp")
    try:
        t0 = time.monotonic()
        progress(f"images: {tag}: debootstrap --variant=minbase {codename} from {main} (about 30 s)")
        r = subprocess.run([debootstrap, "--variant=minbase", codename, root, main],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise BrokerError(f"debootstrap {codename} failed: {r.stdout.strip().splitlines()[-1:]}")
        _slim_rootfs(root, codename, main, security)
        progress(f"images: {tag}: importing the root file system")
        proc = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        try:
            client.api.import_image_from_stream(proc.stdout, repository=tag.split(":")[0], tag=tag.split(":")[1],
                                                changes=[f"ENV PATH={PATH_ENV}", "LABEL testbed.image=1"])
        finally:
            proc.stdout.close()
            proc.wait()
        if not _image_id(client, tag):
            raise BrokerError(f"docker import of {tag} did not produce an image")
        progress(f"images: {tag}: built in {time.monotonic() - t0:.0f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return tag


def _slim_rootfs(root: str, codename: str, main: str, security: str) -> None:
    for sub in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                "usr/share/locale"):
        path = os.path.join(root, sub)
        for name in os.listdir(path) if os.path.isdir(path) else ():
            full = os.path.join(path, name)
            if name in ("partial", "lock", "locale.alias"):
                continue
            shutil.rmtree(full, ignore_errors=True) if os.path.isdir(full) else os.remove(full)
    with open(os.path.join(root, "etc/dpkg/dpkg.cfg.d/testbed-slim"), "w") as fh:
        fh.write("path-exclude=/usr/share/doc/*\npath-exclude=/usr/share/man/*\n"
                 "path-exclude=/usr/share/locale/*\npath-include=/usr/share/locale/locale.alias\n")
    with open(os.path.join(root, "etc/apt/sources.list"), "w") as fh:
        fh.write(f"deb {main} {codename} {codename}-updates main\ndeb {security} {codename}-security main\n")
    with open(os.path.join(root, "etc/apt/apt.conf.d/90testbed"), "w") as fh:
        fh.write('APT::Install-Recommends "false";\nAcquire::Retries "3";\n')
    policy = os.path.join(root, "usr/sbin/policy-rc.d")
    with open(policy, "w") as fh:  # packages never try to start services inside the image
        fh.write("#!/bin/sh\nexit 101\n")
    os.chmod(policy, 0o755)


# -- presence, building -------------------------------------------------------------------------
def _image_id(client, ref: str) -> str | None:
    import docker
    try:
        return client.images.get(ref).id
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError:
        return None


def local_state(client, spec: ImageSpec) -> str:
    """'present', 'stale' (the recipe changed), 'missing' or 'cannot build: ...' for the local image."""
    import docker
    try:
        img = client.images.get(spec.local)
    except docker.errors.ImageNotFound:
        return "missing"
    try:
        df, files = recipe(spec)
    except BrokerError as exc:
        return f"present (recipe unavailable: {exc})"
    if (img.labels or {}).get("testbed.recipe") != recipe_hash(df, files):
        return "stale"
    return "present"


def build_image(client, spec: ImageSpec, progress=_say, force: bool = False) -> str:
    """Build the local image of ``spec`` unless it is there with the same recipe; returns its id."""
    with open(LOCK_PATH, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two builders at once (CI and a test run) build once
        if not force and local_state(client, spec) == "present":
            return _image_id(client, spec.local)
        old_id = _image_id(client, spec.local)  # a stale one: removed once the new one is tagged
        base = _build_base(client, progress) if spec.packages else ""
        df, files = recipe(spec, base, fetch=True)
        digest = recipe_hash(df, files)
        df += f"LABEL testbed.recipe={digest}\n"
        t0 = time.monotonic()
        progress(f"images: building {spec.local} ({spec.key}: "
                 f"{'Debian packages ' + ' '.join(spec.packages) if spec.packages else 'static binary'})")
        ctx = _context_tar(df, files)
        last = ""
        try:
            for chunk in client.api.build(fileobj=ctx, custom_context=True, tag=spec.local, rm=True,
                                          forcerm=True, network_mode="host", decode=True, pull=False):
                if "error" in chunk:
                    raise BrokerError(f"building {spec.local} failed: {chunk['error'].strip()} (last output: {last})")
                text = (chunk.get("stream") or "").strip()
                if text:
                    last = text.splitlines()[-1]
                    first = text.splitlines()[0]
                    if first.startswith("Step ") or (spec.packages and first.startswith(spec.packages[0] + " ")):
                        progress(f"images: {spec.key}: {first[:150]}")
        except BrokerError:
            raise
        except Exception as exc:  # noqa: BLE001 - the engine's own error, in one line
            raise BrokerError(f"building {spec.local} failed: {str(exc).splitlines()[0]}") from None
        image_id = _image_id(client, spec.local)
        if not image_id:
            raise BrokerError(f"building {spec.local} produced no image (last output: {last})")
        if old_id and old_id != image_id:
            try:
                client.images.remove(old_id)
            except Exception:  # noqa: BLE001 - still used by a container: it stays
                pass
        size = client.images.get(spec.local).attrs.get("Size", 0) / 1e6
        progress(f"images: {spec.local} built in {time.monotonic() - t0:.0f} s ({size:.0f} MB)")
        return image_id


def _context_tar(dockerfile: str, files: dict) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, src in [("Dockerfile", dockerfile.encode())] + sorted(files.items()):
            if isinstance(src, bytes):
                info = tarfile.TarInfo(name)
                info.size = len(src)
                info.mode = 0o755
                tar.addfile(info, io.BytesIO(src))
            else:
                tar.add(src, arcname=name)
    buf.seek(0)
    return buf


def ensure(client, spec: ImageSpec, no_build: bool = False, progress=_say) -> tuple[str, str]:
    """The image a container of ``spec`` runs: (reference, id). The official one when present or
    pullable; else (one line saying the pull failed) the local one, built unless ``no_build``."""
    import docker
    image_id = _image_id(client, spec.official)
    if image_id:
        return spec.official, image_id
    repo, _, tag = spec.official.rpartition(":")
    try:
        client.images.pull(repo, tag=tag)
        image_id = _image_id(client, spec.official)
        if image_id:
            return spec.official, image_id
    except docker.errors.APIError as exc:
        why = str(getattr(exc, "explanation", None) or exc).strip().splitlines()[0]
        progress(f"docker: pulling {spec.official} failed ({why[:160]}); using the local image {spec.local}")
    state = local_state(client, spec)
    if state.startswith("present"):
        return spec.local, _image_id(client, spec.local)
    if no_build:
        raise BrokerError(f"image {spec.local} is {state} and --no-build was given: build it with "
                          "`python -m testbed.brokers images --build`")
    return spec.local, build_image(client, spec, progress)


def cli(build: bool = False) -> int:
    from testbed.launchers import engine
    client = engine.client(timeout_s=600)
    host = engine.find()[0]
    print(f"engine: {host}")
    print(f"{'image':<12} {'official':<34} {'':<8} {'local (built here)':<36} state")
    rc = 0
    for spec in IMAGES.values():
        official = "present" if _image_id(client, spec.official) else "absent"
        state = local_state(client, spec)
        if build and not state.startswith("present") and official != "present":
            try:
                build_image(client, spec)
                state = "built"
            except BrokerError as exc:
                print(f"images: {spec.key}: {exc}", file=sys.stderr)
                state, rc = "FAILED", 1
        print(f"{spec.key:<12} {spec.official:<34} {official:<8} {spec.local:<36} {state}")
    return rc
