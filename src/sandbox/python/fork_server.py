# The Python fork server: stays warm, forks one sandboxed child per run.
#
# Protocol: newline-delimited JSON. Requests arrive on stdin, events leave on stdout.
# Every child ("spare") is forked ahead of demand, sandboxed (own session, pid and mount
# namespace with a minimal read-only root, rlimits, own uid, seccomp, private /tmp), and
# waits for its job on a pipe; a run only sends it the code.
#
# This process holds no secrets and imports only what the children need, since they
# inherit its memory.

import ast
import ctypes
import fcntl
import gc
import io
import json
import linecache
import os
import resource
import select
import shutil
import signal
import sys
import time
import traceback
import types

CONFIG = json.loads(sys.argv[1])
MEMORY_LIMIT = CONFIG["memory_limit_mb"] * 1024 * 1024
MAX_OUTPUT = CONFIG["max_output_bytes"]
MAX_SLOTS = CONFIG["max_slots"]
UID_BASE = CONFIG["uid_base"]
FILE_SIZE_LIMIT = CONFIG["file_size_limit_bytes"]
MAX_PROCS = CONFIG["max_processes"]
MAX_FILES = CONFIG["max_open_files"]
MAX_INODES = CONFIG.get("max_inodes", 4096)
USER_FILE = "main.py"
LOCK_NAME = ".lock"
LAYERS_OFF = set(CONFIG.get("layers_off", ()))  # for tests of the fallbacks

CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
PR_SET_CHILD_SUBREAPER = 36
CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND = 1, 2, 4, 8, 32, 4096
MS_REC, MS_PRIVATE = 0x4000, 1 << 18
AF_UNIX = 1
RUN_NICENESS = 10  # runs yield the CPU to the server and the service
SERVER_NICENESS = -5

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long
LIBC.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_char_p]
SYS_CLONE = {"x86_64": 56, "aarch64": 220}.get(os.uname().machine)

OUT_FD = 1
READ_CHUNK = 65536
# At its timeout a run gets SIGTERM, which writes out what its code printed and Python still
# buffers, and this long to end before its group gets SIGKILL: the host answers by itself at
# timeout + 90 ms, so what the run wrote must be read well before that.
STOP_SIGNAL = signal.SIGTERM
STOP_GRACE = 0.04


def send(event):
    data = (json.dumps(event, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass")
    view = memoryview(data)
    while view:
        written = os.write(OUT_FD, view)
        view = view[written:]


# ---------------------------------------------------------------- seccomp (no inet sockets)

def seccomp_program(allow_unix):
    """BPF program: socket() only for AF_UNIX (when `allow_unix`), so no inet, inet6, vsock,
    netlink or packet sockets; no io_uring; no foreign ABI. None on an unknown architecture."""
    machine = os.uname().machine
    if machine == "x86_64":
        arch, nr_socket, nr_io_uring, x32 = 0xC000003E, 41, 425, True
    elif machine == "aarch64":
        arch, nr_socket, nr_io_uring, x32 = 0xC00000B7, 198, 425, False
    else:
        return None
    ld_w_abs, jeq_k, jge_k, ret_k = 0x20, 0x15, 0x35, 0x06
    allow, deny = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ERRNO | EPERM
    prog = [
        (ld_w_abs, 0, 0, 4),  # arch
        (jeq_k, 1, 0, arch),
        (ret_k, 0, 0, deny),  # foreign ABI (e.g. int 0x80): refuse everything
        (ld_w_abs, 0, 0, 0),  # syscall number
        (jge_k, 0, 1, 0x40000000) if x32 else (jeq_k, 0, 1, 0xFFFFFFFF),
        (ret_k, 0, 0, deny),
        (jeq_k, 0, 1, nr_io_uring),
        (ret_k, 0, 0, deny),
        (jeq_k, 1, 0, nr_socket),
        (ret_k, 0, 0, allow),
        (ld_w_abs, 0, 0, 16),  # args[0]: address family
        (jeq_k, 0, 1, AF_UNIX if allow_unix else 0xFFFFFFFF),
        (ret_k, 0, 0, allow),
        (ret_k, 0, 0, deny),
    ]

    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte),
                    ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

    filters = (SockFilter * len(prog))(*[SockFilter(*ins) for ins in prog])
    return SockFprog(len(prog), filters), filters


SECCOMP = None  # built once the probe knows whether a network namespace hides AF_UNIX peers


def install_seccomp():
    if SECCOMP is None:
        raise OSError("seccomp filter not available for this architecture")
    if LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if LIBC.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(SECCOMP[0]), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")


def unshare(flags):
    if LIBC.unshare(flags) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


# ---------------------------------------------------------------- isolation probe

IS_ROOT = os.geteuid() == 0
LAYERS = {"rlimits": True, "uid": False, "netns": False, "pidns": False, "mountns": False,
          "rootfs": False, "cgroup": False, "seccomp": False, "tmpdir": True}
PATH_FDS = {}  # sys.path entry -> directory fd, for entries the sandbox uid cannot read


def probe_child(action):
    """Runs `action` in a throwaway child; True when it exits 0."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if action() else 1
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def drop_privileges(uid):
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def fork_spare():
    """Forks a spare: with the pidns layer as init of a new pid namespace, so that everything
    the run starts dies with it. A raw clone(CLONE_NEWPID): os.fork cannot make one per child.
    The server is single-threaded and holds no lock here, so skipping os.fork's hooks is safe."""
    if not LAYERS["pidns"]:
        return os.fork()
    pid = LIBC.syscall(SYS_CLONE, CLONE_NEWPID | signal.SIGCHLD, 0, 0, 0, 0)
    if pid < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, "clone(CLONE_NEWPID): " + os.strerror(errno))
    return pid


