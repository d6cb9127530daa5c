"""Unit tests of frames.py: the 16-byte header between the service and a zygote."""

import unittest

from faas_python import frames


class Frames(unittest.TestCase):
    def test_a_header_is_16_bytes_big_endian(self):
        header = frames.pack(frames.OUT, run=0x01020304, stream=2, flags=frames.OOM,
                             argument=0x0A0B0C0D, length=0x10203040)
        self.assertEqual(header, bytes([11, 2, 0, 2, 1, 2, 3, 4, 10, 11, 12, 13,
                                        0x10, 0x20, 0x30, 0x40]))

    def test_unpack_reverses_pack(self):
        fields = (frames.EXIT, 0, frames.TIMED_OUT | frames.STOPPED, 7, 9, 0)
        kind, stream, flags, run, argument, length = fields
        self.assertEqual(frames.unpack(frames.pack(kind, run, stream, flags, argument, length)),
                         fields)

    def test_kinds_and_flags_are_distinct(self):
        self.assertEqual(len({frames.RUN, frames.STOP, frames.READY, frames.OUT, frames.EXIT}), 5)
        self.assertEqual(frames.TIMED_OUT | frames.OOM | frames.STOPPED, 7)


if __name__ == "__main__":
    unittest.main()
