"""The seccomp filter every sandboxed program runs under: no nested user namespaces.

A user namespace of its own makes sandboxed code root there (`unshare -Urm`): it may
then mount, build new namespaces and reach kernel code that unprivileged users never
reach (most local root exploits of recent years start there). A cloud sandbox refuses
it. bubblewrap's `--disable-userns` needs the jail in a user namespace of its own, which
the privileged jail (root, `sandbox_uid`) is not, so one mechanism serves both jails and
the jail-less emulator: our init (`_limits._INIT`) loads this classic-BPF filter, with
NO_NEW_PRIVS set, before it starts the program; every descendant inherits it and none can
remove it. It refuses, with EPERM, `unshare` and `clone` whose flags ask for
CLONE_NEWUSER, and answers `clone3` with ENOSYS (its flags sit behind a pointer a filter
cannot read; the C library then falls back to `clone`, as under Docker's default
profile). Everything else is allowed. Each ABI the machine runs (x86-64 and i386 on an
x86-64 kernel, arm64 and arm on arm64) has its own syscall numbers; x32 calls are refused
outright. On another architecture there is no filter (`userns_filter` returns "").
"""

from __future__ import annotations

import errno
import functools
import platform
import struct

__all__ = ["userns_filter"]

_CLONE_NEWUSER = 0x10000000
_X32_BIT = 0x40000000

# classic BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h)
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000

# offsets in struct seccomp_data: nr (int), arch (u32), ip (u64), args[6] (u64 each); the
# low half of args[0] comes first on these little-endian machines
_NR, _ARCH, _ARG0_LOW = 0, 4, 16

#: (AUDIT_ARCH_*, unshare, clone, clone3) per ABI a machine's kernel runs
_ABIS = {
    "x86_64": ((0xC000003E, 272, 56, 435), (0x40000003, 310, 120, 435)),
    "aarch64": ((0xC00000B7, 97, 220, 435), (0x40000028, 337, 120, 435)),
}
_ABIS["amd64"] = _ABIS["x86_64"]
_ABIS["arm64"] = _ABIS["aarch64"]


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def _abi_block(arch: int, unshare: int, clone: int, clone3: int, x32: bool) -> list[bytes]:
    """Instructions for one ABI, entered with the arch in A; they end in a return."""
    body = [_op(_LD_W_ABS, _NR)]
    if x32:  # x32 numbers carry bit 30 on the x86-64 arch: none of them are allowed
        body.append(_op(_JGE_K, _X32_BIT, 0, 1))
        body.append(_op(_RET_K, _ERRNO | errno.EPERM))
    body += [
        _op(_JEQ_K, clone3, 0, 1),
        _op(_RET_K, _ERRNO | errno.ENOSYS),
        _op(_JEQ_K, unshare, 1, 0),
        _op(_JEQ_K, clone, 0, 3),
        _op(_LD_W_ABS, _ARG0_LOW),
        _op(_JSET_K, _CLONE_NEWUSER, 0, 1),
        _op(_RET_K, _ERRNO | errno.EPERM),
        _op(_RET_K, _ALLOW),
    ]
    # skip this ABI's body unless the arch is its own (A still holds the arch then)
    return [_op(_JEQ_K, arch, 0, len(body)), *body]


@functools.lru_cache(maxsize=1)
def userns_filter() -> str:
    """The filter program (struct sock_filter[]) as hex, for our init; "" if this
    machine's architecture is not known here."""
    abis = _ABIS.get(platform.machine().lower())
    if abis is None:
        return ""
    program = [_op(_LD_W_ABS, _ARCH)]
    for index, (arch, unshare, clone, clone3) in enumerate(abis):
        x32 = index == 0 and arch == 0xC000003E
        program += _abi_block(arch, unshare, clone, clone3, x32)
    program.append(_op(_RET_K, _ALLOW))  # an ABI not listed: nothing to refuse there
    return b"".join(program).hex()
