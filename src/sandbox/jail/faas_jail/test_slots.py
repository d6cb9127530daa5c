"""Unit tests of slots.py: uid ranges claimed with lock files, network namespaces made ahead."""

import fcntl
import os
import tempfile
import unittest
from unittest import mock

from faas_jail import slots


class ClaimUidRange(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)
        patch = mock.patch.object(slots, "LOCK_DIRS", (self.dir.name + "/ranges",))
        patch.start()
        self.addCleanup(patch.stop)
        self.fds = []
        self.addCleanup(lambda: [os.close(fd) for fd in self.fds])

    def claim(self, count=10):
        base, fd = slots.claim_uid_range(count)
        self.fds.append(fd)
        return base

    def test_ranges_follow_each_other_while_held(self):
        with mock.patch.object(slots, "mapped_uids", lambda: 1 << 32):
            first = self.claim()
            self.assertEqual(first, slots.HOST_UIDS_START)
            self.assertEqual(self.claim(), first + slots.HOST_RANGE_SIZE)

    def test_inside_a_small_uid_map_ranges_stay_below_nobody(self):
        with mock.patch.object(slots, "mapped_uids", lambda: 65_536):
            first = self.claim(300)
            second = self.claim(300)
        self.assertEqual(first, slots.MAPPED_UIDS_START)
        self.assertEqual(second, first + 512)  # whole blocks of 256
        self.assertLess(second + 300, 65_534)

    def test_a_range_is_free_again_once_its_lock_is_closed(self):
        first = self.claim()
        os.close(self.fds.pop())
        self.assertEqual(self.claim(), first)

    def test_a_lock_another_process_holds_is_skipped(self):
        first = slots.uid_ranges(10, slots.mapped_uids())[0]
        step = slots.uid_ranges(10, slots.mapped_uids())[1] - first
        os.makedirs(self.dir.name + "/ranges")
        path = "%s/ranges/%d.lock" % (self.dir.name, first)
        locked_r, locked_w = os.pipe()
        done_r, done_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            fd = os.open(path, os.O_RDWR | os.O_CREAT)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(locked_w, b"x")
            os.read(done_r, 1)  # until the parent is done
            os._exit(0)
        try:
            self.assertEqual(os.read(locked_r, 1), b"x")
            self.assertEqual(self.claim(), first + step)
        finally:
            os.write(done_w, b"x")
            os.waitpid(pid, 0)
            for fd in (locked_r, locked_w, done_r, done_w):
                os.close(fd)

    def test_too_many_slots_for_one_range(self):
        with mock.patch.object(slots, "mapped_uids", lambda: 1 << 32):
            with self.assertRaises(ValueError):
                slots.claim_uid_range(slots.HOST_RANGE_SIZE + 1)

    def test_every_range_taken(self):
        with mock.patch.object(slots, "uid_ranges", lambda count, limit: [100_000, 200_000]):
            self.claim()
            self.claim()
            with self.assertRaises(OSError):
                self.claim()


@unittest.skipUnless(os.geteuid() == 0, "making network namespaces needs root")
class NetnsPool(unittest.TestCase):
    def test_namespaces_made_ahead_are_new_and_the_maker_stays_home(self):
        own = os.readlink("/proc/self/ns/net")
        pool = slots.NetnsPool()
        pool.make()
        self.assertEqual(pool.ready, 1)
        fd = pool.take()
        second = pool.take()  # none ready: made now
        try:
            self.assertEqual(pool.ready, 0)
            made = {os.readlink("/proc/self/fd/%d" % fd), os.readlink("/proc/self/fd/%d" % second)}
            self.assertEqual(len(made), 2)
            self.assertNotIn(own, made)
            self.assertEqual(os.readlink("/proc/self/ns/net"), own)
        finally:
            os.close(fd)
            os.close(second)


if __name__ == "__main__":
    unittest.main()
