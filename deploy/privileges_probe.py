#!/usr/bin/env python3
"""Which of the sandbox jail's OS operations work under the current privileges.

Run it as the container's user (root) with the privileges under test, e.g.

    podman run --rm <flags> faas-sandbox:0.1.0 python3 deploy/privileges_probe.py

It prints one line per operation ("yes" or "no: <why>") and, with --json, a JSON object
instead. Every operation runs in a forked child, so nothing it changes (namespaces, mounts,
uids, seccomp filters) outlives its check. It needs only python3; it reads or writes nothing
outside /tmp and its own cgroup, and removes what it creates.

The operations are what the jail needs as root inside the container: creating namespaces,
joining namespaces made ahead (setns), mounting (tmpfs, bind, read-only remount, procfs),
changing root (pivot_root, chroot), writing its own cgroup subtree, dropping to unprivileged
uids, signalling and chowning for them, and installing a seccomp filter.
"""

import ctypes
import ctypes.util
import errno
import json
import os
import platform
import shutil
import signal
import struct
import sys
import tempfile

LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
LIBC.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_char_p]
LIBC.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
LIBC.unshare.argtypes = [ctypes.c_int]
LIBC.setns.argtypes = [ctypes.c_int, ctypes.c_int]
LIBC.syscall.restype = ctypes.c_long

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

# Syscall numbers that differ between the architectures the image is built for.
SYSCALLS = {
    "x86_64": {"pivot_root": 155, "getpid": 39, "audit_arch": 0xC000003E},
    "aarch64": {"pivot_root": 41, "getpid": 172, "audit_arch": 0xC00000B7},
}
ARCH = SYSCALLS.get(platform.machine())

# A uid well inside a 65536-uid user namespace mapping (the size Kubernetes gives a pod), and
# the first uid beyond it: the jail's uids must fit in the mapping.
RUN_UID = 60001
BEYOND_65536 = 65536


class Failed(Exception):
    """An operation failed; the message says how."""


def check(result, what):
    """Raises Failed with errno's name when a libc call returned -1."""
    if result == -1:
        err = ctypes.get_errno()
        raise Failed(f"{what}: {errno.errorcode.get(err, err)} ({os.strerror(err)})")
    return result


def unshare(flags, what):
    check(LIBC.unshare(flags), f"unshare({what})")


def mount(source, target, fstype, flags, data=None, what="mount"):
    check(LIBC.mount(source.encode() if source else None, target.encode(),
                     fstype.encode() if fstype else None, flags,
                     data.encode() if data else None), what)


def private_mounts():
    """A mount namespace of its own in which nothing propagates back."""
    unshare(CLONE_NEWNS, "CLONE_NEWNS")
    mount(None, "/", None, MS_REC | MS_PRIVATE, what="make / rprivate")


SCRATCH = None


def scratch_dir():
    """A new directory under the probe's own scratch directory in /tmp."""
    return tempfile.mkdtemp(dir=SCRATCH)


