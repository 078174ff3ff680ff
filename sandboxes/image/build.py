"""Build the sandbox image without any container registry: debootstrap -> chroot setup -> docker import.

Debian bookworm (minbase) + python3, a user `sandbox` (uid 1000) owning /workspace, the `mcp` package
at the host's version (so client and servers speak the same protocol revision) and, when it exists,
the project's tool server runner (`tools/server/`, importable as `tools.server` via PYTHONPATH).
Variants: `node` adds nodejs + npm; `mcp` adds git and the reference MCP servers of the catalog
(mcp_servers.json, kept equal to tools/catalog.py by a test) at /opt/mcp-servers, laid out as the
catalog's cache dir (venv/ pinned mcp<2, npm/), for real-server rollouts in containers.
The tag hashes every build input, so a changed input gets a new tag and an unchanged one is reused.
The debootstrap output is cached as a tar under /var/cache/synth: only the first build pays for it.

    python -m sandboxes.image.build [--force] [--variant python|node]
"""

from __future__ import annotations

import glob
import hashlib
import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import docker
import docker.errors

from synth.core.errors import SandboxError

REPO = "synth-sandbox"
SUITE = "bookworm"
CACHE_DIR = Path(os.environ.get("SYNTH_CACHE_DIR", "/var/cache/synth"))
DEBIAN_PACKAGES = {"python": ["python3"], "node": ["python3", "nodejs", "npm"],
                   "mcp": ["python3", "python3-venv", "nodejs", "npm", "git"]}
MCP_SERVERS_FILE = Path(__file__).resolve().parent / "mcp_servers.json"
MCP_ROOT = "opt/mcp-servers"  # in the image; tools/launch.py CONTAINER_ROOT
_PROJECT = Path(__file__).resolve().parents[2]
_SERVER_DIR = _PROJECT / "tools" / "server"
_PLATFORMS = ["manylinux_2_36_x86_64", "manylinux_2_34_x86_64", "manylinux_2_28_x86_64",
              "manylinux_2_17_x86_64", "manylinux2014_x86_64"]  # fmt: skip  (bookworm has glibc 2.36)
_CHANGES = [
    "USER 1000:1000",
    "WORKDIR /workspace",
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV HOME=/home/sandbox LANG=C.UTF-8 PYTHONPATH=/opt/synth",
    # The root filesystem is read-only at run time; bytecode would land in the workspace snapshot.
    "ENV PYTHONDONTWRITEBYTECODE=1",
    'CMD ["sleep", "infinity"]',
    "LABEL synth.image=1",
]


def pip_packages() -> list[str]:
    return [f"mcp=={importlib.metadata.version('mcp')}"]


def _server_files() -> list[Path]:
    if not _SERVER_DIR.is_dir():
        return []
    return sorted(p for p in _SERVER_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def image_tag(variant: str = "python") -> str:
    """`synth-sandbox:<hash>` (`node-<hash>` for the node variant) over every build input."""
    if variant not in DEBIAN_PACKAGES:
        raise SandboxError(f"unknown image variant {variant!r}; choose one of {sorted(DEBIAN_PACKAGES)}")
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(repr((SUITE, DEBIAN_PACKAGES[variant], pip_packages())).encode())
    if variant == "mcp":
        h.update(MCP_SERVERS_FILE.read_bytes())
    for path in _server_files():
        h.update(str(path.relative_to(_SERVER_DIR)).encode() + b"\0" + path.read_bytes())
    prefix = "" if variant == "python" else f"{variant}-"
    return f"{REPO}:{prefix}{h.hexdigest()[:12]}"


def debian_mirror() -> str:
    """The Debian mirror apt uses on this machine (debootstrap needs one); $SYNTH_DEBIAN_MIRROR wins."""
    if mirror := os.environ.get("SYNTH_DEBIAN_MIRROR"):
        return mirror
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*"))]:
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        # one-line format: deb [opts] URI SUITE COMPONENTS...; deb822: URIs:/Suites: fields per stanza
        for m in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", text, re.M):
            if m.group(2) == SUITE:
                return m.group(1)
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M | re.I)
            suites = re.search(r"^Suites:(.*)$", stanza, re.M | re.I)
            if uris and suites and SUITE in suites.group(1).split():
                return uris.group(1)
    return "http://deb.debian.org/debian"


def _client() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
        return client
    except docker.errors.DockerException as e:
        msg = f"Docker Engine unreachable ({e}); start `dockerd` (scripts/build_sandbox_image.sh does)"
        raise SandboxError(msg) from e


