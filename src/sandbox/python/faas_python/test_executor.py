"""Unit tests of executor.py and validation.py: what a run's code sees and how a run reports,
without any jail. A run ends its process, so each one runs in a forked child here."""

import json
import os
import unittest

from faas_python import executor, validation


def run_in_child(target):
    """Forks; the child points fds 1 and 2 at pipes and calls `target(report_fd)`, which ends
    it. Returns (report, stdout, stderr, exit code) as the parent reads them."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            executor.prepare_process()
            target(report_w)
        finally:
            os._exit(99)
    for fd in (out_w, err_w, report_w):
        os.close(fd)
    streams = {}
    for fd in (out_r, err_r, report_r):
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        os.close(fd)
        streams[fd] = b"".join(chunks).decode()
    _, status = os.waitpid(pid, 0)
    report = json.loads(streams[report_r]) if streams[report_r] else None
    return report, streams[out_r], streams[err_r], os.waitstatus_to_exitcode(status)


def execute(code, input_text=None):
    """Runs `code` as a run would, with `input_text` as its input's JSON."""
    job = {"code": code, "input": input_text}
    return run_in_child(lambda report_fd: executor.execute(job, report_fd))


class ToJsonText(unittest.TestCase):
    def test_json_values_are_their_json(self):
        self.assertEqual(executor.to_json_text({"a": [1, 2.5, None, True]}),
                         '{"a": [1, 2.5, null, true]}')
        self.assertEqual(executor.to_json_text("héllo ✓"), '"héllo ✓"')

    def test_values_json_cannot_hold_are_their_repr(self):
        self.assertEqual(executor.to_json_text({1, 2}), "{1, 2}")
        self.assertEqual(executor.to_json_text(float("nan")), "nan")
        self.assertEqual(executor.to_json_text(object), "<class 'object'>")

    def test_array_likes_are_their_plain_values(self):
        class Array:
            def tolist(self):
                return [1, 2]

        class Scalar:
            def item(self):
                return 3

        self.assertEqual(executor.to_json_text(Array()), "[1, 2]")
        self.assertEqual(executor.to_json_text({"n": Scalar(), "v": Array()}),
                         '{"n": 3, "v": [1, 2]}')

    def test_a_value_without_a_repr_is_named(self):
        class Broken:
            def __repr__(self):
                raise RuntimeError("no")

        self.assertEqual(executor.to_json_text(Broken()), "<unrepresentable Broken>")


class CompileUser(unittest.TestCase):
    def test_a_last_expression_is_split_off(self):
        body, tail = executor.compile_user("x = 40\nx + 2")
        namespace = {}
        exec(body, namespace)
        self.assertEqual(eval(tail, namespace), 42)

    def test_without_a_last_expression_there_is_no_tail(self):
        self.assertIsNone(executor.compile_user("x = 1")[1])
        self.assertIsNone(executor.compile_user("")[1])

    def test_future_features_reach_the_last_expression(self):
        body, tail = executor.compile_user(
            "from __future__ import annotations\ndef f(x: undefined_name): return x\nf(5)")
        namespace = {}
        exec(body, namespace)
        self.assertEqual(eval(tail, namespace), 5)

    def test_syntax_errors_name_the_user_file(self):
        with self.assertRaises(SyntaxError) as caught:
            executor.compile_user("print(1)\nx = (\n")
        self.assertEqual(caught.exception.filename, executor.USER_FILE)


class ParseInput(unittest.TestCase):
    def test_absent_input_is_none(self):
        self.assertIsNone(executor.parse_input(None))

    def test_input_is_its_json(self):
        self.assertEqual(executor.parse_input('{"a": [1]}'), {"a": [1]})

    def test_deep_input_names_the_problem(self):
        with self.assertRaises(RecursionError) as caught:
            executor.parse_input("[" * 100_000 + "]" * 100_000)
        self.assertIn("nested too deeply", str(caught.exception))


