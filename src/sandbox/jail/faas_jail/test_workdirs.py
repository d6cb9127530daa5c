"""Unit tests of workdirs.py: a live jailer's work dir is locked, a dead one's is removed."""

import fcntl
import os
import tempfile
import unittest

from faas_jail import workdirs


def make_workdir(parent, name, lock=True):
    path = os.path.join(parent, name)
    os.mkdir(path)
    if lock:
        open(os.path.join(path, workdirs.LOCK), "w").close()
    return path


class Workdirs(unittest.TestCase):
    def setUp(self):
        self.parent = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(self.parent, ignore_errors=True))
        self.own = make_workdir(self.parent, "faas-py-own", lock=False)

    def test_a_held_work_dir_is_not_stale_and_a_released_one_is(self):
        fd = workdirs.hold(self.own)
        self.assertEqual(os.listdir(self.own), [workdirs.LOCK])
        other = os.open(os.path.join(self.own, workdirs.LOCK), os.O_RDONLY)
        try:
            with self.assertRaises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
        self.assertFalse(workdirs.is_stale(self.own))
        os.close(fd)
        self.assertTrue(workdirs.is_stale(self.own))

    def test_sweep_removes_dead_jails_only(self):
        dead = make_workdir(self.parent, "faas-js-dead")
        starting = make_workdir(self.parent, "faas-py-starting", lock=False)
        unrelated = make_workdir(self.parent, "other-dead")
        live = make_workdir(self.parent, "faas-py-live", lock=False)
        held = workdirs.hold(live)
        self.addCleanup(os.close, held)
        cgroups = os.path.join(self.parent, "cgroup")
        os.makedirs(os.path.join(cgroups, "faas-js-dead", "s0"))
        os.makedirs(os.path.join(cgroups, "faas-py-live", "s0"))
        removed = workdirs.sweep(self.own, [cgroups])
        self.assertEqual(removed, ["faas-js-dead"])
        self.assertFalse(os.path.exists(dead))
        for path in (starting, unrelated, live, self.own):
            self.assertTrue(os.path.isdir(path), path)
        self.assertEqual(os.listdir(cgroups), ["faas-py-live"])

    def test_a_symlink_is_never_followed(self):
        target = make_workdir(self.parent, "target")
        os.symlink(target, os.path.join(self.parent, "faas-py-link"))
        self.assertEqual(workdirs.sweep(self.own), [])
        self.assertTrue(os.path.isdir(target))


if __name__ == "__main__":
    unittest.main()
