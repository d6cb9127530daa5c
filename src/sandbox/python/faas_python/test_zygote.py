"""Unit tests of the zygote's plumbing that needs no jail: splicing and pipe sizes."""

import os
import socket
import unittest

from faas_python import zygote


class Splice(unittest.TestCase):
    def test_exactly_the_count_moves(self):
        sock, peer = socket.socketpair()
        read_end, write_end = os.pipe()
        try:
            peer.sendall(b"0123456789")
            zygote._splice_exactly(sock.fileno(), write_end, 6)
            self.assertEqual(zygote._readable_bytes(read_end), 6)
            self.assertEqual(os.read(read_end, 100), b"012345")
            self.assertEqual(sock.recv(100), b"6789")
        finally:
            for fd in (read_end, write_end):
                os.close(fd)
            sock.close()
            peer.close()

    def test_a_closed_end_says_how_much_is_left(self):
        read_end, write_end = os.pipe()
        target_r, target_w = os.pipe()
        os.write(write_end, b"abc")
        os.close(write_end)
        try:
            with self.assertRaises(zygote.SpliceError) as caught:
                zygote._splice_exactly(read_end, target_w, 10)
            self.assertEqual(caught.exception.left, 7)
            self.assertEqual(os.read(target_r, 10), b"abc")
        finally:
            for fd in (read_end, target_r, target_w):
                os.close(fd)


class Rehearsal(unittest.TestCase):
    def test_the_canned_job_holds_no_input_of_anyone(self):
        job = zygote.REHEARSAL_JOB
        self.assertEqual(set(job), {"mode", "timeout_ms", "input", "code"})
        compile(job["code"], "main.py", "exec")
        self.assertIn("__COZE_RETURN_VAL_START__", job["code"])


if __name__ == "__main__":
    unittest.main()