def probe_pidns():
    if SYS_CLONE is None:
        return False
    pid = LIBC.syscall(SYS_CLONE, CLONE_NEWPID | signal.SIGCHLD, 0, 0, 0, 0)
    if pid == 0:
        os._exit(0 if os.getpid() == 1 else 1)
    if pid < 0:
        return False
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def mount(source, target, fstype, flags, data):
    if LIBC.mount(source, target, fstype, flags, data) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, "mount %s: %s" % (target.decode(), os.strerror(errno)))


def private_mounts(uid, with_proc, new_root):
    """A mount namespace with a fresh size-limited /tmp (the run's cwd) and /dev/shm, and,
    inside a pid namespace, a /proc that shows only the run's own processes. With `new_root`,
    the run is then chrooted into a root that shows only system and interpreter dirs."""
    unshare(CLONE_NEWNS)
    mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None)
    size = ("size=%d,nr_inodes=%d,mode=0700,uid=%d,gid=%d" % (
        FILE_SIZE_LIMIT + (1 << 20), MAX_INODES, uid, uid)).encode()
    flags = MS_NOSUID | MS_NODEV
    if new_root:
        build_root(new_root, size, with_proc)
        return
    mount(b"tmpfs", b"/tmp", b"tmpfs", flags, size)
    if os.path.isdir("/dev/shm"):
        mount(b"tmpfs", b"/dev/shm", b"tmpfs", flags, size)
    if with_proc:
        mount(b"proc", b"/proc", b"proc", flags | MS_NOEXEC, None)


def root_entries():
    """What a run's root shows, read-only: system dirs and the interpreter's own dirs.
    Returns (path, symlink target or None), outermost dirs only."""
    entries = {}
    for path in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"):
        if os.path.islink(path):
            entries[path] = os.readlink(path)
        elif os.path.isdir(path):
            entries[path] = None
    own = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
           os.path.dirname(os.path.realpath(sys.executable)), *sys.path]
    for path in own:
        if path and os.path.isdir(path):
            entries.setdefault(os.path.realpath(path), None)
    dirs = sorted(p for p, link in entries.items() if link is None)
    kept = {}
    for path in dirs:
        if not any(path.startswith(parent + "/") for parent in kept):
            kept[path] = None
    kept.update({p: link for p, link in entries.items() if link is not None})
    return sorted(kept.items())


ROOT_ENTRIES = root_entries()