def build_image(*, variant: str = "python", force: bool = False, progress: Callable[[str], None] | None = None) -> str:
    """Return the image tag for `variant`, building the image first unless it exists (or force)."""
    say = progress or (lambda line: print(line, flush=True))
    tag = image_tag(variant)
    client = _client()
    if not force:
        try:
            client.images.get(tag)
            say(f"{tag} exists")
            return tag
        except docker.errors.ImageNotFound:
            pass
    for tool in ("debootstrap", "chroot", "tar"):
        if not shutil.which(tool):
            raise SandboxError(f"building the sandbox image needs `{tool}` (apt-get install -y debootstrap)")
    start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="synth-image-", dir="/var/tmp"))
    try:
        root = work / "rootfs"
        root.mkdir()
        _run(["tar", "-C", str(root), "-xf", str(_base_rootfs(variant, say))], say, "unpacking the cached rootfs")
        _setup(root, work, say)
        if variant == "mcp":
            _install_mcp_servers(root, say)
        changes = [arg for change in _CHANGES for arg in ("--change", change)]
        pipeline = (
            f"set -o pipefail; tar -C {shlex.quote(str(root))} --numeric-owner -cf - . | "
            f"docker import {shlex.join(changes)} - {shlex.quote(tag)}"
        )
        _run(["bash", "-c", pipeline], say, f"importing {tag}")
    finally:
        _umount_under(work)
        shutil.rmtree(work, ignore_errors=True)
    size = client.images.get(tag).attrs.get("Size", 0)
    say(f"built {tag} in {time.monotonic() - start:.0f}s ({size / 1e6:.0f} MB)")
    return tag


def _base_rootfs(variant: str, say: Callable[[str], None]) -> Path:
    """The Debian rootfs as a tar, cached by what goes into it (not by the mirror it came from).

    python: debootstrap. Others: the python rootfs + apt-get install in a chroot, because
    debootstrap --include fails to configure big dependency trees such as npm's (tried).
    """
    packages = DEBIAN_PACKAGES[variant]
    key = hashlib.sha256(repr(("v1", SUITE, "minbase", packages)).encode()).hexdigest()[:12]
    cached = CACHE_DIR / f"rootfs-{key}.tar"
    if cached.exists():
        say(f"using cached Debian rootfs {cached}")
        return cached
    base = None if variant == "python" else _base_rootfs("python", say)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="synth-rootfs-", dir="/var/tmp"))
    try:
        root = work / "rootfs"
        mirror = debian_mirror()
        if base is None:
            argv = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", SUITE, str(root), mirror]
            _run(argv, say, f"debootstrap {SUITE} from {mirror} (a few minutes, cached afterwards)")
        else:
            root.mkdir()
            _run(["tar", "-C", str(root), "-xf", str(base)], say, "unpacking the python rootfs")
            _apt_install(root, [p for p in packages if p not in DEBIAN_PACKAGES["python"]], say)
        for junk in ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info"):
            shutil.rmtree(root / junk, ignore_errors=True)
        _umount_under(work)
        partial = cached.with_suffix(".partial")
        _run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."], say, f"caching {cached}")
        partial.rename(cached)  # atomic: a killed build never leaves a half-written cache entry
    finally:
        _umount_under(work)
        shutil.rmtree(work, ignore_errors=True)
    return cached


def _apt_install(root: Path, packages: list[str], say: Callable[[str], None]) -> None:
    """apt-get install in the chroot, through the host's network and resolver (only while building)."""
    shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
    (root / "etc" / "apt" / "sources.list").write_text(f"deb {debian_mirror()} {SUITE} main\n")
    subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    apt = ["chroot", str(root), "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND=noninteractive"]
    _run([*apt, "apt-get", "update", "-q"], say, "apt-get update (in the chroot)")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    _run([*apt, *install], say, " ".join(install))
    _run([*apt, "apt-get", "clean"], say, "apt-get clean")
    (root / "etc" / "resolv.conf").write_text("")  # the sandbox has no network anyway