def in_child(fn, timeout_s=10):
    """Runs fn in a forked child; returns "yes" or "no: <reason>"."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            detail = fn()
            message = "yes" + (f" ({detail})" if detail else "")
        except Failed as e:
            message = f"no: {e}"
        except OSError as e:
            message = f"no: {e.strerror or e}" + (f" ({e.filename})" if e.filename else "")
        except Exception as e:  # noqa: BLE001 - every failure is a result here
            message = f"no: {type(e).__name__}: {e}"
        os.write(write_end, message.encode()[:4000])
        os._exit(0)
    os.close(write_end)
    signal.signal(signal.SIGALRM, lambda *_: os.kill(pid, signal.SIGKILL))
    signal.alarm(timeout_s)
    chunks = []
    while True:
        chunk = os.read(read_end, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    signal.alarm(0)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode(errors="replace")
    if not text:
        return f"no: the check died ({status})"
    return text


# ---------------------------------------------------------------------------------------------
# The operations.


def ns_unshare(flag, name):
    def op():
        unshare(flag, name)
    return op


def pid_namespace():
    unshare(CLONE_NEWPID, "CLONE_NEWPID")
    pid = os.fork()
    if pid == 0:
        os._exit(0 if os.getpid() == 1 else 1)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise Failed("the first child of the new pid namespace is not pid 1")


def mount_tmpfs():
    private_mounts()
    target = scratch_dir()
    mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0700",
          what="mount tmpfs")
    with open(os.path.join(target, "f"), "w") as f:
        f.write("x")


def bind_read_only():
    private_mounts()
    source, target = scratch_dir(), scratch_dir()
    mount(source, target, None, MS_BIND, what="bind mount")
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV,
          what="remount the bind mount read-only")
    try:
        open(os.path.join(target, "f"), "w").close()
    except OSError as e:
        if e.errno == errno.EROFS:
            return None
        raise
    raise Failed("the read-only bind mount is still writable")


def mount_proc(options=None):
    def op():
        unshare(CLONE_NEWPID, "CLONE_NEWPID")
        private_mounts()
        target = scratch_dir()
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pid 1 of the new namespace mounts its own procfs
            os.close(read_end)
            try:
                mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, options,
                      what="mount proc" + (f" -o {options}" if options else ""))
                pids = sorted(int(p) for p in os.listdir(target) if p.isdigit())
                os.write(write_end, f"ok {pids}".encode())
            except Failed as e:
                os.write(write_end, str(e).encode())
            os._exit(0)
        os.close(write_end)
        answer = os.read(read_end, 4096).decode()
        os.waitpid(pid, 0)
        if not answer.startswith("ok"):
            raise Failed(answer)
        return f"sees pids {answer[3:]}"
    return op


def pivot_root():
    private_mounts()
    pivot_root_into_tmpfs()


def pivot_root_into_tmpfs(prepare=None, new_root=None):
    """Makes a tmpfs the root of this mount namespace and drops the old root; prepare(root)
    may fill the new root first."""
    if ARCH is None:
        raise Failed(f"no syscall table for {platform.machine()}")
    new_root = new_root or scratch_dir()
    mount("tmpfs", new_root, "tmpfs", 0, "size=1m", what="mount tmpfs for the new root")
    os.mkdir(os.path.join(new_root, "old"))
    if prepare:
        prepare(new_root)
    check(LIBC.syscall(ARCH["pivot_root"], new_root.encode(),
                       os.path.join(new_root, "old").encode()), "pivot_root")
    os.chdir("/")
    check(LIBC.umount2(b"/old", MNT_DETACH), "umount the old root")
    os.rmdir("/old")
    if not prepare and os.listdir("/"):
        raise Failed("the new root is not empty")


def chroot():
    target = scratch_dir()
    os.chroot(target)
    os.chdir("/")


def setns(flag, name, kind):
    def op():
        # A helper makes the namespace ahead and waits; this process then joins it.
        ready_r, ready_w = os.pipe()
        done_r, done_w = os.pipe()
        helper = os.fork()
        if helper == 0:
            os.close(ready_r)
            os.close(done_w)
            try:
                unshare(flag, name)
                os.write(ready_w, b"1")
            except Failed as e:
                os.write(ready_w, str(e).encode())
            os.read(done_r, 1)
            os._exit(0)
        os.close(ready_w)
        os.close(done_r)
        try:
            answer = os.read(ready_r, 4096).decode()
            if answer != "1":
                raise Failed(f"making the namespace ahead failed: {answer}")
            fd = os.open(f"/proc/{helper}/ns/{kind}", os.O_RDONLY)
            check(LIBC.setns(fd, flag), f"setns({name})")
            if os.readlink(f"/proc/self/ns/{kind}") != os.readlink(f"/proc/{helper}/ns/{kind}"):
                raise Failed("setns returned but the namespace did not change")
        finally:
            os.write(done_w, b"1")
            os.waitpid(helper, 0)
    return op


def cgroup_layout():
    """("v2", dir) or ("v1", {controller: dir}) of this process's own cgroup as mounted."""
    lines = open("/proc/self/cgroup").read().splitlines()
    if any(line.startswith("0::") for line in lines) and os.path.exists(
            "/sys/fs/cgroup/cgroup.controllers"):
        path = next(line[3:] for line in lines if line.startswith("0::"))
        for candidate in (os.path.join("/sys/fs/cgroup", path.lstrip("/")), "/sys/fs/cgroup"):
            if os.path.exists(os.path.join(candidate, "cgroup.procs")):
                return "v2", candidate
        raise Failed(f"own cgroup {path} not found under /sys/fs/cgroup")
    dirs = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            if controller in ("memory", "pids", "cpu"):
                base = f"/sys/fs/cgroup/{controller}"
                own = os.path.join(base, path.lstrip("/"))
                dirs[controller] = own if os.path.isdir(own) else base
    return "v1", dirs


