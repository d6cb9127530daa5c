"""The jailer: the one process that starts sandbox processes, for every language.

Usage: cd <dir> && python3 -I -B faas_jail/__main__.py, its config as JSON on stdin's first line.

Its command line names no path of the host: every sandbox it forks inherits it, and a sandbox
reads its own (/proc/self/cmdline). It speaks newline-delimited JSON with the host on stdin
(requests, after the config) and stdout (events), and
never sees what a sandbox runs: code, input and output go between the host and the sandbox
over the sandbox's own connection to the host's socket, which the sandbox opens before it
enters its jail. Requests:

- `{"op": "spawn", "id", "token", "argv", "env"}` starts a program in a slot's jail (a
  JavaScript runner, which connects to the host's socket itself and says its token); with
  `"trusted": true` (the host's own warm-up) it keeps the jailer's uid and may write the
  `"writable"` pairs of (host path, path in its root); `"own_dir": [source, target]` gives it
  a dir of its own in its private /tmp (see layers.own_dir);
- `{"op": "zygote", "id", "token"}` forks a zygote into a slot's jail (Python: it stays
  warm with what this process preloaded and forks each run);
- `{"op": "kill", "id"}` ends one; `{"op": "ping", "id"}` answers `pong`.

Events: `ready` (the active layers), `spawned` (pid, slot), `spawn_failed`, `exit` (exit code or
signal, and whether the kernel killed something in the slot for memory), `pong`. Closing stdin
ends every sandbox and the jailer.
"""

import gc
import json
import os
import select
import signal
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from faas_jail import layers, workdirs  # noqa: E402
from faas_jail.jail import Jail, connect  # noqa: E402

READ_CHUNK = 65536
MAX_REQUEST = 1 << 20  # requests carry no payload: a line this long is a broken host


def send(event):
    data = (json.dumps(event) + "\n").encode()
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]


class Sandbox:
    """A sandbox process this jailer started."""

    def __init__(self, request_id, pid, slot, ooms):
        self.id = request_id
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        self.slot = slot
        self.ooms = ooms


