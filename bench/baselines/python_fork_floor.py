"""The Python fork floor: a warm interpreter that forks a bare child per run, with no jail.

Usage: python3 -I python_fork_floor.py

Jobs arrive on stdin, answers leave on stdout, each as a 4-byte big-endian length and JSON:
`{"id", "code", "input"}` in, `{"id", "stdout", "returned", "status"}` out. The child runs the
code as module `__main__` (the last expression is the returned value), with its stdout on a
pipe the parent reads until it closes. Runs overlap: a job is forked as soon as it arrives.
This is what a Python run costs at best on this machine, the yardstick of the sandbox's own
per-run cost.
"""

import ast
import asyncio  # noqa: F401 - the modules the sandbox preloads, warm here too
import dataclasses  # noqa: F401
import json
import os
import re  # noqa: F401
import select
import struct
import sys
import typing  # noqa: F401

LENGTH = struct.Struct(">I")


def run_child(job, out_w, report_w):
    """In the forked child: runs the job, reports, exits."""
    os.dup2(out_w, 1)
    sys.stdout = open(1, "w", closefd=False)
    tree = ast.parse(job["code"], "main.py")
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    namespace = {"__name__": "__main__", "input": job.get("input")}
    status, returned = "success", None
    try:
        exec(compile(tree, "main.py", "exec"), namespace)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), "main.py", "eval"), namespace)
            returned = None if value is None else json.dumps(value)
    except BaseException:  # noqa: BLE001 - any failure is the run's
        status = "error"
    sys.stdout.flush()
    os.write(report_w, json.dumps({"status": status, "returned": returned}).encode())
    os._exit(0)


class Run:
    """One forked run: its id and what it wrote so far."""

    def __init__(self, job_id, pid, out_r, report_r):
        self.id = job_id
        self.pid = pid
        self.open = {out_r: bytearray(), report_r: bytearray()}
        self.out_r = out_r
        self.report_r = report_r


def start(job, poller, runs):
    out_r, out_w = os.pipe()
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        run_child(job, out_w, report_w)
    os.close(out_w)
    os.close(report_w)
    run = Run(job["id"], pid, out_r, report_r)
    for fd in (out_r, report_r):
        runs[fd] = run
        poller.register(fd, select.POLLIN)


def finish(run):
    os.waitpid(run.pid, 0)
    report = json.loads(bytes(run.done[run.report_r]) or b"{}")
    answer = {"id": run.id, "stdout": run.done[run.out_r].decode(), **report}
    data = json.dumps(answer).encode()
    send(LENGTH.pack(len(data)) + data)


def send(data):
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]


def main():
    poller = select.poll()
    poller.register(0, select.POLLIN)
    runs = {}
    pending = b""
    while True:
        for fd, _ in poller.poll():
            if fd == 0:
                chunk = os.read(0, 1 << 20)
                if not chunk:
                    return
                pending += chunk
                while len(pending) >= 4 and len(pending) >= 4 + LENGTH.unpack(pending[:4])[0]:
                    size = LENGTH.unpack(pending[:4])[0]
                    start(json.loads(pending[4:4 + size]), poller, runs)
                    pending = pending[4 + size:]
                continue
            run = runs[fd]
            chunk = os.read(fd, 1 << 16)
            if chunk:
                run.open[fd] += chunk
                continue
            poller.unregister(fd)
            os.close(fd)
            del runs[fd]
            run.done = getattr(run, "done", {})
            run.done[fd] = run.open.pop(fd)
            if not run.open:
                finish(run)


if __name__ == "__main__":
    main()
