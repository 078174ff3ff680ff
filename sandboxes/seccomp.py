"""A seccomp filter for local (bubblewrap) sandboxes: no System V IPC, no POSIX message queues, no
new user namespaces.

A pooled sandbox keeps one tool host, and with it one IPC namespace, across episodes; the workspace,
/tmp and /dev/shm are emptied between episodes, but SysV shared memory, semaphores and message queues
and POSIX message queues live in the IPC namespace, where a reset cannot list them (message queues
are only visible through an mqueue mount the sandbox has no right to make). So the calls that
create them are refused (EPERM). New user namespaces are refused too: inside one, the code would
gain capabilities over namespaces of its own, which only the kernel then stands between (bwrap's
--disable-userns needs a user namespace of its own, which a uid drop as root does not use).
`clone3` answers ENOSYS, so the C library falls back to `clone`, whose flags can be checked.

The program is classic BPF, built here (no libseccomp): bwrap --seccomp reads it from a descriptor.
"""

from __future__ import annotations

import platform
import struct

# offsets in struct seccomp_data
_NR, _ARCH, _ARG0 = 0, 4, 16
_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _ERRNO, _KILL = 0x7FFF0000, 0x00050000, 0x80000000
_EPERM, _ENOSYS = 1, 38
_CLONE_NEWUSER = 0x10000000
_X32_BIT = 0x40000000

# machine -> (AUDIT_ARCH, {name: number})
_ARCHES = {
    "x86_64": (0xC000003E, {"mq_open": 240, "msgget": 68, "semget": 64, "shmget": 29,
                            "clone": 56, "unshare": 272, "clone3": 435}),
    "aarch64": (0xC00000B7, {"mq_open": 180, "msgget": 186, "semget": 190, "shmget": 194,
                             "clone": 220, "unshare": 97, "clone3": 435}),
}
_REFUSED = ("mq_open", "msgget", "semget", "shmget")


def supported() -> bool:
    return platform.machine() in _ARCHES


def program(machine: str | None = None) -> bytes:
    """The filter as bwrap --seccomp wants it: struct sock_filter[] in native byte order."""
    arch, nr = _ARCHES[machine or platform.machine()]
    # (code, jump-if-true label, jump-if-false label, k); labels resolve to the following return ops
    ops: list[tuple[int, str | int, str | int, int]] = [
        (_LD_ABS, 0, 0, _ARCH),
        (_JEQ, 0, "kill", arch),
        (_LD_ABS, 0, 0, _NR),
    ]
    if machine == "x86_64" or (machine is None and platform.machine() == "x86_64"):
        ops.append((_JGE, "eperm", 0, _X32_BIT))  # the x32 ABI: other numbers for the same calls
    ops += [(_JEQ, "eperm", 0, nr[name]) for name in _REFUSED]
    ops += [(_JEQ, "enosys", 0, nr["clone3"]),
            (_JEQ, "flags", 0, nr["clone"]),
            (_JEQ, "flags", 0, nr["unshare"]),
            (_RET, 0, 0, _ALLOW)]
    labels = {"flags": len(ops)}
    ops += [(_LD_ABS, 0, 0, _ARG0), (_JSET, "eperm", "allow", _CLONE_NEWUSER)]
    for name, value in (("allow", _ALLOW), ("eperm", _ERRNO | _EPERM), ("enosys", _ERRNO | _ENOSYS),
                        ("kill", _KILL)):
        labels[name] = len(ops)
        ops.append((_RET, 0, 0, value))
    out = bytearray()
    for i, (code, jt, jf, k) in enumerate(ops):
        jt = labels[jt] - i - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - i - 1 if isinstance(jf, str) else jf
        out += struct.pack("=HBBI", code, jt, jf, k)
    return bytes(out)