def write(path, value):
    with open(path, "w") as f:
        f.write(value)


def cgroup_subtree():
    version, where = cgroup_layout()
    name = f"faas-probe-{os.getpid()}"
    made = []
    try:
        if version == "v2":
            # Controllers reach a child only through subtree_control, and a cgroup with
            # processes cannot hand them on ("no internal processes"): the jail keeps the
            # service in a leaf of its own and its runs in sibling leaves.
            parent = os.path.join(where, name)
            os.mkdir(parent)
            made.append(parent)
            write(os.path.join(parent, "cgroup.subtree_control"), "+memory +pids +cpu")
            leaf = os.path.join(parent, "run")
            os.mkdir(leaf)
            made.insert(0, leaf)
            write(os.path.join(leaf, "memory.max"), str(64 << 20))
            write(os.path.join(leaf, "pids.max"), "16")
            write(os.path.join(leaf, "cpu.max"), "50000 100000")
            write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
            return "cgroup v2: memory, pids, cpu"
        settings = {
            "memory": ("memory.limit_in_bytes", str(64 << 20)),
            "pids": ("pids.max", "16"),
            "cpu": ("cpu.cfs_quota_us", "50000"),
        }
        missing = [c for c in settings if c not in where]
        if missing:
            raise Failed(f"cgroup v1 controllers not mounted: {', '.join(missing)}")
        for controller, (file, value) in settings.items():
            path = os.path.join(where[controller], name)
            try:
                os.mkdir(path)
            except OSError as e:
                raise Failed(f"mkdir in the {controller} cgroup: {e.strerror}") from None
            made.append(path)
            write(os.path.join(path, file), value)
            write(os.path.join(path, "cgroup.procs"), str(os.getpid()))
        return "cgroup v1: memory, pids, cpu"
    finally:
        if made:
            # Leave the probe cgroups so that they can be removed.
            top = "/sys/fs/cgroup" if version == "v2" else None
            for path in made:
                try:
                    parent_procs = os.path.join(os.path.dirname(path), "cgroup.procs")
                    if top is None:
                        write(parent_procs, str(os.getpid()))
                    os.rmdir(path)
                except OSError:
                    pass


def setresuid(uid):
    def op():
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        if os.getresuid() != (uid, uid, uid):
            raise Failed(f"still {os.getresuid()}")
        caps = [line for line in open("/proc/self/status") if line.startswith("CapEff")]
        if caps and caps[0].split()[1].strip("0"):
            raise Failed(f"uid {uid} kept capabilities: {caps[0].strip()}")
    return op


def kill_other_uid():
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.setgroups([])
        os.setresgid(RUN_UID, RUN_UID, RUN_UID)
        os.setresuid(RUN_UID, RUN_UID, RUN_UID)
        os.write(ready_w, b"1")
        signal.pause()
        os._exit(0)
    os.read(ready_r, 1)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if not os.WIFSIGNALED(status):
        raise Failed("the other uid's process was not killed")


def chown_to_run_uid():
    path = scratch_dir()
    os.chown(path, RUN_UID, RUN_UID)
    if os.stat(path).st_uid != RUN_UID:
        raise Failed("chown did not take")
    os.rmdir(path)


