"""The jail: which layers this host allows (probed once) and how a sandbox process enters them.

`Jail.enter(slot)` runs in a freshly cloned child and puts it into every active layer but the
last ones a sandbox applies itself (identity and seccomp: `Jail.confine(slot)`), so a Python
zygote can enter its slot once and still give each run a fresh /tmp, /proc and pid namespace.

The minimal root is built once, in a template mount namespace: a sandbox joins it and takes a
private copy with a fresh /tmp and /proc. Building the root per process (two dozen mounts, and
copying then detaching every mount of the host) cost each spawn more than the rest of its jail.
"""

import os
import socket

from faas_jail import layers, seccomp
from faas_jail.slots import Cgroups, NetnsPool, claim_uid_range

LAYER_NAMES = ("uid", "pidns", "mountns", "rootfs", "ipcns", "utsns", "netns", "cgroup",
               "cgroupns", "seccomp", "no_new_privs", "rlimits", "clean_env")


class Slot:
    """One slot: its number, uid, cgroup dirs and network namespace descriptor."""

    def __init__(self, number, uid, cgroup_dirs, netns_fd):
        self.number = number
        self.uid = uid
        self.cgroup_dirs = cgroup_dirs
        self.netns_fd = netns_fd


class Jail:
    """The layers of one jail instance, as configured by the host and allowed by this host."""

    def __init__(self, config):
        self.config = config
        self.off = set(config.get("layers_off", ()))
        self.is_root = os.geteuid() == 0
        self.layers = dict.fromkeys(LAYER_NAMES, False)
        self.layers["rlimits"] = True
        self.layers["clean_env"] = True
        self.uid_base = None
        self.uid_lock = None
        self.cgroups = None
        self.netns = None
        self.filter = None
        self.root = None
        self.clone_flags = 0
        self.template = None  # descriptor of the template mount namespace, once made
        self.free_slots = list(range(config["max_slots"] - 1, -1, -1))
        self.slots = {}

    # ------------------------------------------------------------------ probing

    def probe(self):
        """Finds the layers this host allows; each is tried in a throwaway child."""
        want = lambda name: name not in self.off  # noqa: E731
        if self.is_root and want("uid"):
            self.uid_base, self.uid_lock = claim_uid_range(self.config["max_slots"] + 1)
            probe_uid = self.uid_base + self.config["max_slots"]
            self.layers["uid"] = _in_child(0, lambda: _uid_probe(probe_uid))
        # Each check runs in a child of its own namespace: the mount check, which mounts, in a
        # new mount namespace only (in any other it would mount in the host's).
        for name, flag, check in (("pidns", layers.CLONE_NEWPID, _pid_one),
                                  ("ipcns", layers.CLONE_NEWIPC, _new_namespace("ipc")),
                                  ("utsns", layers.CLONE_NEWUTS, _hostname_probe),
                                  ("mountns", layers.CLONE_NEWNS, _private_mounts(self))):
            if want(name):
                self.layers[name] = _in_child(flag, check)
        if want("netns"):
            try:
                self.netns = NetnsPool()
                self.netns.make()
                self.layers["netns"] = True
            except OSError:
                self.netns = None
        if want("cgroup") and self.is_root:
            try:
                self.cgroups = Cgroups(self.config["name"], self.config["memory_bytes"],
                                       self.config["max_pids"], self.config["cpu_weight"])
                dirs = self.cgroups.slot_dirs(0)
                self.layers["cgroup"] = _in_child(0, lambda: layers.join_cgroups(dirs) or True)
                if want("cgroupns"):
                    self.layers["cgroupns"] = _in_child(0, lambda: _cgroupns_probe(dirs))
            except OSError:
                self.cgroups = None
        self.root = _make_root(self.config)
        if self.layers["mountns"] and self.layers["pidns"] and want("rootfs"):
            self.layers["rootfs"] = _in_child(layers.CLONE_NEWNS | layers.CLONE_NEWPID,
                                              lambda: _root_probe(self))
        if want("seccomp"):
            # Abstract unix sockets live in a network namespace: without one of their own, a
            # sandbox may make none, unless its host needs it to connect back (a JS runner,
            # whose code cannot make sockets anyway).
            unix = self.layers["netns"] or self.config.get("unix_sockets") is True
            program = seccomp.compile_filter(allow_unix_socket=unix)
            if program is not None:
                self.filter = seccomp.Filter(program)
                self.layers["seccomp"] = _in_child(0, lambda: _seccomp_probe(self.filter))
        self.layers["no_new_privs"] = self.layers["seccomp"] or _in_child(0, _nnp_probe)
        self.clone_flags = sum(flag for name, flag in (
            ("pidns", layers.CLONE_NEWPID), ("ipcns", layers.CLONE_NEWIPC),
            ("utsns", layers.CLONE_NEWUTS), ("mountns", layers.CLONE_NEWNS))
            if self.layers[name])
        if self.layers["rootfs"]:
            try:
                self.template = _make_template(self)
            except OSError:
                self.template = None  # each sandbox builds its root itself, as the probe did
        return self.layers

    def spawn_flags(self, writable=()):
        """Clone flags of a sandbox process: one that joins the template root leaves the host's
        mount namespace uncopied (it takes a copy of the template's instead)."""
        if self.template is not None and not writable:
            return self.clone_flags & ~layers.CLONE_NEWNS
        return self.clone_flags

    # ------------------------------------------------------------------ slots

    def take_slot(self):
        """A free slot with its resources, or None when every slot is taken."""
        if not self.free_slots:
            return None
        number = self.free_slots.pop()
        slot = self.slots.get(number)
        if slot is None:
            uid = self.uid_base + number if self.layers["uid"] else os.geteuid()
            dirs = self.cgroups.slot_dirs(number) if self.layers["cgroup"] else []
            fd = self.netns.take() if self.layers["netns"] else None
            slot = self.slots[number] = Slot(number, uid, dirs, fd)
        return slot

    def give_back(self, slot):
        """Returns a slot whose processes are all gone."""
        self.free_slots.append(slot.number)

    def oom_kills(self, slot):
        """The kernel's count of memory kills in the slot's cgroup so far."""
        return self.cgroups.oom_kills(slot.number) if self.layers["cgroup"] else 0

    def oom_counter(self, slot):
        """A function that reads the slot's memory-kill count, usable after the caller left
        the host's file system (it keeps a descriptor of the counter's file)."""
        if not self.layers["cgroup"]:
            return lambda: 0
        path = self.cgroups.oom_file(slot.number)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

        def read():
            for line in os.pread(fd, 4096, 0).decode().splitlines():
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
            return 0

        return read

    def make_ahead(self):
        """Makes a network namespace ahead when fewer than wanted are ready; True if it did."""
        if self.netns is None or self.netns.ready >= self.config.get("netns_ahead", 2):
            return False
        self.netns.make()
        return True

    # ------------------------------------------------------------------ entering

    def enter(self, slot, writable=()):
        """In a fresh child cloned with `spawn_flags(writable)`: cgroups, cgroup and network
        namespaces, hostname, the minimal root (or a private /tmp without one); `writable` pairs
        of (host path, path in the root) are bound read-write, in a root built for it alone."""
        if self.layers["cgroup"]:
            layers.join_cgroups(slot.cgroup_dirs)
            if self.layers["cgroupns"]:
                layers.unshare(layers.CLONE_NEWCGROUP)
        if self.layers["netns"]:
            layers.setns(slot.netns_fd, layers.CLONE_NEWNET)
        if self.layers["utsns"]:
            layers.set_hostname()
        if self.template is not None and not writable:
            layers.setns(self.template, layers.CLONE_NEWNS)
            layers.unshare(layers.CLONE_NEWNS)
            layers.fresh_tmp(self.tmp_options(slot.uid), with_proc=self.layers["pidns"])
            os.chdir("/")
        elif self.layers["rootfs"]:
            self.root.tmp_options = self.tmp_options(slot.uid)
            self.root.enter(with_proc=self.layers["pidns"], writable=writable)
        elif self.layers["mountns"]:
            layers.fresh_tmp(self.tmp_options(slot.uid), with_proc=self.layers["pidns"])
            os.chdir("/tmp")
        if not self.layers["pidns"]:
            os.setsid()  # without a pid namespace, the process group is the kill boundary

    def let_go(self):
        """In a sandbox process that stays Python (a zygote: it never execs, and its exec would
        close them): closes the descriptors of the template root and of every slot's network
        namespace, which only the jailer needs."""
        fds = [slot.netns_fd for slot in self.slots.values() if slot.netns_fd is not None]
        fds += self.netns.descriptors() if self.netns is not None else []
        fds += [self.template] if self.template is not None else []
        for fd in fds:
            os.close(fd)
        self.template = None

    def private_tmp(self):
        """Whether a sandbox gets a /tmp of its own."""
        return self.layers["rootfs"] or self.layers["mountns"]

    def confine(self, slot, limits, keep_uid=False):
        """The last layers, applied by the sandbox process itself: rlimits, its uid (unless
        `keep_uid`: the host's own trusted programs) and the seccomp filter (with
        no_new_privs)."""
        self.confiner(slot, limits, keep_uid)()

    def confiner(self, slot, limits, keep_uid=False):
        """`confine` made ready once, for a process that forks a child per run to call."""
        apply_limits = layers.Limits(limits)
        uid = slot.uid if self.layers["uid"] and not keep_uid else None
        install = self.filter.install if self.filter is not None else (
            seccomp.no_new_privs if self.layers["no_new_privs"] else None)

        def confine():
            apply_limits()
            if uid is not None:
                layers.drop_identity(uid)
            if install is not None:
                install()

        return confine

    def tmp_options(self, uid):
        """Mount options of a sandbox's private /tmp."""
        return layers.tmpfs_options(self.config["tmp_bytes"], self.config["tmp_inodes"], uid)

    def close(self):
        """Removes the cgroups (once empty); the template root goes with its last user."""
        if self.template is not None:
            os.close(self.template)
            self.template = None
        if self.cgroups is not None:
            self.cgroups.remove()


