"""The seccomp filter of every sandbox process, compiled once with libseccomp.

The filter allows by default and refuses what a sandbox never needs and an escape would:
sockets of any family but AF_UNIX, io_uring, ptrace and reading other processes' memory,
new namespaces and mounts, kernel keyrings, BPF, perf events, userfaultfd, module and kexec
loading. clone3 answers ENOSYS (its flags cannot be inspected), so libc falls back to clone,
whose namespace flags are refused. Foreign ABIs (32-bit and x32 calls on x86_64) are refused
whole. The program is exported as BPF once; a sandbox process installs it with one prctl.
"""

import ctypes
import ctypes.util
import errno
import os

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO_BASE = 0x00050000
SCMP_CMP_NE = 1
SCMP_CMP_MASKED_EQ = 7
SCMP_FLTATR_ACT_BADARCH = 2
SCMP_FLTATR_CTL_NNP = 3

AF_UNIX = 1
# New mount, cgroup, uts, ipc, user, pid and net namespaces (clone's low byte is the exit signal).
CLONE_NEW_BITS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                  0x40000000)

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

# Calls no sandbox needs; each is a known way out of a sandbox or into the kernel's attack surface.
REFUSED = (
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "move_mount",
    "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog", "vhangup",
    "open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "fanotify_init",
    "iopl", "ioperm", "personality", "uselib", "nfsservctl", "settimeofday",
    "clock_settime", "clock_adjtime", "adjtimex", "sethostname", "setdomainname",
)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte),
                ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _errno_action(code):
    return SCMP_ACT_ERRNO_BASE | code


def compile_filter(allow_unix_socket=True):
    """The filter as raw BPF bytes, or None where libseccomp is missing. Without
    `allow_unix_socket` no socket can be made at all (socketpair still works): outside a
    network namespace of its own, abstract unix sockets would reach other sandboxes."""
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        return None
    try:
        refuse = _errno_action(errno.EPERM)
        lib.seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, refuse)
        lib.seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0)  # set by the jail itself

        def rule(action, call, *conditions):
            number = lib.seccomp_syscall_resolve_name(call.encode())
            if number < 0:
                return  # not on this architecture
            array = (_ArgCmp * max(1, len(conditions)))(*conditions)
            if lib.seccomp_rule_add_array(ctx, action, number, len(conditions), array) != 0:
                raise OSError("seccomp rule for %s was refused" % call)

        for call in REFUSED:
            rule(refuse, call)
        if allow_unix_socket:
            rule(refuse, "socket", _ArgCmp(0, SCMP_CMP_NE, AF_UNIX, 0))
        else:
            rule(refuse, "socket")
        rule(refuse, "socketpair", _ArgCmp(0, SCMP_CMP_NE, AF_UNIX, 0))
        for bit in CLONE_NEW_BITS:
            rule(refuse, "clone", _ArgCmp(0, SCMP_CMP_MASKED_EQ, bit, bit))
        rule(_errno_action(errno.ENOSYS), "clone3")
        return _export(lib, ctx)
    finally:
        lib.seccomp_release(ctx)


def no_new_privs():
    """Sets no_new_privs on the calling process: exec can never gain privileges again."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")


class Filter:
    """A compiled filter, made ready in the parent so a child installs it with two prctl calls."""

    def __init__(self, program):
        count = len(program) // 8
        self._filters = (_SockFilter * count).from_buffer_copy(program)
        self._fprog = _SockFprog(count, self._filters)
        self._prctl = ctypes.CDLL(None, use_errno=True).prctl
        self._prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong,
                                ctypes.c_ulong]

    def install(self):
        """Sets no_new_privs and installs the filter on the calling thread, for good."""
        if self._prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if self._prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(self._fprog), 0,
                       0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")


def _export(lib, ctx):
    read_fd, write_fd = os.pipe()
    try:
        if lib.seccomp_export_bpf(ctx, write_fd) != 0:
            return None
        os.close(write_fd)
        write_fd = -1
        data = b""
        while chunk := os.read(read_fd, 65536):
            data += chunk
        return data
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
