"""A Python zygote: one per slot, forked from the jailer (so it starts with every preloaded
module) into the slot's jail (network namespace, cgroup, minimal read-only root). For each run
it forks a child ahead of time into the run's own layers (pid, mount and ipc namespaces with a
fresh /tmp and /proc, rlimits, the slot's uid, seccomp), which waits for its job.

The zygote relays a run's job from the service's connection into the child's pipe, and the
child's stdout, stderr and report back, with splice(2): the bytes never pass through its own
memory, so no later run forked from it can find an earlier run's code, input or output there.
It enforces the run's timeout (SIGTERM, which lets Python write out buffered output, then
SIGKILL) and says how the run ended; it never parses anything a run wrote.
"""

import fcntl
import gc
import json
import os
import resource
import select
import shutil
import signal
import struct
import sys
import termios
import time

from faas_jail import layers
from faas_python import executor, frames, prefault, validation

# A job shaped like the platform's evaluators, run once per zygote to learn which pages a run
# writes (see prefault.py). It holds no one's data.
REHEARSAL_JOB = {
    "mode": "run",
    "timeout_ms": 1000,
    "input": '{"turn": {"output": "four", "reference": "4"}}',
    "code": "import json, sys, asyncio\n"
            "from dataclasses import dataclass\n\n"
            "@dataclass\n"
            "class Verdict:\n"
            "    score: float\n"
            "    reason: str\n\n"
            "verdict = Verdict(float(input['turn']['output'] == 'four'), 'same words')\n"
            "print('scoring', input['turn'])\n"
            "print('__COZE_RETURN_VAL_START__')\n"
            "print(json.dumps({'score': verdict.score, 'reason': verdict.reason}))\n"
            "print('__COZE_RETURN_VAL_END__')\n"
            "{'score': verdict.score}\n",
}
REHEARSAL_TIMEOUT_MS = 10_000
STOP_GRACE = 0.04  # between the timeout's SIGTERM and its SIGKILL
DRAIN_GRACE = 0.05  # for output still in the pipes once the run is gone
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = 1031
CONFIG = {}

# Modules the platform's evaluator programs import on every run: loaded once here, each run
# inherits them (about 100 ms per run on a loaded host otherwise). They hold no secret.
ALWAYS_PRELOADED = ("asyncio", "dataclasses", "typing", "json", "re", "random")


# Numeric libraries start thread pools on import; a process that forks must have one thread.
SINGLE_THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                     "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def prepare(config):
    """In the jailer, before it forks any zygote: imports what runs inherit. A module that
    cannot be imported, or leaves threads running, stops the jailer with one line naming it."""
    CONFIG.update(config)
    for name in SINGLE_THREAD_ENV:
        os.environ[name] = "1"
    for name in ALWAYS_PRELOADED:
        __import__(name)
    for name in config.get("preload", ()):
        try:
            __import__(name)
        except BaseException as exc:  # noqa: BLE001 - any failure of the import is reported
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SystemExit("cannot preload the python module %r: %s" % (name, reason)) \
                from None
        threads = len(os.listdir("/proc/self/task"))
        if threads > 1:
            raise SystemExit("cannot preload the python module %r: it left %d threads running, "
                             "and a zygote must have one to fork" % (name, threads - 1))
    for name in SINGLE_THREAD_ENV:
        del os.environ[name]
    gc.collect()
    gc.freeze()


def serve(sock, jail, slot, oom_kills):
    """The zygote's loop; returns when the service closes the connection."""
    Zygote(sock, jail, slot, oom_kills).loop()


class Child:
    """A run child: its pid and the zygote's ends of its pipes."""

    def __init__(self, pid, job_w, out_r, err_r, report_r, ready_r):
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        self.job_w = job_w
        self.ready_r = ready_r
        self.streams = {out_r: 1, err_r: 2, report_r: 3}
        self.status = None
        self.run = 0
        self.deadline = None
        self.kill_at = None
        self.drain_until = None
        self.flags = 0
        self.ooms = 0
        self.answered = False  # its EXIT is sent (it was killed): the rest is clean-up


