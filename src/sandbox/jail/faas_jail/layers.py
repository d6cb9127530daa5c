"""The OS layers that confine a sandbox process, one function per layer.

Every sandbox process (a JavaScript runner, a Python zygote and each Python run it forks) is
put into its layers by these functions, in this order: a process of its own made by a raw
clone with new pid, mount, ipc and uts namespaces; the slot's cgroups, then a cgroup namespace;
the slot's network namespace (made ahead, joined with setns); a minimal read-only root with a
private size-limited /tmp; rlimits; an unprivileged uid of its own with no groups; no_new_privs
and the seccomp filter; a clean environment. Each layer is probed at start (see probe.py): a
layer this host refuses is left out and reported, never half applied.

The functions here run in a freshly cloned child of a single-threaded process, before anything
of a sandbox's own runs: they raise OSError on failure and the caller exits the child.
"""

import ctypes
import os
import signal
import resource
import shutil

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long
LIBC.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_char_p]
LIBC.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
LIBC.setns.argtypes = [ctypes.c_int, ctypes.c_int]
LIBC.unshare.argtypes = [ctypes.c_int]
LIBC.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
SIGCHLD = 17

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 0x4000, 1 << 18
MNT_DETACH = 2

_MACHINE = os.uname().machine
SYS_CLONE = {"x86_64": 56, "aarch64": 220}.get(_MACHINE)
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(_MACHINE)

HOSTNAME = b"sandbox"
NICENESS = 10  # sandboxes yield the CPU to the service that must answer and stop them


def _check(result, what):
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, "%s: %s" % (what, os.strerror(errno)))
    return result


def clone(flags):
    """Forks with `flags` (new namespaces) by a raw clone: 0 in the child, its pid in the
    parent. No at-fork handlers run: the caller must be single-threaded and hold no lock."""
    if SYS_CLONE is None:
        raise OSError(38, "clone: unsupported architecture %s" % _MACHINE)
    return _check(LIBC.syscall(SYS_CLONE, flags | SIGCHLD, 0, 0, 0, 0), "clone")


def unshare(flags):
    """Moves the calling process into new namespaces of the kinds in `flags`."""
    _check(LIBC.unshare(flags), "unshare")


def setns(fd, kind):
    """Joins the namespace open at `fd` (of kind `kind`, e.g. CLONE_NEWNET)."""
    _check(LIBC.setns(fd, kind), "setns")


def mount(source, target, fstype, flags, data=None):
    """mount(2), with bytes or str arguments."""

    def raw(value):
        return value.encode() if isinstance(value, str) else value

    _check(LIBC.mount(raw(source), raw(target), raw(fstype), flags, raw(data)),
           "mount %s" % target)


def set_hostname():
    """Names the host `sandbox` in the process's own uts namespace."""
    _check(LIBC.sethostname(HOSTNAME, len(HOSTNAME)), "sethostname")


def join_cgroups(paths):
    """Moves the calling process into each cgroup dir in `paths` (one per controller)."""
    for path in paths:
        fd = os.open(path + "/cgroup.procs", os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)


def tmpfs_options(size, inodes, uid, mode="0700"):
    """Options of a size-limited tmpfs owned by `uid`."""
    return "size=%d,nr_inodes=%d,mode=%s,uid=%d,gid=%d" % (size, inodes, mode, uid, uid)