class Jailer:
    def __init__(self, config):
        self.config = config
        self.jail = Jail(config)
        self.zygote = None
        self.sandboxes = {}  # pidfd -> Sandbox
        self.by_id = {}
        self.poll = select.poll()

    def start(self):
        workdir = os.path.dirname(self.config["mount_point"])
        self.lock = workdirs.hold(workdir)
        self.jail.probe()
        # What jails that died without cleaning up left: their work dirs and cgroups.
        workdirs.sweep(workdir, self.jail.cgroups.parents() if self.jail.cgroups else ())
        zygote = self.config.get("zygote")
        if zygote:
            sys.path.insert(0, zygote["path"])
            from faas_python import zygote as module  # the Python runtime's zygote
            module.prepare(zygote)
            self.zygote = module
        # What start made is never scanned by the collector again: a pass would write to every
        # page holding it, which after each fork the kernel copies (in the child) or faults
        # back in (here).
        gc.freeze()
        send({"ev": "ready", "layers": self.jail.layers, "uid_base": self.jail.uid_base,
              "python": sys.version.split()[0]})

    def serve(self, pending=b""):
        os.set_blocking(0, False)
        self.poll.register(0, select.POLLIN)
        while True:
            idle = -1 if self.jail.netns is None else 0
            events = self.poll.poll(idle if self._has_background_work() else -1)
            if not events:
                self.jail.make_ahead()
                continue
            for fd, _ in events:
                if fd != 0:
                    self._reap(self.sandboxes.get(fd))
                    continue
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
                        self._handle(json.loads(line))
                if len(pending) > MAX_REQUEST:
                    raise ValueError("request line too long")

    def _has_background_work(self):
        netns = self.jail.netns
        return netns is not None and netns.ready < self.config.get("netns_ahead", 2)

    def _handle(self, request):
        op = request.get("op")
        if op in ("spawn", "zygote"):
            self._spawn(request)
        elif op == "kill":
            sandbox = self.by_id.get(request.get("id"))
            if sandbox is not None:
                _kill(sandbox, self.jail.layers["pidns"])
        elif op == "ping":
            send({"ev": "pong", "id": request.get("id")})

    def _spawn(self, request):
        request_id = request["id"]
        if request["op"] == "zygote" and self.zygote is None:
            send({"ev": "spawn_failed", "id": request_id, "error": "this jail has no zygote"})
            return
        slot = self.jail.take_slot()
        if slot is None:
            send({"ev": "spawn_failed", "id": request_id, "error": "every sandbox slot is taken"})
            return
        ooms = self.jail.oom_kills(slot)
        parent = os.getpid()
        trusted = request["op"] == "spawn" and request.get("trusted") is True
        writable = [tuple(pair) for pair in request.get("writable", ())] if trusted else []
        try:
            pid = layers.clone(self.jail.spawn_flags(writable))
        except OSError as error:
            self.jail.give_back(slot)
            send({"ev": "spawn_failed", "id": request_id, "error": str(error)})
            return
        if pid == 0:
            self._child(request, slot, parent, writable)  # never returns
        sandbox = Sandbox(request_id, pid, slot, ooms)
        self.sandboxes[sandbox.pidfd] = sandbox
        self.by_id[request_id] = sandbox
        self.poll.register(sandbox.pidfd, select.POLLIN)
        send({"ev": "spawned", "id": request_id, "pid": pid, "slot": slot.number})

    def _child(self, request, slot, parent, writable):
        code = 70
        try:
            # A jailer killed now must not leave this child behind (see helper_child); once
            # its uid is dropped, it asks again.
            layers.die_with_parent(parent)
            # What the jailer ignores, a sandbox gets back (its own session keeps it apart).
            for number in (signal.SIGPIPE, signal.SIGINT, signal.SIGTERM):
                signal.signal(number, signal.SIG_DFL)
            if request["op"] == "spawn":
                gc.disable()  # until its exec: a collection would touch (copy) the jailer's pages
                self.jail.enter(slot, writable)
                if request.get("own_dir") and self.jail.private_tmp():
                    source, target = request["own_dir"]
                    layers.own_dir(source, target, slot.uid)
                self._exec(request, slot, request.get("trusted") is True)
            else:
                layers.quiet_stdio(keep_stderr=self.config.get("debug"))
                sock = connect(self.config["socket"], request["token"])
                oom_kills = self.jail.oom_counter(slot)
                self.jail.enter(slot)
                self.jail.let_go()
                layers.die_with_parent()
                self.zygote.serve(sock, self.jail, slot, oom_kills)
                code = 0
        except BaseException:
            try:
                os.write(2, traceback.format_exc().encode()[-4000:])
            except OSError:
                pass
        finally:
            os._exit(code)

    def _exec(self, request, slot, trusted):
        layers.quiet_stdio(keep_stderr=self.config.get("debug"))
        layers.close_fds_except(())
        self.jail.confine(slot, self.config.get("limits", {}), keep_uid=trusted)
        layers.die_with_parent()
        argv = request["argv"]
        os.execve(argv[0], argv, request.get("env", {}))

    def _reap(self, sandbox):
        if sandbox is None:
            return
        try:
            pid, status = os.waitpid(sandbox.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = sandbox.pid, 0
        if pid == 0:
            return
        self.poll.unregister(sandbox.pidfd)
        os.close(sandbox.pidfd)
        del self.sandboxes[sandbox.pidfd]
        self.by_id.pop(sandbox.id, None)
        event = {"ev": "exit", "id": sandbox.id,
                 "oom": self.jail.oom_kills(sandbox.slot) > sandbox.ooms}
        if os.WIFSIGNALED(status):
            event["signal"] = os.WTERMSIG(status)
        else:
            event["code"] = os.WEXITSTATUS(status)
        if not self.jail.layers["pidns"]:
            _kill_group(sandbox.pid)  # what it left in its group
        self.jail.give_back(sandbox.slot)
        send(event)

    def shutdown(self):
        for sandbox in list(self.sandboxes.values()):
            _kill(sandbox, self.jail.layers["pidns"])
        for sandbox in list(self.sandboxes.values()):
            try:
                os.waitpid(sandbox.pid, 0)
            except ChildProcessError:
                pass
        self.jail.close()


def _kill(sandbox, pidns):
    """Ends a sandbox: with a pid namespace its init takes every process in it along."""
    try:
        signal.pidfd_send_signal(sandbox.pidfd, signal.SIGKILL)
    except OSError:
        pass
    if not pidns:
        _kill_group(sandbox.pid)


def _kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def read_config():
    """The config (stdin's first line) and whatever the host sent after it."""
    data = b""
    while b"\n" not in data:
        chunk = os.read(0, READ_CHUNK)
        if not chunk or len(data) > MAX_REQUEST:
            raise SystemExit("the jailer expected its config as the first line of its input")
        data += chunk
    line, rest = data.split(b"\n", 1)
    return json.loads(line), rest


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    # The host alone stops the jailer (it closes stdin): a Ctrl-C or a SIGTERM sent to the
    # whole process group must not end the sandboxes of runs the host is still draining.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # If the host dies, the jailer goes at once, and every sandbox with it (see _child).
    layers.die_with_parent()
    config, pending = read_config()
    jailer = Jailer(config)
    try:
        jailer.start()
        jailer.serve(pending)
    finally:
        jailer.shutdown()


if __name__ == "__main__":
    main()