def connect(path, token):
    """Connects to the host's socket and says who this process is, before any jail layer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.sendall(token.encode() + b"\n")
    return sock


def _interpreter_dirs(exclude):
    """The running interpreter's own dirs (prefix, stdlib, site-packages), outermost only;
    not `exclude` (the jail's own packages, already imported)."""
    import sys
    dirs = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                          sys.base_exec_prefix,
                                          os.path.dirname(os.path.realpath(sys.executable)),
                                          *sys.path) if p and os.path.isdir(p)}
    dirs = {d for d in dirs if not d.startswith(exclude)}
    return sorted(d for d in dirs if not any(d.startswith(o + "/") for o in dirs if o != d))


def _make_root(config):
    binds = []
    for path in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(path):
            binds.append((None, path, os.readlink(path)))
        elif os.path.isdir(path):
            binds.append((path, path, None))
    zygote = config.get("zygote")
    extra = [(path, path) for path in _interpreter_dirs(os.path.realpath(zygote["path"]))] \
        if zygote else []
    for source, target in [*config.get("binds", ()), *extra]:
        if any(target == t or target.startswith(t + "/") for _, t, _ in binds):
            continue  # already visible under a system dir
        binds.append((source, target, None))
    # The loader's cache, the time zone, and Debian's alternatives: libraries such as numpy's
    # BLAS are symlinks through /etc/alternatives. Nothing else of the host's /etc.
    for name in ("ld.so.cache", "localtime", "alternatives"):
        path = "/etc/" + name
        if os.path.exists(path):
            binds.append((os.path.realpath(path), path, None))
    etc = {
        "passwd": b"root:x:0:0:root:/root:/bin/false\nsandbox:x:1000:1000::/tmp:/bin/false\n",
        "group": b"root:x:0:\nsandbox:x:1000:\n",
        "hostname": layers.HOSTNAME + b"\n",
        "hosts": b"127.0.0.1 localhost " + layers.HOSTNAME + b"\n::1 localhost\n",
        "nsswitch.conf": b"passwd: files\ngroup: files\nhosts: files\n",
    }
    return layers.Root(config["mount_point"], binds, etc, None)