class Zygote:
    """One slot's zygote: its connection to the service, its next run child (the spare) and
    the run under way, if any."""

    def __init__(self, sock, jail, slot, oom_kills):
        self.sock = sock
        self.fd = sock.fileno()
        self.jail = jail
        self.slot = slot
        self.oom_kills = oom_kills
        self.poll = select.poll()
        self.header = b""
        self.spare = None
        self.running = None
        self.owners = {}  # fd -> Child (pidfds and pipes of the spare and the running child)
        self.failures = 0
        self.flags = layers.CLONE_NEWNS if jail.layers["mountns"] else 0
        if jail.layers["pidns"]:
            self.flags |= layers.CLONE_NEWPID
        if jail.layers["ipcns"]:
            self.flags |= layers.CLONE_NEWIPC
        # Address space: what this process maps already plus the run's memory budget.
        self.limits = dict(CONFIG.get("limits", {}))
        self.limits["AS"] = _mapped_bytes() + CONFIG["memory_limit_bytes"]
        # What every run child does to enter its own layers, made ready once per slot: a child
        # pays for each page it touches (a copy: ≈ 25 µs per page on this VM).
        self.fresh_tmp = layers.FreshTmp(jail.tmp_options(slot.uid),
                                         with_proc=bool(self.flags & layers.CLONE_NEWPID)) \
            if jail.layers["mountns"] else None
        self.confine = jail.confiner(slot, self.limits)
        self.max_fd = os.sysconf("SC_OPEN_MAX")
        # Without a mount namespace a run has no /tmp of its own: it gets a private dir of the
        # jail's, emptied after it; without a pid namespace what it started is found by uid.
        self.run_dir = None if jail.layers["mountns"] else os.path.join(
            os.path.dirname(jail.config["mount_point"]), "runs", "s%d" % slot.number)
        self.sweep_uid = slot.uid if jail.layers["uid"] and not jail.layers["pidns"] else None
        self.null = os.open("/dev/null", os.O_WRONLY)
        self.scratch = os.pipe()  # drains a job no child takes, without reading it
        _forget_package(CONFIG["path"])
        executor.prepare_process()
        self.prefault = None

    def rehearse(self):
        """Learns which pages a run child writes, from a child that runs a canned job the way a
        run does (its output goes nowhere), so that every later child copies them ahead."""
        if not prefault.supported():
            return
        self._make_run_dir()
        job_r, job_w = os.pipe()
        result_r, result_w = os.pipe()
        pid = layers.clone(self.flags)
        if pid == 0:
            try:
                measure = prefault.Measure()
                self._enter((self.null, self.null, self.null, job_r, self.null, result_w),
                            keep=(measure.maps.fileno(), measure.pagemap.fileno()))
                _serve_job(3, 4, before_exit=lambda: os.write(5, json.dumps(measure()).encode()))
            finally:
                os._exit(70)
        for fd in (job_r, result_w):
            os.close(fd)
        data = b""
        try:
            os.write(job_w, json.dumps(REHEARSAL_JOB).encode())
            os.close(job_w)
            ready = select.poll()
            ready.register(result_r, select.POLLIN)
            while ready.poll(REHEARSAL_TIMEOUT_MS):
                chunk = os.read(result_r, 65536)
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(result_r)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            self._clean_up()
        try:
            spans = [(int(start), int(length)) for start, length in json.loads(data)]
        except (ValueError, TypeError):
            return  # no rehearsal, no copies ahead: runs take their faults
        self.prefault = prefault.Prefault(spans)

    def loop(self):
        """Serves the service's frames and the children's pipes until the service closes."""
        self.rehearse()
        os.set_blocking(self.fd, True)
        self.poll.register(self.fd, select.POLLIN)
        self._fork_spare()
        while True:
            for fd, _ in self.poll.poll(self._next_timer()):
                if fd == self.fd:
                    if not self._read_host():
                        return
                    continue
                child = self.owners.get(fd)
                if child is None:
                    continue
                if fd == child.pidfd:
                    self._reap(child)
                else:
                    self._relay(child, fd)
            self._check_timers()

    # ------------------------------------------------------------------ service frames

    def _read_host(self):
        """Reads (part of) a frame header from the service; False once it closed."""
        chunk = os.read(self.fd, frames.HEADER.size - len(self.header))
        if not chunk:
            return False
        self.header += chunk
        if len(self.header) < frames.HEADER.size:
            return True
        kind, _, _, run, argument, length = frames.unpack(self.header)
        self.header = b""
        if kind == frames.RUN:
            self._start(run, argument, length)
        elif kind == frames.STOP and self.running and self.running.run == run:
            self.running.flags |= frames.STOPPED
            self._kill(self.running, signal.SIGKILL)
            self._answer_now(self.running)
        return True

    def _start(self, run, timeout_ms, length):
        """Hands the job of run `run` to the spare: its bytes go from the socket to the child's
        pipe without entering this process."""
        child = self.spare
        if child is None or self.running is not None:
            # The service sent a run with no spare: drop it and say it never started.
            self._discard(length)
            self._send(frames.pack(frames.EXIT, run, flags=frames.STOPPED))
            return
        self.spare = None
        self.running = child
        child.run = run
        child.deadline = time.monotonic() + timeout_ms / 1000
        try:
            _splice_exactly(self.fd, child.job_w, length)
        except OSError as error:
            self._discard(error.left)  # the child is gone: its exit says so
        os.close(child.job_w)
        child.job_w = None

    def _discard(self, length):
        """Drops `length` bytes of the service's stream through a pipe into /dev/null: the
        job of a run that never starts must not pass through this process's memory either."""
        read_end, write_end = self.scratch
        while length > 0:
            moved = os.splice(self.fd, write_end, min(length, 1 << 16))
            if moved == 0:
                return
            _splice_exactly(read_end, self.null, moved)
            length -= moved

    def _send(self, data):
        """Writes `data` (frames of this zygote's own) to the service whole."""
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    # ------------------------------------------------------------------ the run

    def _relay(self, child, fd):
        """Moves what is in one of a child's pipes to the service as an OUT frame, unread."""
        if fd == child.ready_r:
            self._spare_ready(child)
            return
        available = _readable_bytes(fd)
        if available == 0:
            self._forget(fd)
            del child.streams[fd]
            self._maybe_done(child)
            return
        if child is not self.running or child.answered:
            _splice_exactly(fd, self.null, available)  # a spare's failure; a killed run's tail
            return
        self._send(frames.pack(frames.OUT, child.run, stream=child.streams[fd],
                               length=available))
        _splice_exactly(fd, self.fd, available)

    def _spare_ready(self, child):
        """The spare says it is in its jail and waits for its job (or it died trying)."""
        jailed = os.read(child.ready_r, 1) == b"R"
        self._forget(child.ready_r)
        child.ready_r = None
        if jailed and child is self.spare:
            child.ooms = self.oom_kills()  # the slot's count before the run: off its path
            self._send(frames.pack(frames.READY))

    def _reap(self, child):
        """Collects a child's wait status once its pidfd says it is gone."""
        pid, status = os.waitpid(child.pid, os.WNOHANG)
        if pid == 0:
            return
        child.status = status
        self._forget(child.pidfd)
        child.drain_until = time.monotonic() + DRAIN_GRACE
        self._maybe_done(child)

    def _maybe_done(self, child, force=False):
        """Ends a run once its child is reaped and its pipes drained (or `force`): answers
        EXIT, cleans up, forks the next child. A spare that died is forked again, more slowly."""
        if child.status is None or (child.streams and not force):
            return
        for fd in list(child.streams):
            self._forget(fd)
        child.streams.clear()
        if child.ready_r is not None:
            self._forget(child.ready_r)
            child.ready_r = None
        if child.job_w is not None:
            os.close(child.job_w)
            child.job_w = None
        if child is self.spare:
            # It died before a job: its jail failed. Try again, more slowly each time.
            self.spare = None
            self.failures += 1
            time.sleep(min(1.0, 0.01 * 2 ** self.failures))
            self._fork_spare()
            return
        self.running = None
        self.failures = 0
        if not child.answered:
            flags = child.flags
            if self.oom_kills() > child.ooms:
                flags |= frames.OOM
            self._send(frames.pack(frames.EXIT, child.run, flags=flags, argument=child.status))
        self._clean_up()
        self._fork_spare()

    def _make_run_dir(self):
        """Without a mount namespace: the next run's private, empty dir (mode 0700, its uid)."""
        if self.run_dir is None:
            return
        shutil.rmtree(self.run_dir, ignore_errors=True)
        os.makedirs(os.path.dirname(self.run_dir), mode=0o711, exist_ok=True)
        os.mkdir(self.run_dir, 0o700)
        os.chown(self.run_dir, self.slot.uid, self.slot.uid)

    def _clean_up(self):
        """Where a layer is missing, removes by hand what a run left: processes of the slot's
        uid (which no pid namespace took along) and its private dir (no mount namespace)."""
        if self.sweep_uid is not None:
            pid = os.fork()
            if pid == 0:
                try:
                    os.setresuid(self.sweep_uid, self.sweep_uid, self.sweep_uid)
                    os.kill(-1, signal.SIGKILL)  # every process of that uid but this one
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _forget(self, fd):
        """Stops watching and closes one of a child's descriptors."""
        if self.owners.pop(fd, None) is not None:
            self.poll.unregister(fd)
        os.close(fd)

    def _next_timer(self):
        """Milliseconds until the running child's next deadline, or -1."""
        child = self.running
        if child is None:
            return -1
        now = time.monotonic()
        times = [t for t in (child.deadline, child.kill_at, child.drain_until) if t is not None]
        if not times:
            return -1
        return max(0, int((min(times) - now) * 1000) + 1)

    def _check_timers(self):
        """Timeout (SIGTERM, then SIGKILL and an answer), and the end of a drain."""
        child = self.running
        if child is None:
            return
        now = time.monotonic()
        if child.deadline is not None and now >= child.deadline and child.status is None:
            child.deadline = None
            child.flags |= frames.TIMED_OUT
            child.kill_at = now + STOP_GRACE
            self._kill(child, signal.SIGTERM)
        if child.kill_at is not None and now >= child.kill_at:
            child.kill_at = None
            self._kill(child, signal.SIGKILL)
            self._answer_now(child)
        if child.drain_until is not None and now >= child.drain_until:
            self._maybe_done(child, force=True)

    def _answer_now(self, child):
        """Answers for a run this zygote killed without waiting for it to be gone: the kernel
        may take long to tear down a run of many processes (a fork bomb), and the answer is
        known. What it wrote so far goes first. The zygote forks no next child, so it serves
        no other run, until this one is reaped."""
        if child.answered or child.status is not None:
            return
        for fd, stream in list(child.streams.items()):
            available = _readable_bytes(fd)
            if available:
                self._send(frames.pack(frames.OUT, child.run, stream=stream, length=available))
                _splice_exactly(fd, self.fd, available)
        child.answered = True
        self._send(frames.pack(frames.EXIT, child.run, flags=child.flags,
                               argument=signal.SIGKILL))

    def _kill(self, child, signum):
        """Sends `signum` to a child and all it started (its pid namespace or group)."""
        if child.status is not None:
            return
        try:
            if self.flags & layers.CLONE_NEWPID:
                os.kill(child.pid, signum)  # its pid namespace goes with it
            else:
                os.killpg(child.pid, signum)
        except OSError:
            pass

    # ------------------------------------------------------------------ the spare

    def _fork_spare(self):
        """Forks the next run's child; it enters its jail at once and says READY (through the
        zygote) when it waits for its job, so the jail's cost stays off the run's path."""
        self._make_run_dir()
        job_r, job_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        report_r, report_w = os.pipe()
        ready_r, ready_w = os.pipe()
        for fd in (job_w, out_w, err_w):
            try:
                fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass
        pid = layers.clone(self.flags)
        if pid == 0:
            try:
                self._child(job_r, out_w, err_w, report_w, ready_w)
            except BaseException as exc:  # noqa: BLE001 - a jail that fails ends the child
                try:
                    os.write(2, ("the run's sandbox failed: %s\n" % exc).encode())
                except OSError:
                    pass
            finally:
                os._exit(71)
        for fd in (job_r, out_w, err_w, report_w, ready_w):
            os.close(fd)
        child = Child(pid, job_w, out_r, err_r, report_r, ready_r)
        for fd in (child.pidfd, ready_r, *child.streams):
            self.owners[fd] = child
            self.poll.register(fd, select.POLLIN)
        self.spare = child

    def _child(self, job_r, out_w, err_w, report_w, ready_w):
        """In the forked child: copies ahead what a run writes, enters the run's own layers,
        says it is ready, then waits for its job."""
        if self.prefault is not None:
            self.prefault()
        self._enter((self.null, out_w, err_w, job_r, report_w, ready_w))
        os.write(5, b"R")
        os.close(5)
        _serve_job(3, 4)

    def _enter(self, fds, keep=()):
        """In a fresh child: `fds` become its fds 0-5 (stdin, stdout, stderr, job, report, ready),
        every other one but `keep` is closed, and it enters the run's layers. Runs once per run,
        so it does as little as it can: whatever can be done once per slot was done in the
        zygote."""
        if not self.flags & layers.CLONE_NEWPID:
            os.setsid()  # without a pid namespace, the group is what the zygote kills
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        if keep:
            layers.close_fds_except({3, 4, 5, *keep})
        else:
            os.closerange(6, self.max_fd)
        if self.fresh_tmp is not None:
            self.fresh_tmp()
        if self.run_dir is None:
            os.chdir("/tmp")
        else:
            os.chdir(self.run_dir)
            os.environ["TMPDIR"] = self.run_dir
        self.confine()
        executor.reseed()