def build_root(new_root, tmp_options, with_proc):
    root = new_root.encode()
    mount(b"tmpfs", root, b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,nr_inodes=1024,mode=0755")
    os.umask(0o022)
    for path, link in ROOT_ENTRIES:
        target = new_root + path
        if link is not None:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.symlink(link, target)
            continue
        os.makedirs(target, exist_ok=True)
        mount(path.encode(), target.encode(), None, MS_BIND | MS_REC, None)
        mount(None, target.encode(), None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID, None)
    dev = new_root + "/dev"
    os.mkdir(dev)
    mount(b"tmpfs", dev.encode(), b"tmpfs", MS_NOSUID | MS_NOEXEC, b"size=64k,mode=0755")
    for name in ("null", "zero", "full", "random", "urandom"):
        if os.path.exists("/dev/" + name):
            open(dev + "/" + name, "w").close()
            mount(("/dev/" + name).encode(), (dev + "/" + name).encode(), None, MS_BIND, None)
    for name, fd in (("stdin", 0), ("stdout", 1), ("stderr", 2)):
        os.symlink("/proc/self/fd/%d" % fd, dev + "/" + name)
    os.symlink("/proc/self/fd", dev + "/fd")
    os.mkdir(dev + "/shm")
    mount(b"tmpfs", (dev + "/shm").encode(), b"tmpfs", MS_NOSUID | MS_NODEV, tmp_options)
    os.mkdir(new_root + "/tmp")
    mount(b"tmpfs", (new_root + "/tmp").encode(), b"tmpfs", MS_NOSUID | MS_NODEV, tmp_options)
    if with_proc:
        os.mkdir(new_root + "/proc")
        mount(b"proc", (new_root + "/proc").encode(), b"proc",
              MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None)
    os.chroot(new_root)
    os.chdir("/")


def probe_mountns():
    private_mounts(0, False, None)
    return os.listdir("/tmp") == []


def probe_rootfs():
    private_mounts(0, False, BASE_DIR)
    expected = {"dev", "tmp", "proc"} | {path.split("/")[1] for path, _ in ROOT_ENTRIES}
    names = set(os.listdir("/"))
    return "usr" in names and "tmp" in names and names <= expected


def probe_seccomp():
    import socket
    install_seccomp()
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
    except PermissionError:
        return True
    return False


def probe_unreadable_paths():
    """sys.path entries the sandbox uid cannot read (e.g. a python under /root)."""
    candidates = [p for p in sys.path if os.path.isdir(p)]
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            drop_privileges(UID_BASE + MAX_SLOTS)
            bad = [p for p in candidates if not os.access(p, os.R_OK | os.X_OK)]
            os.write(write_fd, json.dumps(bad).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    data = b""
    while chunk := os.read(read_fd, READ_CHUNK):
        data += chunk
    os.close(read_fd)
    os.waitpid(pid, 0)
    return json.loads(data or b"[]")


def probe():
    if IS_ROOT:
        if "netns" not in LAYERS_OFF:
            try:
                unshare(CLONE_NEWNET)
                LAYERS["netns"] = True
            except OSError:
                pass
        LAYERS["uid"] = "uid" not in LAYERS_OFF
        LAYERS["pidns"] = "pidns" not in LAYERS_OFF and probe_pidns()
        if LAYERS["uid"]:
            for path in probe_unreadable_paths():
                PATH_FDS[path] = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        LAYERS["mountns"] = "mountns" not in LAYERS_OFF and probe_child(probe_mountns)
        LAYERS["rootfs"] = (LAYERS["mountns"] and LAYERS["pidns"] and "rootfs" not in LAYERS_OFF
                            and probe_child(probe_rootfs))
        if "cgroup" not in LAYERS_OFF:
            try:
                LAYERS["cgroup"] = cgroup_setup()
            except OSError:
                LAYERS["cgroup"] = False
    global SECCOMP
    # Abstract AF_UNIX sockets are per network namespace: allowed only inside our own.
    SECCOMP = seccomp_program(allow_unix=LAYERS["netns"])
    LAYERS["seccomp"] = "seccomp" not in LAYERS_OFF and probe_child(probe_seccomp)


CGROUP_BASES = {}  # controller -> this server's cgroup dir (cgroup v1: memory, pids)
RUN_MEMORY_LIMIT = MEMORY_LIMIT + FILE_SIZE_LIMIT  # the whole run: processes and its tmpfs


def cgroup_setup():
    """Per-slot cgroups under this server's own (so container limits still apply): the memory
    and process count of a run's whole process tree are capped, not just per process."""
    own = {}
    with open("/proc/self/cgroup") as lines:
        for line in lines:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(","):
                own[controller] = path
    for controller in ("memory", "pids"):
        root = "/sys/fs/cgroup/" + controller
        if controller not in own or not os.path.isfile(root + "/cgroup.procs"):
            return False
        # Named like this server's run dir: unique even across pid namespaces sharing a cgroup.
        base = root + own[controller].rstrip("/") + "/" + os.path.basename(BASE_DIR)
        if not os.path.isdir(base):
            os.mkdir(base)
        CGROUP_BASES[controller] = base
    slot_cgroup(0)
    return True


def slot_cgroup(slot):
    """Creates the slot's cgroups once (they are reused by every run of the slot)."""
    for controller, base in CGROUP_BASES.items():
        path = "%s/s%d" % (base, slot)
        if os.path.isdir(path):
            continue
        os.mkdir(path)
        if controller == "memory":
            write_file(path + "/memory.limit_in_bytes", str(RUN_MEMORY_LIMIT))
        else:
            write_file(path + "/pids.max", str(MAX_PROCS))


def write_file(path, text):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def join_cgroups(slot):
    for base in CGROUP_BASES.values():
        write_file("%s/s%d/cgroup.procs" % (base, slot), "0")


def oom_kills(slot):
    """How many processes the kernel killed for memory in the slot's cgroup so far."""
    base = CGROUP_BASES.get("memory")
    if not base:
        return 0
    try:
        with open("%s/s%d/memory.oom_control" % (base, slot)) as control:
            for line in control:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def remove_cgroups(base):
    if not os.path.isdir(base):
        return
    for name in os.listdir(base):
        if name.startswith("s") and name[1:].isdigit():
            try:
                os.rmdir(os.path.join(base, name))
            except OSError:
                pass
    try:
        os.rmdir(base)
    except OSError:
        pass


def remap_paths():
    """Points unreadable import paths at inherited directory fds (/proc/self/fd/N)."""
    if not PATH_FDS or LAYERS["rootfs"]:
        return

    def remap(path):
        for prefix, fd in PATH_FDS.items():
            if path == prefix or path.startswith(prefix + "/"):
                return "/proc/self/fd/%d%s" % (fd, path[len(prefix):])
        return path

    sys.path[:] = [remap(p) for p in sys.path]
    sys.path_importer_cache.clear()
    for module in list(sys.modules.values()):
        search = getattr(module, "__path__", None)
        if isinstance(search, list):
            search[:] = [remap(p) for p in search]


# ---------------------------------------------------------------- the runner (child side)

class Result:
    explicit = None


def to_json_text(value):
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except Exception:
        try:
            return repr(value)
        except Exception:
            return "<unrepresentable %s>" % type(value).__name__


def return_val(value):
    """Sets the run's return value: a string verbatim, anything else as JSON."""
    Result.explicit = value if isinstance(value, str) else to_json_text(value)


def user_traceback(exc):
    """Formats `exc` without the frames of this program."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != USER_FILE:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def compile_user(code):
    """Module code plus, when the last statement is an expression, its code to evaluate."""
    tree = compile(code, USER_FILE, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    body = compile(tree, USER_FILE, "exec", dont_inherit=True)
    flags = body.co_flags & 0x3FFFE000  # keep the module's __future__ features
    tail = compile(last, USER_FILE, "eval", flags, dont_inherit=True) if last else None
    return body, tail


def exit_code_of(exc):
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return int(code)
    try:
        sys.stderr.write(str(code) + "\n")
    except Exception:
        pass
    return 1


def finish_threads():
    threading = sys.modules.get("threading")
    if threading is not None:
        try:
            threading._shutdown()
        except BaseException:
            pass
    try:
        import atexit
        atexit._run_exitfuncs()
    except BaseException:
        pass


def execute(job, result_fd):
    """Runs the user code as __main__ and reports what it did; never returns."""
    kind, exit_code, returned = "ok", 0, None
    try:
        source = job["code"]
        linecache.cache[USER_FILE] = (len(source), None, source.splitlines(True), USER_FILE)
        module = types.ModuleType("__main__")
        namespace = module.__dict__
        namespace["__builtins__"] = __builtins__
        namespace["input"] = json.loads(job["input"]) if job.get("input") is not None else None
        namespace["return_val"] = return_val
        sys.modules["__main__"] = module
        try:
            body, tail = compile_user(source)
        except (SyntaxError, ValueError) as exc:  # ValueError: null bytes in the source
            sys.stderr.write("".join(traceback.format_exception_only(type(exc), exc)))
            kind, exit_code = "error", 1
        else:
            try:
                exec(body, namespace)
                if tail is not None:
                    value = eval(tail, namespace)
                    if value is not None:
                        returned = to_json_text(value)
                finish_threads()
            except SystemExit as exc:
                exit_code = exit_code_of(exc)
                kind = "ok" if exit_code == 0 else "exit"
            except MemoryError as exc:
                kind, exit_code = "memory", 1
                try:
                    sys.stderr.write(user_traceback(exc))
                except BaseException:
                    pass
            except BaseException as exc:
                kind, exit_code = "error", 1
                try:
                    sys.stderr.write(user_traceback(exc))
                except MemoryError:
                    kind = "memory"
                except BaseException:
                    pass
    except MemoryError:
        kind, exit_code = "memory", 1
    report = {"kind": kind, "exit_code": exit_code, "explicit": Result.explicit,
              "returned": returned}
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    try:
        os.write(result_fd, b"\n" + json.dumps(report).encode("utf-8", "surrogatepass") + b"\n")
    except BaseException:
        pass
    # Closing the channels lets the server answer before this process is torn down.
    for fd in (result_fd, 1, 2):
        try:
            os.close(fd)
        except OSError:
            pass
    if job["tmpdir"]:
        try:  # after the answer, off its path
            os.rmdir(job["tmpdir"])
        except OSError:
            shutil.rmtree(job["tmpdir"], ignore_errors=True)
    os._exit(exit_code & 0xFF)


def set_limits():
    """Address space, file size, open files, core dumps and (as root) processes; a lower CPU
    priority, so a busy run cannot starve the server that must stop it, nor the service."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, RUN_NICENESS)
    except OSError:
        pass
    limits = [
        (resource.RLIMIT_AS, MEMORY_LIMIT),
        (resource.RLIMIT_FSIZE, FILE_SIZE_LIMIT),
        (resource.RLIMIT_NOFILE, MAX_FILES),
        (resource.RLIMIT_CORE, 0),
    ]
    if IS_ROOT:
        limits.append((resource.RLIMIT_NPROC, MAX_PROCS))
    for which, value in limits:
        resource.setrlimit(which, (value, value))


# The runner's stdio, made before forking (on fds 0-2 as they will be in the child) so the
# runner does not pay for building them.
CHILD_STDIO = (
    io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8"),
    io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8",
                     errors="backslashreplace"),
    io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8",
                     errors="backslashreplace", line_buffering=True),
)


