"""Syntax check of untrusted code, in a run's own jailed process: nothing is run, the parser
still gets no privilege, and its memory counts against the run's slot."""

import ast
import json
import os

from faas_python.executor import USER_FILE


def validate(code, report_fd):
    """Parses `code` and reports `{ok}` or `{ok, message, line, column}`; never returns."""
    result = {"ok": True}
    try:
        compile(code, USER_FILE, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
    except SyntaxError as exc:
        result = {"ok": False, "message": "%s: %s" % (type(exc).__name__, exc.msg),
                  "line": max(1, exc.lineno or 1), "column": max(1, exc.offset or 1)}
    except (ValueError, MemoryError, RecursionError) as exc:
        result = {"ok": False, "message": "%s: %s" % (type(exc).__name__, exc),
                  "line": 1, "column": 1}
    try:
        os.write(report_fd, json.dumps(result).encode())
    finally:
        os._exit(0)
