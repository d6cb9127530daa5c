"""The Python fork floor's interpreter: warm, with the modules the service preloads, it forks
a child per job and runs the job's code in the child, with no jail and no limit.

Usage: python3 -I fork_floor.py (started by fork_floor_server.ts)

Jobs arrive on stdin and answers leave on stdout, each frame a 4-byte big-endian length and
JSON: `{"id", "code", "input", "timeout_ms"}` in (`input` is JSON text or null),
`{"id", "status", "exit_code", "stdout", "stderr", "explicit", "returned"}` out. A job is
forked as soon as it arrives, so runs overlap; the parent waits for all of them in one poll
loop. The child runs the code as module `__main__` with `input` and `return_val` (a final
expression is the returned value, as in the service), its stdout and stderr on pipes the
parent reads, its report on a third pipe. A child past its timeout is killed.
"""

import ast
import asyncio  # noqa: F401 - what the service preloads is warm here too
import dataclasses  # noqa: F401
import gc
import io
import json
import os
import random  # noqa: F401
import re  # noqa: F401
import select
import signal
import struct
import sys
import time
import traceback
import typing  # noqa: F401

LENGTH = struct.Struct(">I")
USER_FILE = "main.py"


def to_json_text(value):
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def run_child(job, out_w, err_w, report_w):
    """In the forked child: runs the job's code, writes the report, exits."""
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8")
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8")
    explicit = None

    def return_val(value):
        nonlocal explicit
        explicit = value if isinstance(value, str) else to_json_text(value)

    status, exit_code, returned = "success", 0, None
    try:
        tree = ast.parse(job["code"], USER_FILE)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        namespace = {"__name__": "__main__", "return_val": return_val}
        text = job.get("input")
        namespace["input"] = None if text is None else json.loads(text)
        exec(compile(tree, USER_FILE, "exec"), namespace)
        if last is not None:
            value = eval(compile(last, USER_FILE, "eval"), namespace)
            if value is not None:
                returned = to_json_text(value)
    except SystemExit as exc:
        exit_code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        status = "success" if exit_code == 0 else "error"
    except BaseException:  # noqa: BLE001 - any failure is the run's
        status, exit_code = "error", 1
        traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    report = {"status": status, "exit_code": exit_code, "explicit": explicit,
              "returned": returned}
    os.write(report_w, json.dumps(report).encode())
    os._exit(0)


class Run:
    """One forked run: its job id, pid, deadline, and what each of its pipes carried."""

    def __init__(self, job, pid, pipes):
        self.id = job["id"]
        self.pid = pid
        self.deadline = time.monotonic() + job.get("timeout_ms", 30_000) / 1000
        self.timed_out = False
        self.names = pipes  # fd -> "stdout" | "stderr" | "report"
        self.data = {name: bytearray() for name in pipes.values()}


def start(job, poller, runs):
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            run_child(job, out_w, err_w, report_w)
        finally:
            os._exit(70)
    for fd in (out_w, err_w, report_w):
        os.close(fd)
    run = Run(job, pid, {out_r: "stdout", err_r: "stderr", report_r: "report"})
    for fd in run.names:
        runs[fd] = run
        poller.register(fd, select.POLLIN)


def finish(run):
    os.waitpid(run.pid, 0)
    try:
        report = json.loads(bytes(run.data["report"]))
    except ValueError:
        report = {"status": "error", "exit_code": 1}
    if run.timed_out:
        report["status"] = "timeout"
    answer = {
        "id": run.id,
        "stdout": run.data["stdout"].decode("utf-8", "replace"),
        "stderr": run.data["stderr"].decode("utf-8", "replace"),
        **report,
    }
    data = json.dumps(answer).encode()
    send(LENGTH.pack(len(data)) + data)


def send(data):
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]


def expire(runs):
    """Kills the runs past their deadline; the ms until the next deadline, or -1."""
    now = time.monotonic()
    upcoming = -1
    for run in set(runs.values()):
        if run.timed_out:
            continue
        if now >= run.deadline:
            run.timed_out = True
            os.kill(run.pid, signal.SIGKILL)
            continue
        wait = int((run.deadline - now) * 1000) + 1
        upcoming = wait if upcoming < 0 else min(upcoming, wait)
    return upcoming


def main():
    # As the service's zygotes do: the warm heap is frozen so children do not copy it.
    gc.collect()
    gc.freeze()
    poller = select.poll()
    poller.register(0, select.POLLIN)
    runs = {}
    pending = b""
    while True:
        for fd, _ in poller.poll(expire(runs)):
            if fd == 0:
                chunk = os.read(0, 1 << 20)
                if not chunk:
                    return
                pending += chunk
                while len(pending) >= 4:
                    size = LENGTH.unpack(pending[:4])[0]
                    if len(pending) < 4 + size:
                        break
                    start(json.loads(pending[4:4 + size]), poller, runs)
                    pending = pending[4 + size:]
                continue
            run = runs[fd]
            chunk = os.read(fd, 1 << 16)
            if chunk:
                run.data[run.names[fd]] += chunk
                continue
            poller.unregister(fd)
            os.close(fd)
            del runs[fd]
            del run.names[fd]
            if not run.names:
                finish(run)


if __name__ == "__main__":
    main()