def stop_on_signal(signum, frame):
    """The server's timeout (STOP_SIGNAL): output still in Python's buffers (print without
    flush, stderr without a newline) would die with a SIGKILL, so it is written out first, then
    the process ends as by the signal. Code stuck in C or blocking the signal never gets here:
    SIGKILL follows STOP_GRACE later anyway."""
    for stream in (sys.stdout, sys.stderr, *CHILD_STDIO[1:]):
        try:
            stream.flush()
        except BaseException:
            pass
    try:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    finally:
        os._exit(128 + signum)  # the init of a pid namespace ignores its own default signals


def read_exactly(fd, size):
    data = bytearray()
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def runner(uid, tmpdir, job_fd, result_fd):
    """The sandboxed process: drops privileges, waits for its job, runs it."""
    if LAYERS["mountns"]:
        private_mounts(uid, LAYERS["pidns"], BASE_DIR if LAYERS["rootfs"] else None)
        tmpdir = "/tmp"
    set_limits()
    if LAYERS["uid"]:
        drop_privileges(uid)
    os.chdir(tmpdir)
    os.environ.clear()
    if LAYERS["seccomp"]:
        install_seccomp()
    remap_paths()
    sys.stdin, sys.stdout, sys.stderr = CHILD_STDIO
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = CHILD_STDIO
    signal.signal(STOP_SIGNAL, stop_on_signal)  # before the job: nothing for the run to pay
    sys.argv = [USER_FILE]
    reseed()
    header = read_exactly(job_fd, 8)
    if len(header) < 8:
        os._exit(0)  # the server retired this spare
    job = json.loads(read_exactly(job_fd, int.from_bytes(header, "big")))
    job["tmpdir"] = None if LAYERS["mountns"] else tmpdir  # a private tmpfs goes by itself
    os.close(job_fd)
    cpu = max(1, -(-job["timeout_ms"] // 1000) + 1)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    execute(job, result_fd)


def reseed():
    """Spares are cloned without os.fork's hooks, which reseed `random` in a child: without
    this, every run would draw the same numbers, and one tenant could predict another's."""
    module = sys.modules.get("random")
    if module is not None:
        module.seed()


def close_all_but(keep):
    low = 3
    for fd in sorted(keep):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def spare_main(slot, tmpdir, fds):
    """A spare, right after the fork: its own session, fresh stdio, none of the server's fds."""
    job_r, res_w, out_w, err_w = fds
    if LAYERS["cgroup"]:
        join_cgroups(slot)
    os.setsid()
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    # Under rootfs the interpreter's dirs are mounted inside; a dir fd from outside the
    # chroot would be a way out of it.
    path_fds = () if LAYERS["rootfs"] else PATH_FDS.values()
    close_all_but({job_r, res_w, *path_fds})
    runner(UID_BASE + slot, tmpdir, job_r, res_w)


# ---------------------------------------------------------------- the server loop

class Spare:
    def __init__(self, sid, slot, pid, pidfd, tmpdir, job_w, res_r, out_r, err_r):
        self.sid, self.slot, self.pid, self.pidfd, self.tmpdir = sid, slot, pid, pidfd, tmpdir
        self.job_w = job_w
        self.roles = {res_r: "res", out_r: "out", err_r: "err"}
        self.bufs = {"res": bytearray(), "out": bytearray(), "err": bytearray()}
        self.status = None  # wait status once reaped
        self.running = False
        self.timeout_ms = 0
        self.deadline = None
        self.started = 0.0
        self.timed_out = False
        self.over_output = False
        self.killed = False
        self.drain_deadline = None
        self.answered = False


class Validation:
    def __init__(self, vid, pid, pidfd, res_r):
        self.vid, self.pid, self.pidfd, self.res_r = vid, pid, pidfd, res_r
        self.data = bytearray()
        self.status = None


POLL = select.poll()
FDS = {}  # fd -> owner (Spare, Validation, or "stdin")
SPARES = {}
CHILDREN = {}  # pid -> Spare or Validation
SPARE_QUEUE = []  # spares asked for, forked only when nothing else is waiting
FREE_SLOTS = list(range(MAX_SLOTS - 1, -1, -1))
BASE_DIR = None


def watch(fd, owner):
    FDS[fd] = owner
    POLL.register(fd, select.POLLIN)


def unwatch(fd):
    if FDS.pop(fd, None) is not None:
        POLL.unregister(fd)
    try:
        os.close(fd)
    except OSError:
        pass


def make_spare(sid):
    if not FREE_SLOTS:
        send({"ev": "spare_failed", "id": sid, "error": "no free sandbox slot"})
        return
    slot = FREE_SLOTS.pop()
    ooms = 0
    if LAYERS["cgroup"]:
        try:
            slot_cgroup(slot)
            ooms = oom_kills(slot)
        except OSError as exc:
            FREE_SLOTS.append(slot)
            send({"ev": "spare_failed", "id": sid, "error": "cgroup: %s" % exc})
            return
    tmpdir = None if LAYERS["mountns"] else os.path.join(BASE_DIR, "r%d" % sid)
    pipes = []
    try:
        if tmpdir:
            os.mkdir(tmpdir, 0o700)
            if LAYERS["uid"]:
                os.chown(tmpdir, UID_BASE + slot, UID_BASE + slot)
        pipes = [os.pipe() for _ in range(4)]
        pid = fork_spare()
    except OSError as exc:
        FREE_SLOTS.append(slot)
        for r, w in pipes:
            os.close(r)
            os.close(w)
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
        send({"ev": "spare_failed", "id": sid, "error": str(exc)})
        return
    (job_r, job_w), (res_r, res_w), (out_r, out_w), (err_r, err_w) = pipes
    if pid == 0:
        try:
            spare_main(slot, tmpdir, (job_r, res_w, out_w, err_w))
        finally:
            os._exit(71)
    for fd in (job_r, res_w, out_w, err_w):
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    spare = Spare(sid, slot, pid, pidfd, tmpdir, job_w, res_r, out_r, err_r)
    spare.ooms = ooms
    SPARES[sid] = spare
    CHILDREN[pid] = spare
    watch(pidfd, spare)
    for fd in (res_r, out_r, err_r):
        watch(fd, spare)
    os.set_blocking(job_w, True)
    for fd in (res_r, out_r, err_r):
        os.set_blocking(fd, False)
    send({"ev": "spare", "id": sid, "pid": pid})


def kill_group(spare, sig=signal.SIGKILL):
    try:
        os.killpg(spare.pid, sig)
    except OSError:
        pass


def start_run(request):
    sid = request["id"]
    spare = SPARES.get(sid)
    if spare is None or spare.running or spare.status is not None:
        send({"ev": "start_failed", "id": sid, "error": "the sandbox is gone"})
        return
    payload = json.dumps({"code": request["code"], "input": request.get("input"),
                          "timeout_ms": request["timeout_ms"]}).encode("utf-8", "surrogatepass")
    spare.running = True
    spare.timeout_ms = request["timeout_ms"]
    spare.started = time.monotonic()
    spare.deadline = spare.started + request["timeout_ms"] / 1000
    try:
        view = memoryview(len(payload).to_bytes(8, "big") + payload)
        while view:
            view = view[os.write(spare.job_w, view):]
        os.close(spare.job_w)
        spare.job_w = None
    except OSError as exc:
        spare.running = False
        kill_group(spare)
        send({"ev": "start_failed", "id": sid, "error": "the sandbox died before the run: %s" % exc})


def retire(sid):
    spare = SPARES.get(sid)
    if spare is None or spare.running:
        return
    if spare.job_w is not None:
        os.close(spare.job_w)  # EOF: the runner exits without running anything
        spare.job_w = None
    kill_group(spare)


def on_readable(fd, owner):
    """Collects output; past the cap the run is stopped."""
    if isinstance(owner, Validation):
        chunk = os.read(fd, READ_CHUNK)
        if chunk:
            owner.data += chunk
        else:
            unwatch(fd)
            owner.res_r = None
            maybe_finish_validation(owner)
        return
    spare = owner
    state = read_chunk(spare, fd)
    if state == "eof":
        unwatch(fd)
        spare.roles.pop(fd, None)
        progress(spare)
    if spare.killed and not spare.answered:
        answer_now(spare)


def read_chunk(spare, fd):
    """Reads what `fd` holds now: "data", "wait" (nothing yet) or "eof"."""
    try:
        chunk = os.read(fd, READ_CHUNK)
    except BlockingIOError:
        return "wait"
    except OSError:
        return "eof"
    if not chunk:
        return "eof"
    role = spare.roles[fd]
    buffer = spare.bufs[role]
    limit = MAX_OUTPUT if role != "res" else 4 * MAX_OUTPUT + 65536
    room = limit - len(buffer)
    if len(chunk) > room:
        buffer += chunk[:max(room, 0)]
        spare.over_output = True
        spare.killed = True
        kill_group(spare)
    else:
        buffer += chunk
    return "data"


def answer_now(spare):
    """Answers a killed run at once with what it wrote so far: the death of a fork bomb's
    processes can take longer than the answer may wait."""
    for fd in list(spare.roles):
        while True:
            state = read_chunk(spare, fd)
            if state == "eof":
                unwatch(fd)
                spare.roles.pop(fd, None)
            if state != "data":
                break
    if not spare.answered and spare.running:
        spare.answered = True
        send(outcome(spare, None))
    progress(spare)


def reap():
    """Reaps every exited child: ours by pid, and orphans adopted as subreaper."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        owner = CHILDREN.pop(pid, None)
        if isinstance(owner, Sweeper):
            unwatch(owner.pidfd)
            FREE_SLOTS.append(owner.slot)
            continue
        if owner is None or owner == "cleaner":
            continue
        owner.status = status
        unwatch(owner.pidfd)
        if isinstance(owner, Validation):
            maybe_finish_validation(owner)
            continue
        kill_group(owner)  # anything the run left behind in its group
        owner.drain_deadline = time.monotonic() + 0.05
        progress(owner)


def progress(spare, force=False):
    """Answers the run once its streams are closed, and releases the spare once reaped."""
    if force:
        for fd in list(spare.roles):
            unwatch(fd)
        spare.roles.clear()
    if not spare.answered:
        if not spare.running:
            if spare.status is not None:
                spare.answered = True
                send({"ev": "gone", "id": spare.sid})
        elif not spare.roles:
            report = parse_report(spare)
            if report is not None or spare.status is not None:
                spare.answered = True
                send(outcome(spare, report))
    if spare.status is not None and not spare.roles:
        release(spare)


def release(spare):
    if spare.job_w is not None:
        os.close(spare.job_w)
        spare.job_w = None
    if spare.tmpdir:
        try:
            os.rmdir(spare.tmpdir)
        except FileNotFoundError:
            pass
        except OSError:
            remove_in_background(spare.tmpdir)
    if SPARES.pop(spare.sid, None) is None:
        return
    if LAYERS["uid"] and not LAYERS["pidns"]:
        sweep_uid(spare.slot)  # frees the slot once every process of its uid is gone
    else:
        FREE_SLOTS.append(spare.slot)


class Sweeper:
    def __init__(self, slot, pid):
        self.slot = slot
        self.pidfd = os.pidfd_open(pid)


def sweep_uid(slot):
    """Without a pid namespace, processes that left the run's group are found by uid: a child
    takes that uid and kills everything it may signal, which is exactly that uid's processes."""
    try:
        pid = os.fork()
    except OSError:
        FREE_SLOTS.append(slot)
        return
    if pid == 0:
        try:
            close_all_but(set())
            os.close(0)
            os.close(1)
            drop_privileges(UID_BASE + slot)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    sweeper = Sweeper(slot, pid)
    CHILDREN[pid] = sweeper
    watch(sweeper.pidfd, sweeper)


def remove_in_background(path):
    """Removes a run's leftover files in a child, so a million files cannot stall the server."""
    try:
        pid = os.fork()
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
        return
    if pid == 0:
        try:
            close_all_but(set())
            os.close(0)
            os.close(1)
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os._exit(0)
    CHILDREN[pid] = "cleaner"


def parse_report(spare):
    text = bytes(spare.bufs["res"]).decode("utf-8", "replace")
    for line in reversed(text.split("\n")):
        if line.startswith("{"):
            try:
                report = json.loads(line)
            except ValueError:
                continue
            if isinstance(report, dict):
                return report
    return None


def decode(buffer):
    return bytes(buffer).decode("utf-8", "replace")


def outcome(spare, report):
    stdout, stderr = spare.bufs["out"], spare.bufs["err"]
    status = spare.status if report is None else None
    elapsed = time.monotonic() - spare.started
    event = {"ev": "done", "id": spare.sid, "duration_ms": int(elapsed * 1000),
             "server_us": int(elapsed * 1e6),
             "truncated": spare.over_output, "explicit": None, "returned": None}
    if report is not None:
        explicit = report.get("explicit")
        returned = report.get("returned")
        event["explicit"] = explicit if isinstance(explicit, str) else None
        event["returned"] = returned if isinstance(returned, str) else None
    # A return value is output too: past the cap it is dropped, as in JS.
    oversized = any(
        value is not None and len(value.encode("utf-8", "surrogatepass")) > MAX_OUTPUT
        for value in (event["explicit"], event["returned"]))
    if oversized:
        event.update(explicit=None, returned=None, truncated=True)
    signaled = status is not None and os.WIFSIGNALED(status)
    sig = os.WTERMSIG(status) if signaled else 0
    if status is not None:
        code = 128 + sig if signaled else os.WEXITSTATUS(status)
    else:
        code = 128 + signal.SIGKILL if spare.killed else 1
    err_text = decode(stderr)
    if spare.timed_out:
        event.update(status="timeout", exit_code=128 + signal.SIGKILL,
                     error="execution timed out after %d ms" % spare.timeout_ms)
    elif spare.over_output or oversized:
        event.update(status="output_limit", exit_code=code,
                     error="output limit of %d bytes exceeded" % MAX_OUTPUT)
    elif signaled:
        if sig == signal.SIGXCPU:
            event.update(status="timeout", exit_code=code, error="cpu time limit exceeded")
        elif (sig == signal.SIGKILL and oom_kills(spare.slot) > spare.ooms) or (
                sig == signal.SIGABRT and (
                    "MemoryError" in err_text or "Cannot allocate memory" in err_text)):
            event.update(status="memory_limit", exit_code=code,
                         error="memory limit of %d MiB exceeded" % (MEMORY_LIMIT >> 20))
        else:
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = str(sig)
            event.update(status="crashed", exit_code=code,
                         error="the sandbox process died from signal %s" % name)
    elif report is not None and report.get("kind") == "memory":
        event.update(status="memory_limit", exit_code=1,
                     error="memory limit of %d MiB exceeded" % (MEMORY_LIMIT >> 20))
    else:
        if report is not None and isinstance(report.get("exit_code"), int):
            code = report["exit_code"]
        event.update(status="success" if code == 0 else "error", exit_code=code)
    event["stdout"] = decode(stdout)
    event["stderr"] = err_text
    return event


def validation_child(code, write_fd):
    """Parses untrusted code: nothing runs, but the parser still gets no privileges."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    os.setpriority(os.PRIO_PROCESS, 0, RUN_NICENESS)
    if LAYERS["uid"]:
        drop_privileges(UID_BASE + MAX_SLOTS)
    if LAYERS["seccomp"]:
        install_seccomp()
    result = {"ok": True}
    try:
        compile(code, USER_FILE, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
    except SyntaxError as exc:
        line = exc.lineno or 1
        column = exc.offset or 1
        result = {"ok": False, "message": "%s: %s" % (type(exc).__name__, exc.msg),
                  "line": max(1, line), "column": max(1, column)}
    except (ValueError, MemoryError, RecursionError) as exc:
        result = {"ok": False, "message": "%s: %s" % (type(exc).__name__, exc),
                  "line": 1, "column": 1}
    os.write(write_fd, json.dumps(result).encode())


def start_validation(request):
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            close_all_but({write_fd})
            os.close(0)
            os.close(1)
            validation_child(request["code"], write_fd)
        finally:
            os._exit(0)
    os.close(write_fd)
    owner = Validation(request["id"], pid, os.pidfd_open(pid), read_fd)
    CHILDREN[pid] = owner
    watch(owner.pidfd, owner)
    watch(read_fd, owner)


def maybe_finish_validation(owner):
    if owner.status is None or owner.res_r is not None:
        return
    try:
        result = json.loads(bytes(owner.data))
    except ValueError:
        result = {"ok": False, "message": "the syntax check failed: the parser crashed",
                  "line": 1, "column": 1}
    result.update(ev="valid", id=owner.vid)
    send(result)


def handle(request):
    op = request.get("op")
    if op == "run":
        start_run(request)
    elif op == "spare":
        SPARE_QUEUE.append(request["id"])
    elif op == "retire":
        retire(request["id"])
    elif op == "validate":
        start_validation(request)
    elif op == "ping":
        send({"ev": "pong", "id": request.get("id")})


def check_deadlines():
    now = time.monotonic()
    nearest = None
    for spare in list(SPARES.values()):
        if spare.running and spare.deadline is not None and not spare.killed:
            if now >= spare.deadline and not spare.timed_out:
                # First the stop signal, so the run writes out its buffered output.
                spare.timed_out = True
                spare.deadline = now + STOP_GRACE
                if spare.status is None:
                    kill_group(spare, STOP_SIGNAL)
            if now >= spare.deadline:
                # The grace is over, whatever the run does with the signal: answer now.
                spare.killed = True
                if spare.status is None:
                    kill_group(spare)
                answer_now(spare)
            elif nearest is None or spare.deadline < nearest:
                nearest = spare.deadline
        if spare.drain_deadline is not None:
            if now >= spare.drain_deadline:
                progress(spare, force=True)
            elif nearest is None or spare.drain_deadline < nearest:
                nearest = spare.drain_deadline
    if nearest is None:
        return -1
    return max(0, int((nearest - now) * 1000) + 1)


def serve():
    pending = b""
    os.set_blocking(0, False)
    watch(0, "stdin")
    while True:
        timeout = check_deadlines()
        events = POLL.poll(0 if SPARE_QUEUE else timeout)
        if not events and SPARE_QUEUE:
            # Forking competes with running code for the cores: do it only when idle.
            make_spare(SPARE_QUEUE.pop(0))
            continue
        for fd, _ in events:
            owner = FDS.get(fd)
            if owner is None:
                continue
            if owner == "stdin":
                try:
                    chunk = os.read(0, READ_CHUNK)
                except BlockingIOError:
                    continue
                if not chunk:
                    return
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if line.strip():
                        handle(json.loads(line))
            elif fd == getattr(owner, "pidfd", None):
                reap()
            else:
                on_readable(fd, owner)


def shutdown():
    for spare in list(SPARES.values()):
        kill_group(spare)
    for spare in list(SPARES.values()):
        try:
            os.waitpid(spare.pid, 0)
        except ChildProcessError:
            pass
    if BASE_DIR:
        shutil.rmtree(BASE_DIR, ignore_errors=True)
    for base in CGROUP_BASES.values():
        remove_cgroups(base)


def remove_stale_dirs():
    """Removes the run dirs of fork servers that were killed before they could clean up. A dir
    is stale when no process holds its lock: pids alone cannot tell, since a live server in
    another pid namespace may share this /tmp."""
    root = CONFIG["tmp_root"]
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if not name.startswith("faas-python-") or path == BASE_DIR:
            continue
        try:
            fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue  # no lock yet (a server starting up) or not ours
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            remove_in_background(path)
        except OSError:
            pass  # held: a live server
        finally:
            os.close(fd)


# Modules the platform's evaluator programs import on every run. Loaded once here, each run
# inherits them instead of importing them again (~100 ms per run on a loaded host). They
# hold no secret; the one random state loaded here is reseeded in every spare.
PRELOADED = ("asyncio", "dataclasses", "typing")


def preload():
    for name in PRELOADED:
        try:
            __import__(name)
        except Exception:
            pass


def main():
    global BASE_DIR
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    if IS_ROOT:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, SERVER_NICENESS)  # it must be able to stop runs
        except PermissionError:
            pass  # without CAP_SYS_NICE (a container's default) runs still get RUN_NICENESS
    LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans outside a pid namespace come here
    # Run dirs without mountns, the mount point of the runs' roots with rootfs.
    BASE_DIR = os.path.join(CONFIG["tmp_root"],
                            "faas-python-%d-%s" % (os.getpid(), os.urandom(4).hex()))
    os.mkdir(BASE_DIR, 0o711)
    os.chmod(BASE_DIR, 0o711)  # runners reach their own dir, cannot list the others
    # Held for the server's life: tells other servers sharing /tmp that this dir is live.
    lock_fd = os.open(os.path.join(BASE_DIR, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                      0o600)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    probe()
    remove_stale_dirs()
    preload()
    gc.collect()
    gc.freeze()
    # The host removes the cgroups once this server is gone, however it ends: a neighbour cannot
    # tell a dead server's empty cgroups from a live one's idle slots.
    send({"ev": "ready", "version": sys.version.split()[0], "isolation": LAYERS,
          "cgroups": list(CGROUP_BASES.values()),
          "executable": sys.executable})
    try:
        serve()
    finally:
        shutdown()


main()
