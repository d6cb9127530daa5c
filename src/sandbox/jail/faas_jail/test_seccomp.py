"""Unit tests of seccomp.py: the filter compiles, and installed in a child, refuses what it
says it refuses and lets the rest through."""

import ctypes
import errno
import os
import socket
import unittest

from faas_jail import seccomp

LIBC = ctypes.CDLL(None, use_errno=True)
CLONE_NEWUSER = 0x10000000


def in_filtered_child(program, check):
    """Runs `check()` in a child with `program` installed; its return value (a short string)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            seccomp.Filter(program).install()
            os.write(write_end, check().encode())
        except BaseException as exc:  # noqa: BLE001 - the parent sees what went wrong
            os.write(write_end, ("raised %r" % exc).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    result = os.read(read_end, 1000).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    return result


def refused(make):
    try:
        make().close()
    except PermissionError:
        return "refused"
    return "allowed"


PROGRAM = seccomp.compile_filter(allow_unix_socket=True)


@unittest.skipIf(PROGRAM is None, "libseccomp is not installed")
class Filter(unittest.TestCase):
    def test_the_program_is_whole_bpf_instructions(self):
        self.assertGreater(len(PROGRAM), 0)
        self.assertEqual(len(PROGRAM) % 8, 0)

    def test_inet_sockets_are_refused_unix_sockets_allowed(self):
        result = in_filtered_child(PROGRAM, lambda: " ".join([
            refused(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM)),
            refused(lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)),
            refused(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)),
        ]))
        self.assertEqual(result, "refused refused allowed")

    def test_without_unix_sockets_only_socketpair_is_left(self):
        program = seccomp.compile_filter(allow_unix_socket=False)

        def check():
            pair = socket.socketpair()
            for end in pair:
                end.close()
            return refused(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))

        self.assertEqual(in_filtered_child(program, check), "refused")

    def test_new_namespaces_are_refused(self):
        def check():
            result = LIBC.unshare(CLONE_NEWUSER)
            return "%d %d" % (result, ctypes.get_errno())

        self.assertEqual(in_filtered_child(PROGRAM, check), "-1 %d" % errno.EPERM)

    def test_no_new_privileges_is_set(self):
        def check():
            with open("/proc/self/status") as status:
                lines = dict(line.split(":", 1) for line in status if ":" in line)
            return "%s %s" % (lines["NoNewPrivs"].strip(), lines["Seccomp"].strip())

        self.assertEqual(in_filtered_child(PROGRAM, check), "1 2")


if __name__ == "__main__":
    unittest.main()
