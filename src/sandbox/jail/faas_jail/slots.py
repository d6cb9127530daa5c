"""Slots: what one sandbox process owns while it lives and the next one reuses after it.

A slot is an unprivileged uid, a cgroup per controller (memory that counts heap, ArrayBuffers
and tmpfs pages; a process cap; a CPU weight) and a network namespace with nothing in it.
Concurrent sandboxes never share a slot, so they never share a network namespace (abstract
unix sockets live there) nor a uid. Uid ranges are claimed with a lock file held for the
life of the jailer, so two services on one host never hand out the same uids. Network
namespaces are made ahead (creating one takes a kernel lock: 10-40 ms under load here) and
joined with setns when a slot is first used.
"""

import fcntl
import os

from faas_jail.layers import CLONE_NEWNET, helper_child, unshare

# On a host, sandbox uids start far above any real user's; in a user namespace with a small
# uid map (a container's 65536 uids), they stay inside it, below `nobody` (65534).
HOST_UIDS_START = 1_000_000
HOST_RANGE_SIZE = 65_536
MAPPED_UIDS_START = 10_000
LOCK_DIRS = ("/run/faas-sandbox/uid-ranges", "/tmp/faas-sandbox-uid-ranges")


def mapped_uids():
    """How many uids this process's user namespace maps (all of them on a host)."""
    try:
        with open("/proc/self/uid_map") as lines:
            return max(int(line.split()[0]) + int(line.split()[2]) for line in lines if line.strip())
    except (OSError, ValueError):
        return 1 << 32