def seccomp_filter():
    if ARCH is None:
        raise Failed(f"no syscall table for {platform.machine()}")
    # Classic BPF: getpid fails with EPERM, every other call is allowed; calls of another
    # architecture are killed.
    ld_w_abs, jeq_k, ret_k = 0x20, 0x15, 0x06
    errno_eperm, allow, kill = 0x00050000 | errno.EPERM, 0x7FFF0000, 0x00000000
    program = [
        (ld_w_abs, 0, 0, 4),  # seccomp_data.arch
        (jeq_k, 1, 0, ARCH["audit_arch"]),
        (ret_k, 0, 0, kill),
        (ld_w_abs, 0, 0, 0),  # seccomp_data.nr
        (jeq_k, 0, 1, ARCH["getpid"]),
        (ret_k, 0, 0, errno_eperm),
        (ret_k, 0, 0, allow),
    ]
    raw = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buffer = ctypes.create_string_buffer(raw)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = SockFprog(len(program), ctypes.cast(buffer, ctypes.c_void_p))
    check(LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    check(LIBC.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0),
          "prctl(PR_SET_SECCOMP)")
    result = LIBC.syscall(ARCH["getpid"])
    if result != -1 or ctypes.get_errno() != errno.EPERM:
        raise Failed("the filter is installed but getpid still succeeds")


def own_user_namespace():
    """The jail's namespaces built inside a user namespace of its own, whose root is an
    unprivileged uid outside it: the caller needs no capability beyond SETUID and SETGID (to
    map that uid), only a seccomp profile that lets it create a user namespace."""
    ready_r, ready_w = os.pipe()
    mapped_r, mapped_w = os.pipe()
    result_r, result_w = os.pipe()
    os.chmod(SCRATCH, 0o711)
    new_root = scratch_dir()
    os.chown(new_root, RUN_UID, RUN_UID)
    helper = os.fork()
    if helper == 0:
        try:
            unshare(CLONE_NEWUSER, "CLONE_NEWUSER")
            os.write(ready_w, b"1")
            if os.read(mapped_r, 1) != b"1":
                raise Failed("the uid map was not written")
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)  # root of the new namespace: RUN_UID outside it
            unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWUTS,
                    "CLONE_NEWNS|CLONE_NEWPID|CLONE_NEWIPC|CLONE_NEWNET|CLONE_NEWUTS")
            mount(None, "/", None, MS_REC | MS_PRIVATE, what="make / rprivate")
            pid = os.fork()
            if pid == 0:  # pid 1 of the new pid namespace
                try:
                    # procfs is mounted while the old root (and its /proc) is still visible: a
                    # user namespace may mount procfs only where a full one is visible.
                    pivot_root_into_tmpfs(lambda root: (
                        os.mkdir(os.path.join(root, "proc")),
                        mount("proc", os.path.join(root, "proc"), "proc",
                              MS_NOSUID | MS_NODEV | MS_NOEXEC, what="mount proc")),
                        new_root)
                    if not os.listdir("/proc"):
                        raise Failed("the new procfs is empty")
                    os.write(result_w, b"ok")
                except (Failed, OSError) as e:
                    os.write(result_w, str(e).encode())
                os._exit(0)
            os.waitpid(pid, 0)
        except (Failed, OSError) as e:
            os.write(ready_w, b"0")
            os.write(result_w, str(e).encode())
        os._exit(0)
    try:
        if os.read(ready_r, 1) == b"1":
            # Written from outside the new namespace, as the jail's parent would: mapping a
            # uid other than its own takes CAP_SETUID/CAP_SETGID here; mapping uid 0 would
            # take CAP_SETFCAP.
            write(f"/proc/{helper}/uid_map", f"0 {RUN_UID} 1")
            write(f"/proc/{helper}/gid_map", f"0 {RUN_UID} 1")
            os.write(mapped_w, b"1")
    finally:
        os.close(mapped_w)
        os.close(result_w)
        answer = os.read(result_r, 4096).decode()
        os.waitpid(helper, 0)
    if answer != "ok":
        raise Failed(answer)
    return f"mount, pid, ipc, net, uts, tmpfs root, proc; root inside is uid {RUN_UID} outside"


