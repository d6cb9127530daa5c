"""Unit tests of prefault.py: finding the pages a process owns alone and copying ranges."""

import ctypes
import io
import os
import struct
import unittest

from faas_python import prefault

PAGE = prefault.PAGE
MAPS = """\
55d0c0a00000-55d0c0a21000 r--p 00000000 fe:00 1234 /usr/bin/python3.11
55d0c0c00000-55d0c0c40000 rw-p 00200000 fe:00 1234 /usr/bin/python3.11
55d0c1000000-55d0c1100000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
7f0000100000-7f0000101000 ---p 00000000 00:00 0
7f0000200000-7f0000210000 rw-s 00000000 00:05 77 /dev/zero (deleted)
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
7ffd00100000-7ffd00102000 r--p 00000000 00:00 0 [vvar]
"""


class Ranges(unittest.TestCase):
    def test_only_private_anonymous_writable_mappings(self):
        self.assertEqual(prefault.private_writable_ranges(MAPS), [
            (0x55D0C1000000, 0x55D0C1100000),
            (0x7F0000000000, 0x7F0000100000),
            (0x7FFD00000000, 0x7FFD00021000),
        ])


class OwnedPages(unittest.TestCase):
    def test_present_and_exclusive_pages_only(self):
        entries = [prefault.PAGEMAP_PRESENT | prefault.PAGEMAP_EXCLUSIVE,
                   prefault.PAGEMAP_PRESENT,
                   prefault.PAGEMAP_EXCLUSIVE,
                   0,
                   prefault.PAGEMAP_PRESENT | prefault.PAGEMAP_EXCLUSIVE]
        start = 16 * PAGE
        pagemap = io.BytesIO(b"\0" * 8 * 16 + b"".join(struct.pack("Q", e) for e in entries))
        pages = prefault.owned_pages([(start, start + 5 * PAGE)], pagemap)
        self.assertEqual(pages, [start, start + 4 * PAGE])


class Coalesce(unittest.TestCase):
    def test_near_pages_join_far_ones_do_not(self):
        pages = [3 * PAGE, 0, PAGE, 100 * PAGE]  # a hole of one page after the first two
        self.assertEqual(prefault.coalesce(pages, gap=1),
                         [(0, 4 * PAGE), (100 * PAGE, PAGE)])
        self.assertEqual(prefault.coalesce(pages, gap=0),
                         [(0, 2 * PAGE), (3 * PAGE, PAGE), (100 * PAGE, PAGE)])

    def test_the_total_is_bounded(self):
        spans = prefault.coalesce([i * 10 * PAGE for i in range(100)], gap=0, limit=7)
        self.assertEqual(len(spans), 7)


class OnThisProcess(unittest.TestCase):
    def test_a_page_this_process_wrote_is_found(self):
        buffer = bytearray(8 * PAGE)
        for offset in range(0, len(buffer), PAGE):
            buffer[offset] = 1
        address = ctypes.addressof((ctypes.c_char * len(buffer)).from_buffer(buffer))
        page = (address + PAGE - 1) // PAGE * PAGE
        measure = prefault.Measure()
        spans = measure()
        self.assertTrue(any(start <= page < start + length for start, length in spans), spans)
        for start, length in spans:
            self.assertEqual((start % PAGE, length % PAGE), (0, 0))

    @unittest.skipUnless(prefault.supported(), "no MADV_POPULATE_WRITE here")
    def test_a_forked_child_copies_the_ranges_ahead(self):
        buffer = bytearray(64 * PAGE)
        for offset in range(0, len(buffer), PAGE):
            buffer[offset] = 1
        address = ctypes.addressof((ctypes.c_char * len(buffer)).from_buffer(buffer))
        start = (address + PAGE - 1) // PAGE * PAGE
        copy = prefault.Prefault([(start, 32 * PAGE)])
        self.assertEqual(copy.pages, 32)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                copy()
                pagemap = open("/proc/self/pagemap", "rb", buffering=0)
                owned = prefault.owned_pages([(start, start + 32 * PAGE)], pagemap)
                os.write(write_end, str(len(owned)).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        owned = int(os.read(read_end, 100))
        os.close(read_end)
        os.waitpid(pid, 0)
        self.assertEqual(owned, 32, "every page copied ahead is the child's own")


if __name__ == "__main__":
    unittest.main()