def uid_ranges(count, limit):
    """Candidate first uids of ranges of `count` uids below `limit`."""
    if limit >= HOST_UIDS_START + 64 * HOST_RANGE_SIZE:
        if count > HOST_RANGE_SIZE:
            raise ValueError("at most %d slots per jail, got %d" % (HOST_RANGE_SIZE, count))
        return [HOST_UIDS_START + i * HOST_RANGE_SIZE for i in range(512)]
    size = -(-count // 256) * 256
    top = min(limit, 65_534)
    return list(range(MAPPED_UIDS_START, top - size + 1, size))


def claim_uid_range(count):
    """First uid of a free range of at least `count` uids and the lock fd that holds it."""
    candidates = uid_ranges(count, mapped_uids())
    if not candidates:
        raise OSError("the user namespace maps too few uids for %d sandboxes" % count)
    for directory in LOCK_DIRS:
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
        except OSError:
            continue
        for base in candidates:
            path = os.path.join(directory, "%d.lock" % base)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                break  # not writable here (a read-only root): the next dir
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            return base, fd
    raise OSError("no free uid range: every range is locked by another service")


class Cgroups:
    """This jail's cgroup subtree: one dir per slot under the jailer's own cgroup, so the
    limits of a container or a systemd unit around the service still apply."""

    def __init__(self, name, memory_bytes, max_pids, cpu_weight):
        self.memory_bytes = memory_bytes
        self.max_pids = max_pids
        self.cpu_weight = cpu_weight
        self.v2 = os.path.isfile("/sys/fs/cgroup/cgroup.controllers")
        self.bases = self._make_bases(name)  # controller -> base dir

    def _own(self):
        own = {}
        with open("/proc/self/cgroup") as lines:
            for line in lines:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for controller in controllers.split(","):
                    own[controller] = path
        return own

    def _make_bases(self, name):
        own = self._own()
        if self.v2:
            root = "/sys/fs/cgroup" + own.get("", "/").rstrip("/")
            base = root + "/" + name
            _enable_v2_controllers(root)
            os.makedirs(base, exist_ok=True)
            _write(base + "/cgroup.subtree_control", "+memory +pids +cpu")
            return {"unified": base}
        bases = {}
        for controller in ("memory", "pids", "cpu"):
            mount = "/sys/fs/cgroup/" + controller
            if controller not in own or not os.path.isfile(mount + "/cgroup.procs"):
                if controller == "cpu":
                    continue  # a CPU weight is welcome, not required
                raise OSError("cgroup v1 controller %s is not mounted" % controller)
            base = mount + own[controller].rstrip("/") + "/" + name
            os.makedirs(base, exist_ok=True)
            bases[controller] = base
        return bases

    def slot_dirs(self, slot):
        """The slot's cgroup dirs, made with their limits on first use."""
        dirs = []
        for controller, base in self.bases.items():
            path = "%s/s%d" % (base, slot)
            if not os.path.isdir(path):
                os.mkdir(path)
                self._limit(controller, path)
            dirs.append(path)
        return dirs

    def _limit(self, controller, path):
        if controller == "unified":
            _write(path + "/memory.max", str(self.memory_bytes))
            _write(path + "/memory.swap.max", "0", optional=True)
            _write(path + "/pids.max", str(self.max_pids))
            _write(path + "/cpu.weight", str(self.cpu_weight))
        elif controller == "memory":
            _write(path + "/memory.limit_in_bytes", str(self.memory_bytes))
            _write(path + "/memory.memsw.limit_in_bytes", str(self.memory_bytes), optional=True)
        elif controller == "pids":
            _write(path + "/pids.max", str(self.max_pids))
        elif controller == "cpu":
            # cgroup v1 shares: 1024 is a normal process's weight
            _write(path + "/cpu.shares", str(max(2, self.cpu_weight * 1024 // 100)))

    def parents(self):
        """The dirs this jail's cgroup subtrees are made in (one per controller)."""
        return [os.path.dirname(base) for base in self.bases.values()]

    def oom_file(self, slot):
        """The file whose `oom_kill` line counts the slot's memory kills."""
        if self.v2:
            return "%s/s%d/memory.events" % (self.bases["unified"], slot)
        return "%s/s%d/memory.oom_control" % (self.bases["memory"], slot)

    def oom_kills(self, slot):
        """How many processes the kernel killed for memory in the slot so far."""
        try:
            with open(self.oom_file(slot)) as lines:
                for line in lines:
                    if line.startswith("oom_kill "):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def remove(self):
        """Removes every slot dir and the bases (empty ones only: the kernel refuses others)."""
        for base in self.bases.values():
            remove_cgroup(base)


def remove_cgroup(base):
    """Removes a jail's cgroup dir `base` with its slot dirs `s<n>` (empty ones only: the kernel
    refuses others)."""
    if not os.path.isdir(base):
        return
    for entry in os.listdir(base):
        if entry.startswith("s") and entry[1:].isdigit():
            try:
                os.rmdir(os.path.join(base, entry))
            except OSError:
                pass
    try:
        os.rmdir(base)
    except OSError:
        pass


def _write(path, text, optional=False):
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError:
        if optional:
            return
        raise
    try:
        os.write(fd, text.encode())
    except OSError:
        if not optional:
            raise
    finally:
        os.close(fd)


def _enable_v2_controllers(root):
    """Enables memory, pids and cpu for the children of `root`. A cgroup v2 group that holds
    processes cannot have controllers for its children, so its processes move to a leaf."""
    try:
        _write(root + "/cgroup.subtree_control", "+memory +pids +cpu")
        return
    except OSError:
        pass
    leaf = root + "/service"
    os.makedirs(leaf, exist_ok=True)
    with open(root + "/cgroup.procs") as procs:
        pids = [line.strip() for line in procs if line.strip()]
    for pid in pids:
        try:
            _write(leaf + "/cgroup.procs", pid)
        except OSError:
            pass  # gone meanwhile
    _write(root + "/cgroup.subtree_control", "+memory +pids +cpu")


class NetnsPool:
    """Empty network namespaces made ahead, each held open by a descriptor. A child makes each
    (the jailer could not always go back to its own: in a user namespace that does not own it,
    setns is refused)."""

    def __init__(self):
        self._ready = []

    def make(self):
        """Makes one namespace and keeps it."""
        read_fd, write_fd = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                helper_child(parent)
                os.close(read_fd)
                unshare(CLONE_NEWNET)
                os.write(write_fd, b"1")
                code = 0
                os.close(write_fd)
                signal_wait()
            finally:
                os._exit(code)
        os.close(write_fd)
        try:
            if os.read(read_fd, 1) != b"1":
                raise OSError("the network namespace could not be made")
            fd = os.open("/proc/%d/ns/net" % pid, os.O_RDONLY | os.O_CLOEXEC)
        finally:
            os.close(read_fd)
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        self._ready.append(fd)

    def take(self):
        """A namespace descriptor (made now if none is ready); the caller owns it."""
        if not self._ready:
            self.make()
        return self._ready.pop()

    @property
    def ready(self):
        """How many are made ahead."""
        return len(self._ready)

    def descriptors(self):
        """The descriptors of the namespaces made ahead."""
        return list(self._ready)


def signal_wait():
    """Waits to be killed."""
    import signal
    while True:
        signal.pause()
