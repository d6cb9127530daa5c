"""Syntax check of untrusted code, in a run's own jailed process: nothing is run, the parser
still gets no privilege, and its memory counts against the run's slot.

The code is compiled as a run compiles it (to bytecode, not to Python AST objects): it finds
every error a run would meet before its first line runs ('return' outside a function too), and
takes about half the time and three quarters of the memory (measured: 0.7 s and 135 MiB instead
of 1.3 s and 172 MiB for 600 KiB of dict literals)."""

import json
import os

from faas_python.executor import USER_FILE


def validate(code, report_fd):
    """Parses `code` and reports `{ok}` or `{ok, message, line, column}`; never returns."""
    result = {"ok": True}
    try:
        compile(code, USER_FILE, "exec", dont_inherit=True)
    except SyntaxError as exc:
        result = {"ok": False, "message": "%s: %s" % (type(exc).__name__, exc.msg),
                  "line": max(1, exc.lineno or 1), "column": max(1, exc.offset or 1)}
    except MemoryError:
        result = {"ok": False, "line": 1, "column": 1,
                  "message": "MemoryError: the code is too large to check within the memory limit"}
    except (ValueError, RecursionError) as exc:
        result = {"ok": False, "message": "%s: %s" % (type(exc).__name__, exc),
                  "line": 1, "column": 1}
    try:
        os.write(report_fd, json.dumps(result).encode())
    finally:
        os._exit(0)