def _setup(root: Path, work: Path, say: Callable[[str], None]) -> None:
    """User 1000, /workspace, the pip packages (wheels fetched on the host, installed by the image's python)."""
    chroot = ["chroot", str(root), "env", "-i", "PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    _run([*chroot, "useradd", "--create-home", "--uid", "1000", "--user-group", "--shell", "/bin/sh", "sandbox"],
         say, "adding user sandbox (uid 1000)")  # fmt: skip
    (root / "workspace").mkdir()
    os.chown(root / "workspace", 1000, 1000)
    wheels = root / "tmp" / "wheels"
    # The image has no network and no pip: the host's pip (its config reaches the package index)
    # downloads wheels for the image's python, and a copy of it installs them inside the chroot.
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(wheels), "--only-binary=:all:",
          "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
          *[arg for p in _PLATFORMS for arg in ("--platform", p)], *pip_packages()],
         say, f"downloading wheels: {' '.join(pip_packages())}")  # fmt: skip
    import pip

    shutil.copytree(Path(pip.__file__).parent, root / "tmp" / "pip" / "pip")
    _run([*chroot, "PYTHONPATH=/tmp/pip", "python3", "-m", "pip", "install", "--quiet", "--isolated",
          "--no-index", "--find-links", "/tmp/wheels", "--break-system-packages", "--root-user-action=ignore",
          "--disable-pip-version-check", "--no-warn-script-location", *pip_packages()],
         say, "installing them in the image")  # fmt: skip
    shutil.rmtree(root / "tmp" / "pip")
    shutil.rmtree(wheels)
    shutil.rmtree(root / "usr" / "share" / "locale", ignore_errors=True)  # translations; C.UTF-8 needs none
    if files := _server_files():
        target = root / "opt" / "synth" / "tools"
        shutil.copytree(_SERVER_DIR, target / "server", ignore=shutil.ignore_patterns("__pycache__"))
        (target / "__init__.py").touch()
        say(f"added tools/server ({len(files)} files) at /opt/synth/tools/server")


def _install_mcp_servers(root: Path, say: Callable[[str], None]) -> None:
    """The catalog's servers at /opt/mcp-servers: a venv of the image's python (wheels fetched by the
    host's pip, installed by a copy of it in the chroot, as for `mcp` above) and an npm prefix (npm
    packages of pure JavaScript, installed from the host into the rootfs)."""
    import json

    wanted = json.loads(MCP_SERVERS_FILE.read_text())
    target = root / MCP_ROOT
    chroot = ["chroot", str(root), "env", "-i", "PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    _run([*chroot, "python3", "-m", "venv", "--without-pip", f"/{MCP_ROOT}/venv"], say, "venv for the PyPI servers")
    wheels = root / "tmp" / "wheels"
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(wheels), "--only-binary=:all:",
          "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
          *[arg for p in _PLATFORMS for arg in ("--platform", p)], *wanted["pypi"]],
         say, f"downloading wheels: {' '.join(wanted['pypi'])}")  # fmt: skip
    import pip

    shutil.copytree(Path(pip.__file__).parent, root / "tmp" / "pip" / "pip")
    _run([*chroot, "PYTHONPATH=/tmp/pip", f"/{MCP_ROOT}/venv/bin/python", "-m", "pip", "install", "--quiet",
          "--isolated", "--no-index", "--find-links", "/tmp/wheels", "--disable-pip-version-check",
          "--no-warn-script-location", *wanted["pypi"]], say, "installing the PyPI servers in the venv")  # fmt: skip
    shutil.rmtree(root / "tmp" / "pip")
    shutil.rmtree(wheels)
    if not shutil.which("npm"):
        raise SandboxError("the mcp image variant installs its npm servers with the host's npm: apt-get install npm")
    _run(["npm", "install", "--prefix", str(target / "npm"), "--no-audit", "--no-fund", "--loglevel=error",
          *wanted["npm"]], say, f"installing the npm servers: {' '.join(wanted['npm'])}")
    _run(["chmod", "-R", "a+rX", str(target)], say, "making them readable by the sandbox user")


def _run(argv: list[str], say: Callable[[str], None], what: str) -> None:
    """Run a build step, streaming its output as progress lines; a failure names the step."""
    say(f"== {what}")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    tail: list[str] = []
    for line in proc.stdout:
        if "is ignored: it is either a non-existing path" in line:
            continue  # pip complains about this machine's find-links, harmlessly
        say("   " + line.rstrip())
        tail = (tail + [line.rstrip()])[-20:]
    if proc.wait() != 0:
        raise SandboxError(f"sandbox image build step failed ({what}): exit {proc.returncode}\n" + "\n".join(tail))


def _umount_under(path: Path) -> None:
    """debootstrap mounts /proc etc. in the target; a failed run can leave them, and rmtree must not walk them."""
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f]
    for point in sorted((p for p in points if p.startswith(f"{path}/")), reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sandboxes.image.build", description=__doc__.split("\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if the tag exists")
    parser.add_argument("--variant", default="python", choices=sorted(DEBIAN_PACKAGES))
    args = parser.parse_args(argv)
    try:
        print(build_image(variant=args.variant, force=args.force))
    except SandboxError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