def cgroup_v1_hierarchy():
    """What CAP_SYS_ADMIN of the host's user namespace allows: a new cgroup v1 hierarchy,
    whose release_agent runs a program as root on the host (a known container escape)."""
    private_mounts()
    target = scratch_dir()
    mount("cgroup", target, "cgroup", 0, "none,name=faas-probe", what="mount a cgroup v1 hierarchy")
    writable = os.access(os.path.join(target, "release_agent"), os.W_OK)
    LIBC.umount2(target.encode(), MNT_DETACH)
    return "release_agent writable" if writable else "release_agent read-only"


def cgroup_remount_rw():
    """Whether the container's read-only cgroup mount can be made writable (and its own
    limits raised)."""
    version, where = cgroup_layout()
    mount_point = "/sys/fs/cgroup" if version == "v2" else "/sys/fs/cgroup/memory"
    own = where if version == "v2" else where.get("memory", mount_point)
    private_mounts()
    mount(None, mount_point, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | MS_NOEXEC,
          what=f"remount {mount_point} read-write")
    probe_dir = os.path.join(own, f"faas-probe-{os.getpid()}")
    os.mkdir(probe_dir)
    os.rmdir(probe_dir)


# ---------------------------------------------------------------------------------------------

CHECKS = [
    ("unshare user", ns_unshare(CLONE_NEWUSER, "CLONE_NEWUSER")),
    ("unshare mount", ns_unshare(CLONE_NEWNS, "CLONE_NEWNS")),
    ("unshare pid", pid_namespace),
    ("unshare ipc", ns_unshare(CLONE_NEWIPC, "CLONE_NEWIPC")),
    ("unshare net", ns_unshare(CLONE_NEWNET, "CLONE_NEWNET")),
    ("unshare uts", ns_unshare(CLONE_NEWUTS, "CLONE_NEWUTS")),
    ("unshare cgroup", ns_unshare(CLONE_NEWCGROUP, "CLONE_NEWCGROUP")),
    ("setns net", setns(CLONE_NEWNET, "CLONE_NEWNET", "net")),
    ("setns ipc", setns(CLONE_NEWIPC, "CLONE_NEWIPC", "ipc")),
    ("mount tmpfs", mount_tmpfs),
    ("bind + remount ro", bind_read_only),
    ("mount proc (new pid ns)", mount_proc()),
    ("mount proc subset=pid", mount_proc("subset=pid")),
    ("pivot_root", pivot_root),
    ("chroot", chroot),
    ("cgroup subtree", cgroup_subtree),
    (f"setresuid {RUN_UID}", setresuid(RUN_UID)),
    (f"setresuid {BEYOND_65536}", setresuid(BEYOND_65536)),
    ("kill other uid", kill_other_uid),
    ("chown to run uid", chown_to_run_uid),
    ("seccomp filter", seccomp_filter),
    ("jail in own user namespace", own_user_namespace),
    # What a privilege allows beyond the jail's needs: "no" is the safe answer.
    ("exposed: new cgroup v1 hierarchy", cgroup_v1_hierarchy),
    ("exposed: remount cgroup rw", cgroup_remount_rw),
]


def context():
    """Facts about the privileges the checks ran under."""
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    uid_map = " / ".join(" ".join(line.split()) for line in open("/proc/self/uid_map"))
    cgroup = "v2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "v1"
    return {
        "uid": os.getuid(),
        "uid_map": uid_map,
        "CapEff": status.get("CapEff", "?").strip(),
        "NoNewPrivs": status.get("NoNewPrivs", "?").strip(),
        "Seccomp": status.get("Seccomp", "?").strip(),
        "cgroup": cgroup,
    }


def main():
    global SCRATCH
    results = {"context": context(), "checks": {}}
    SCRATCH = tempfile.mkdtemp(prefix="faas-probe-", dir="/tmp")
    try:
        for name, fn in CHECKS:
            results["checks"][name] = in_child(fn)
    finally:
        shutil.rmtree(SCRATCH, ignore_errors=True)
    if "--json" in sys.argv[1:]:
        print(json.dumps(results))
        return
    for key, value in results["context"].items():
        print(f"# {key}: {value}")
    width = max(len(name) for name, _ in CHECKS)
    for name, result in results["checks"].items():
        print(f"{name:<{width}}  {result}")


if __name__ == "__main__":
    main()
