"""The bubblewrap command line of a local sandbox: what its processes see and who they run as.

Seen from inside: no network; pid, IPC, UTS and mount namespaces of their own; /usr and the top-level system dirs read-only;
of /etc only what a Python needs, with a passwd and group naming just the sandbox's user; the
Python install and `ro_paths` read-only; the workspace read-write at its own path (so paths mean the
same inside and out); /tmp and /dev/shm bound from directories beside the workspace, which a reset
empties from outside; a seccomp filter (sandboxes/seccomp.py).

Who: as root, bwrap builds the sandbox itself (it can read any path, pyenv's Python under /root
included) and `setpriv` drops to the sandbox's own uid, with no capability left, before the command
runs: the code is never uid 0, so root-only files it can see (a root-owned 0600 file in a bound
dir, /etc/shadow were it bound) stay closed. As another user, bwrap needs a user namespace, and the
code runs as that user with no capability and no nested user namespace.
"""

from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass

_NAMESPACES = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--hostname", "sandbox",
               "--die-with-parent", "--new-session"]
# As root, bwrap's own pid 1 stays (a root process the sandbox's uid cannot touch): it is what dies with
# bwrap and takes the namespace along (the command's parent-death signal would come from a bwrap that
# dropped the right to send it to another uid). As a user, that pid 1 would be the sandbox's own uid,
# holding copies of the command's stdin and stdout that the code could open: the command is pid 1.
_AS_ROOT = ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]  # setpriv's, then gone
_AS_USER = ["--unshare-user", "--disable-userns", "--cap-drop", "ALL", "--as-pid-1"]
# What of /etc a Python (and the shell tools) need: the loader, time zone, name service switch.
ETC_NEEDED = ("alternatives", "hosts", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "mime.types",
              "nsswitch.conf", "python3*")


@dataclass
class Layout:
    """The host directories of one sandbox (all under its base dir, outside the workspace but `ws`)."""

    base: str

    @property
    def ws(self) -> str:
        return os.path.join(self.base, "ws")

    @property
    def tmp(self) -> str:
        return os.path.join(self.base, "tmp")

    @property
    def shm(self) -> str:
        return os.path.join(self.base, "shm")

    @property
    def etc(self) -> str:
        return os.path.join(self.base, "etc")

    @property
    def seccomp(self) -> str:
        return os.path.join(self.base, "seccomp.bpf")



def tmp_stubs(paths: list[str]) -> list[str]:
    """Entries of /tmp that lead to `paths` bound below it (a workspace under /tmp, say). Each becomes a
    read-only tmpfs in the sandbox holding only the way there; on this side it is an empty directory
    (the mount point) that a reset must leave: removing it would unmount them in the sandbox."""
    return sorted({os.path.relpath(p, "/tmp").split(os.sep)[0] for p in paths if _under(p, "/tmp")})


def etc_files(uid: int, home: str) -> dict[str, str]:
    return {"passwd": f"sandbox:x:{uid}:{uid}:sandbox:{home}:/bin/sh\n", "group": f"sandbox:x:{uid}:\n"}


def python_paths(ro_paths: list[str]) -> list[str]:
    """The Python install (pyenv's and venvs live outside /usr) and the configured extra paths."""
    paths = [sys.base_prefix, sys.prefix, *ro_paths]
    return list(dict.fromkeys(p for path in paths for p in (os.path.abspath(path), os.path.realpath(path))))


def argv(bwrap: str, layout: Layout, ro_paths: list[str], uid: int, seccomp_fd: int | None,
         info_fd: int | None = None) -> list[str]:
    """bwrap ... -- [setpriv ... --]: what goes before the command."""
    as_root = os.geteuid() == 0
    args = [bwrap, *_NAMESPACES, *(_AS_ROOT if as_root else _AS_USER)]
    args += ["--seccomp", str(seccomp_fd)] if seccomp_fd is not None else []
    args += ["--info-fd", str(info_fd)] if info_fd is not None else []
    # Mounts apply in order: /tmp first, so binds below it (the workspace, maybe) stay visible.
    args += ["--proc", "/proc", "--dev", "/dev", "--bind", layout.tmp, "/tmp", "--bind", layout.shm, "/dev/shm"]
    hosts = ["/proc", "/dev", "/tmp", "/dev/shm", "/usr"]  # mounts of host content (their dirs are not ours)
    args += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):  # merged-/usr systems: /bin -> usr/bin
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
            hosts.append(top)
    for path in sorted(p for pattern in ETC_NEEDED for p in glob.glob(f"/etc/{pattern}")):
        args += ["--ro-bind", path, path]
        hosts.append(path)
    for name in etc_files(uid, layout.ws):
        args += ["--ro-bind", os.path.join(layout.etc, name), f"/etc/{name}"]
        hosts.append(f"/etc/{name}")
    bound = [p for p in python_paths(ro_paths) if not _under(p, "/usr")]
    ours = ["/", *(os.path.join("/tmp", stub) for stub in tmp_stubs([*bound, layout.ws]))]  # tmpfs mounts
    for stub in ours[1:]:
        args += ["--perms", "0755", "--tmpfs", stub]
    for path in bound:
        args += ["--ro-bind", path, path]
    args += ["--bind", layout.ws, layout.ws]
    hosts += [*bound, layout.ws]
    # Parent dirs bwrap makes copy the modes of the originals (/root is 0700, a mkdtemp dir too): open
    # those the sandbox's uid must pass through.
    parents = dict.fromkeys(d for path in ["/etc/passwd", *bound, layout.ws] for d in _parents_to_open(path, hosts, ours))
    args += [arg for parent in parents for arg in ("--chmod", "0755", parent)]
    for stub in ours[1:]:
        args += ["--remount-ro", stub]
    args += ["--chdir", layout.ws, "--"]
    if as_root:
        args += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
    return args


def own_pids() -> int:
    """Processes in a sandbox's pid namespace before its command starts any: bwrap's pid 1 and the
    command (as root), or the command alone."""
    return 2 if os.geteuid() == 0 else 1


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _parents_to_open(path: str, hosts: list[str], ours: list[str]) -> list[str]:
    """Parents of `path` that bwrap creates on a tmpfs of ours (not inside a host mount, not a mount point)."""
    out = []
    parts = path.strip("/").split("/")
    for i in range(1, len(parts)):
        parent = "/" + "/".join(parts[:i])
        innermost = max((m for m in [*hosts, *ours] if m != path and _under(parent, m)), key=len)
        if innermost in ours and innermost != parent:
            out.append(parent)
    return out