def _readable_bytes(fd):
    data = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return struct.unpack("i", data)[0]


def _serve_job(job_fd, report_fd, before_exit=None):
    """In a run's jailed process: reads its job to the end and runs or checks it; never
    returns."""
    data = bytearray()
    while chunk := os.read(job_fd, 1 << 20):
        data += chunk
    os.close(job_fd)
    if not data:
        os._exit(0)  # retired without a job
    job = json.loads(bytes(data))
    del data
    if job.get("mode") == "validate":
        validation.validate(job["code"], report_fd)
    cpu = max(1, -(-int(job.get("timeout_ms", 1000)) // 1000) + 1)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    executor.execute(job, report_fd, before_exit)


class SpliceError(OSError):
    """A splice that stopped short; `left` says how many bytes it did not move."""

    def __init__(self, left, cause):
        super().__init__(str(cause))
        self.left = left


def _splice_exactly(source, target, count):
    """Moves exactly `count` bytes from `source` to `target` (one of them a pipe)."""
    moved = 0
    try:
        while moved < count:
            step = os.splice(source, target, count - moved)
            if step == 0:
                raise OSError("the other end closed")
            moved += step
    except OSError as error:
        raise SpliceError(count - moved, error) from None


def _forget_package(root):
    """Runs import nothing from the sandbox's own packages: they leave the path once per slot
    (with the environment, which the jailer starts empty)."""
    sys.path[:] = [p for p in sys.path if not p.startswith(root)]
    os.environ.clear()


def _mapped_bytes():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0
