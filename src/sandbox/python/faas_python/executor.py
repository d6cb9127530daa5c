"""Runs one run's code, in the run's own jailed process: as module `__main__` (a final
expression is the return value, as in a notebook cell), with `input` and `return_val`, and
reports how it ended on the report pipe. Nothing of it outlives the process.
"""

import ast
import io
import json
import linecache
import os
import signal
import sys
import traceback
import types

USER_FILE = "main.py"
INPUT_DEPTH_HINT = ("input is nested too deeply for Python's json module; flatten it or pass "
                    "the nested part as a JSON string")


class _Result:
    explicit = None


def to_json_text(value):
    """`value` as JSON text; numpy scalars and arrays (and anything with `tolist`/`item`) as
    the JSON of their plain values; a value JSON cannot hold (a set, NaN, an object) as its
    repr."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, default=_plain)
    except Exception:
        try:
            return repr(value)
        except Exception:
            return "<unrepresentable %s>" % type(value).__name__


def _plain(value):
    for name in ("tolist", "item"):
        method = getattr(value, name, None)
        if callable(method):
            return method()
    raise TypeError("not JSON serializable")


def return_val(value):
    """Sets the run's return value: a string verbatim, anything else as JSON."""
    _Result.explicit = value if isinstance(value, str) else to_json_text(value)


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


def _exit_code_of(exc):
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


def _finish_threads():
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


def parse_input(text):
    """The run's `input`: its JSON parsed, or a RecursionError naming the problem."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except RecursionError:
        raise RecursionError(INPUT_DEPTH_HINT) from None


def execute(job, report_fd, before_exit=None):
    """Runs the job's code as __main__ and reports what it did; never returns (calls
    `before_exit` last, if given)."""
    kind, exit_code, returned = "ok", 0, None
    try:
        source = job["code"]
        linecache.cache[USER_FILE] = (len(source), None, source.splitlines(True), USER_FILE)
        module = types.ModuleType("__main__")
        namespace = module.__dict__
        namespace["__builtins__"] = __builtins__
        namespace["return_val"] = return_val
        sys.modules["__main__"] = module
        try:
            namespace["input"] = parse_input(job.get("input"))
            body, tail = compile_user(source)
        except (SyntaxError, ValueError, RecursionError) as exc:  # ValueError: null bytes
            sys.stderr.write("".join(traceback.format_exception_only(type(exc), exc)))
            kind, exit_code = "error", 1
        else:
            try:
                exec(body, namespace)
                if tail is not None:
                    value = eval(tail, namespace)
                    if value is not None:
                        returned = to_json_text(value)
                _finish_threads()
            except SystemExit as exc:
                exit_code = _exit_code_of(exc)
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
    report = {"kind": kind, "exit_code": exit_code, "explicit": _Result.explicit,
              "returned": returned}
    flush_stdio()
    try:
        os.write(report_fd, json.dumps(report).encode("utf-8", "surrogatepass"))
    except BaseException:
        pass
    # Closing the channels lets the zygote answer before this process is torn down.
    for fd in (report_fd, 1, 2):
        try:
            os.close(fd)
        except OSError:
            pass
    if before_exit is not None:
        before_exit()
    os._exit(exit_code & 0xFF)


# The run's stdio, made in the zygote before it forks, so the run does not pay for them.
STDIO = (
    io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8"),
    io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8",
                     errors="backslashreplace"),
    io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8",
                     errors="backslashreplace", line_buffering=True),
)


def prepare_process():
    """Once per zygote, for every run it forks: sys.std* point at fds 0-2 (each run's own
    pipes by then) and SIGTERM writes out buffered output before the run ends. The zygote
    itself never writes to them and is never sent SIGTERM."""
    sys.stdin, sys.stdout, sys.stderr = STDIO
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = STDIO
    sys.argv = [USER_FILE]
    signal.signal(signal.SIGTERM, stop_on_signal)


def flush_stdio():
    for stream in (sys.stdout, sys.stderr, *STDIO[1:]):
        try:
            stream.flush()
        except BaseException:
            pass


def stop_on_signal(signum, frame):
    """The zygote's timeout signal: output still in Python's buffers (print without flush,
    stderr without a newline) would die with a SIGKILL, so it is written out first, then the
    process ends as by the signal. Code stuck in C or blocking the signal never gets here: the
    zygote's SIGKILL follows anyway."""
    flush_stdio()
    try:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    finally:
        os._exit(128 + signum)  # the init of a pid namespace ignores its own default signals


def reseed():
    """Runs are cloned without os.fork's hooks, which reseed `random` in a child: without this,
    every run would draw the same numbers, and one tenant could predict another's."""
    module = sys.modules.get("random")
    if module is not None:
        module.seed()