def _make_template(jail):
    """The template root: a mount namespace holding the minimal root, built in a child that
    ends once its namespace is held by a descriptor (close-on-exec: no sandbox inherits it past
    its exec)."""
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()
    parent = os.getpid()
    pid = layers.clone(layers.CLONE_NEWNS)
    if pid == 0:
        code = 1
        try:
            layers.helper_child(parent)
            os.close(ready_r)
            os.close(hold_w)
            jail.root.tmp_options = None
            # Its /proc (of the jailer's pid namespace) is never seen: every copy mounts its own
            # over it. It is there because in a user namespace the kernel mounts a new proc
            # only where one is already fully visible.
            jail.root.enter(with_proc=jail.layers["pidns"])
            os.write(ready_w, b"1")
            os.read(hold_r, 1)  # until the jailer holds the namespace
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(hold_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise OSError("the template root could not be built")
        return os.open("/proc/%d/ns/mnt" % pid, os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(hold_w)
        os.waitpid(pid, 0)


def _in_child(flags, check):
    """Runs `check` in a child cloned with `flags`; True when it returned truthy."""
    parent = os.getpid()
    try:
        pid = layers.clone(flags)
    except OSError:
        return False
    if pid == 0:
        code = 1
        try:
            layers.helper_child(parent)
            code = 0 if check() else 1
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _pid_one():
    return os.getpid() == 1


def _new_namespace(kind):
    """A check that the child is in another namespace of `kind` than its parent."""
    parent = os.readlink("/proc/self/ns/" + kind)

    def check():
        return os.readlink("/proc/self/ns/" + kind) != parent

    return check


def _hostname_probe():
    layers.set_hostname()
    return os.uname().nodename == layers.HOSTNAME.decode()


def _uid_probe(uid):
    layers.drop_identity(uid)
    return os.getuid() == uid


def _private_mounts(jail):
    parent = os.readlink("/proc/self/ns/mnt")

    def check():
        if os.readlink("/proc/self/ns/mnt") == parent:
            return False  # never mount in the host's namespace
        layers.mount(None, "/", None, layers.MS_REC | layers.MS_PRIVATE)
        layers.mount("tmpfs", jail.config["mount_point"], "tmpfs", layers.MS_NOSUID, "size=64k")
        return True

    return check


def _cgroupns_probe(dirs):
    layers.join_cgroups(dirs)
    layers.unshare(layers.CLONE_NEWCGROUP)
    with open("/proc/self/cgroup") as lines:
        return all(line.rstrip("\n").endswith(":/") for line in lines)


def _root_probe(jail):
    """The root is entered when `/` is another file system than the host's and holds what a
    sandbox needs and nothing else: the dirs of its binds (an interpreter under /root, say)."""
    host_root = os.stat("/").st_dev
    expected = {"tmp", "proc", "dev", "etc"} | {target.split("/")[1]
                                                 for _, target, _ in jail.root.binds}
    jail.root.tmp_options = jail.tmp_options(0)
    jail.root.enter(with_proc=True)
    names = set(os.listdir("/"))
    return (os.stat("/").st_dev != host_root
            and {"usr", "tmp", "proc", "dev", "etc"} <= names <= expected)


def _seccomp_probe(flt):
    flt.install()
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
    except PermissionError:
        return True
    return False


def _nnp_probe():
    seccomp.no_new_privs()
    return True