class Execute(unittest.TestCase):
    def test_the_last_expression_is_the_returned_value(self):
        report, out, err, code = execute("print('Hello World')\n40 + 2")
        self.assertEqual((out, err, code), ("Hello World\n", "", 0))
        self.assertEqual(report, {"kind": "ok", "exit_code": 0, "explicit": None,
                                  "returned": "42"})

    def test_return_val_is_verbatim_for_strings_json_else(self):
        self.assertEqual(execute("return_val('plain')\n1")[0]["explicit"], "plain")
        self.assertEqual(execute("return_val({'a': 1})")[0]["explicit"], '{"a": 1}')

    def test_input_and_module_name(self):
        report = execute("[__name__, input['n'] * 2]", '{"n": 21}')[0]
        self.assertEqual(report["returned"], '["__main__", 42]')

    def test_classes_of_the_module_pickle(self):
        code = ("import pickle, sys\nclass P:\n    pass\n"
                "sys.modules['__main__'].P is P and type(pickle.loads(pickle.dumps(P()))) is P")
        self.assertEqual(execute(code)[0]["returned"], "true")

    def test_an_uncaught_error_shows_only_user_frames(self):
        report, _, err, code = execute("def f():\n    raise ValueError('boom')\nf()")
        self.assertEqual((report["kind"], code), ("error", 1))
        self.assertTrue(err.startswith("Traceback (most recent call last):\n"), err)
        self.assertIn('File "main.py", line 3, in <module>', err)
        self.assertNotIn("executor", err)
        self.assertTrue(err.endswith("ValueError: boom\n"))

    def test_sys_exit_sets_the_exit_code(self):
        report, out, _, code = execute("import sys\nprint('before')\nsys.exit(3)")
        self.assertEqual((report["kind"], report["exit_code"], out, code),
                         ("exit", 3, "before\n", 3))
        report, _, err, code = execute("import sys\nsys.exit('bad input')")
        self.assertEqual((report["exit_code"], err, code), (1, "bad input\n", 1))
        self.assertEqual(execute("import sys\nsys.exit()")[0]["kind"], "ok")

    def test_memory_error_is_its_own_kind(self):
        report, _, err, _ = execute("raise MemoryError()")
        self.assertEqual(report["kind"], "memory")
        self.assertIn("MemoryError", err)

    def test_a_syntax_error_is_an_error(self):
        report, _, err, code = execute("x = (\n")
        self.assertEqual((report["kind"], code), ("error", 1))
        self.assertIn("SyntaxError", err)

    def test_output_without_a_newline_is_written_out(self):
        self.assertEqual(execute("import sys\nprint('out', end='')\nsys.stderr.write('err')")[1:3],
                         ("out", "err"))

    def test_non_daemon_threads_finish_first(self):
        code = ("import threading, time\ndef late():\n    time.sleep(0.05)\n    print('late')\n"
                "threading.Thread(target=late).start()")
        self.assertEqual(execute(code)[1], "late\n")


class Validate(unittest.TestCase):
    def check(self, code):
        return run_in_child(lambda report_fd: validation.validate(code, report_fd))[0]

    def test_valid_code(self):
        self.assertEqual(self.check("x = 1\nprint(x)"), {"ok": True})

    def test_a_syntax_error_is_located(self):
        self.assertEqual(self.check("x = 1\nif x\n    pass"),
                         {"ok": False, "message": "SyntaxError: expected ':'", "line": 2,
                          "column": 5})

    def test_errors_a_run_would_meet_before_it_starts(self):
        report = self.check("return 1")
        self.assertEqual((report["ok"], report["line"]), (False, 1))
        self.assertIn("'return' outside function", report["message"])

    def test_null_bytes(self):
        self.assertFalse(self.check("x = 1\0")["ok"])

    def test_nothing_runs(self):
        report, out, _, _ = run_in_child(
            lambda report_fd: validation.validate("print('ran')", report_fd))
        self.assertEqual((report, out), ({"ok": True}, ""))


if __name__ == "__main__":
    unittest.main()