class Root:
    """A minimal root file system: a tmpfs with read-only binds of what the sandbox needs
    (system libraries, an interpreter, its own files), a synthetic /etc that names no host
    detail, a minimal /dev, a private /tmp (none with `tmp_options` None: the template's users
    mount their own) and, in a new pid namespace, its own /proc."""

    def __init__(self, mount_point, binds, etc_files, tmp_options):
        # (host path, path in the root) pairs; directories and files, mounted read-only.
        self.mount_point = mount_point
        self.binds = binds
        self.etc_files = etc_files  # name -> bytes
        self.tmp_options = tmp_options

    def enter(self, with_proc, writable=()):
        """Builds the root in a new mount namespace (the caller's) and makes it `/`; the
        (host path, path in the root) pairs in `writable` are bound read-write."""
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        base = self.mount_point
        mount("tmpfs", base, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,nr_inodes=4096,mode=0755")
        os.umask(0o022)
        for source, target, link in self.binds:
            path = base + target
            if link is not None:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                os.symlink(link, path)
                continue
            if os.path.isdir(source):
                os.makedirs(path, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
            mount(source, path, None, MS_BIND | MS_REC)
            mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
        for source, target in writable:
            os.makedirs(base + target, exist_ok=True)
            mount(source, base + target, None, MS_BIND | MS_REC)
        etc = base + "/etc"
        os.makedirs(etc, exist_ok=True)
        for name, content in self.etc_files.items():
            with open(os.path.join(etc, name), "wb") as file:
                file.write(content)
        self._dev(base)
        os.mkdir(base + "/tmp")
        if self.tmp_options is not None:
            mount("tmpfs", base + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, self.tmp_options)
        os.mkdir(base + "/proc")
        if with_proc:
            mount("proc", base + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        mount(None, base, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        self._pivot(base)

    def _dev(self, base):
        dev = base + "/dev"
        os.mkdir(dev)
        mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,nr_inodes=64,mode=0755")
        for name in ("null", "zero", "full", "random", "urandom"):
            if os.path.exists("/dev/" + name):
                os.close(os.open(dev + "/" + name, os.O_CREAT | os.O_WRONLY, 0o666))
                mount("/dev/" + name, dev + "/" + name, None, MS_BIND)
        for name, fd in (("stdin", 0), ("stdout", 1), ("stderr", 2)):
            os.symlink("/proc/self/fd/%d" % fd, dev + "/" + name)
        os.symlink("/proc/self/fd", dev + "/fd")
        os.mkdir(dev + "/shm")
        if self.tmp_options is not None:
            mount("tmpfs", dev + "/shm", "tmpfs", MS_NOSUID | MS_NODEV, self.tmp_options)

    @staticmethod
    def _pivot(base):
        """Makes `base` the root and detaches the old one: nothing of the host stays mounted."""
        os.chdir(base)
        if SYS_PIVOT_ROOT is None:
            os.chroot(".")
        else:
            _check(LIBC.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
            _check(LIBC.umount2(b".", MNT_DETACH), "umount old root")
        os.chdir("/")


class FreshTmp:
    """A fresh /tmp and /dev/shm and, in a new pid namespace, a /proc of its own, in a new
    mount namespace (the caller's): what one Python run gets inside its slot's root. The
    arguments are made once (a zygote's children call it once per run, and every page a child
    touches costs it a copy)."""

    def __init__(self, tmp_options, with_proc):
        options = tmp_options.encode()
        calls = [(None, b"/", None, MS_REC | MS_PRIVATE, None),
                 (b"tmpfs", b"/tmp", b"tmpfs", MS_NOSUID | MS_NODEV, options)]
        if os.path.isdir("/dev/shm"):
            calls.append((b"tmpfs", b"/dev/shm", b"tmpfs", MS_NOSUID | MS_NODEV, options))
        if with_proc:
            calls.append((b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None))
        self.calls = tuple(calls)

    def __call__(self):
        for source, target, fstype, flags, data in self.calls:
            if LIBC.mount(source, target, fstype, flags, data) < 0:
                _check(-1, "mount %s" % target.decode())


def fresh_tmp(tmp_options, with_proc):
    """Mounts a fresh /tmp (see FreshTmp) at once."""
    FreshTmp(tmp_options, with_proc)()


def own_dir(source, target, uid):
    """Makes `target` (under a private /tmp) a dir of `uid`'s own: a copy of each file of
    `source`, `uid`'s to write, and a link to each subdir, shared and read-only. A JS runner's
    Deno cache: the code cache databases it must open for writing, the compiled modules it
    only reads."""
    os.mkdir(target, 0o700)
    os.chown(target, uid, uid)
    for entry in os.scandir(source):
        path = os.path.join(target, entry.name)
        if entry.is_dir(follow_symlinks=False):
            os.symlink(entry.path, path)
        elif entry.is_file(follow_symlinks=False):
            shutil.copyfile(entry.path, path)
            os.chown(path, uid, uid)


class Limits:
    """rlimits (name -> value, e.g. {"NOFILE": 256}) and the sandbox niceness, resolved once."""

    def __init__(self, limits):
        self.pairs = tuple((getattr(resource, "RLIMIT_" + name), (value, value))
                           for name, value in limits.items())

    def __call__(self):
        try:
            os.setpriority(os.PRIO_PROCESS, 0, NICENESS)
        except OSError:
            pass
        for which, pair in self.pairs:
            resource.setrlimit(which, pair)


def set_limits(limits):
    """Applies rlimits (name -> value, e.g. {"NOFILE": 256}) and the sandbox niceness."""
    Limits(limits)()


def drop_identity(uid):
    """Becomes `uid`/`uid` with no supplementary groups; as root this also drops every
    capability (the kernel clears them when all uids leave 0)."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


PR_SET_PDEATHSIG = 1


def die_with_parent(parent=None):
    """Has the kernel SIGKILL this process when its parent dies, so nothing outlives the
    process that started it; with `parent` (its pid), ends at once if it died already (which
    a child in a new pid namespace cannot tell: its parent's pid reads 0 there). The kernel
    forgets this when the uid changes: call it again after drop_identity. It survives exec."""
    _check(LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
    if parent is not None and os.getppid() not in (parent, 0):
        os._exit(1)


def helper_child(parent):
    """In a short-lived helper the jailer forks (a probe, a namespace maker): it dies with the
    jailer and lets go of the jailer's pipes to the host at once. An orphan holding them would
    keep the host from ever seeing the dead jailer's output end."""
    die_with_parent(parent)
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)


def quiet_stdio(keep_stderr):
    """Points stdin and stdout (and stderr unless kept) at /dev/null: a sandbox must not hold
    the jailer's pipes, whose end tells the host that the jailer is gone."""
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1) if keep_stderr else (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def close_fds_except(keep):
    """Closes every descriptor from 3 up except those in `keep`."""
    low = 3
    for fd in sorted(keep):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
