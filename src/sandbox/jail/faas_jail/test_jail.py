"""Unit tests of jail.py, as root: sandboxes made one after another from the template root see
none of each other's files, and the jailer's own mount namespace stays as it was."""

import fcntl
import os
import shutil
import tempfile
import unittest

from faas_jail import layers, test_layers
from faas_jail.jail import Jail


def spawn(jail, slot, program, own_dir=None):
    """Runs `program()` (returning a short string) in a sandbox process of `slot`, as its
    uid: the path a spawned sandbox takes up to its exec, with the `own_dir` it asks for."""
    def sandbox():
        jail.enter(slot)
        if own_dir is not None:
            layers.own_dir(*own_dir, slot.uid)
        jail.confine(slot, {"NOFILE": 64})
        return program()

    return test_layers.in_child(jail.spawn_flags(), sandbox)


def leave_marks():
    """Writes where a sandbox may write, tries where it may not; what it could write."""
    done = []
    for path in ("/tmp/mark", "/dev/shm/mark", "/mark", "/etc/mark", "/proc/mark"):
        try:
            with open(path, "w") as file:
                file.write("secret")
            done.append(path)
        except OSError:
            pass
    return done


def find_marks():
    """What of an earlier sandbox's marks this one sees, and its mounts of /tmp."""
    seen = [path for path in ("/tmp/mark", "/dev/shm/mark", "/mark", "/etc/mark")
            if os.path.exists(path)]
    with open("/proc/self/mountinfo") as mounts:
        tmp = [line.split()[4] for line in mounts if line.split()[4] in ("/tmp", "/dev/shm")]
    return "%s %s %s" % (seen, sorted(tmp), len([n for n in os.listdir("/proc") if n.isdigit()]) < 5)


@unittest.skipUnless(os.geteuid() == 0, "a jail's layers need root")
class TemplateRoot(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="faas-jail-test-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        os.mkdir(self.dir + "/root")
        os.makedirs(self.dir + "/cache/gen")
        for path in ("/cache/db", "/cache/gen/module"):
            with open(self.dir + path, "w") as file:
                file.write("original")
        os.chmod(self.dir, 0o755)
        self.jail = Jail({
            "name": "faas-jail-test-%d" % os.getpid(), "mount_point": self.dir + "/root",
            "max_slots": 2, "memory_bytes": 256 << 20, "max_pids": 32, "cpu_weight": 100,
            "tmp_bytes": 1 << 20, "tmp_inodes": 64, "limits": {},
            "binds": [[self.dir + "/cache", "/sandbox/cache"]],
            "unix_sockets": True, "netns_ahead": 1,
        })
        self.host_mounts = self.mounts()
        self.layers = self.jail.probe()
        self.addCleanup(self.jail.close)
        if not self.layers["rootfs"]:
            self.skipTest("this host gives no root of its own")

    @staticmethod
    def mounts():
        with open("/proc/self/mountinfo") as lines:
            return sorted(line.split()[4] for line in lines)

    def test_the_template_is_built_once_and_held_close_on_exec(self):
        self.assertIsNotNone(self.jail.template)
        self.assertTrue(fcntl.fcntl(self.jail.template, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
        self.assertEqual(self.jail.spawn_flags() & layers.CLONE_NEWNS, 0)
        self.assertEqual(self.mounts(), self.host_mounts, "the host's mounts are untouched")

    def test_a_later_sandbox_of_the_same_slot_sees_nothing_of_an_earlier_one(self):
        slot = self.jail.take_slot()
        self.assertEqual(spawn(self.jail, slot, leave_marks), "['/tmp/mark', '/dev/shm/mark']")
        # Its own /tmp and /dev/shm, once each, and its own /proc.
        self.assertEqual(spawn(self.jail, slot, find_marks), "[] ['/dev/shm', '/tmp'] True")
        self.jail.give_back(slot)
        other = self.jail.take_slot()
        self.assertEqual(spawn(self.jail, other, find_marks), "[] ['/dev/shm', '/tmp'] True")

    def test_an_own_dir_is_a_sandbox_s_own_to_write_and_gone_with_it(self):
        """Each sandbox writes its own copy of a shared cache's files; the next one starts from
        the original, and no one writes the shared subdirs."""
        slot = self.jail.take_slot()

        def spawn_with_own_dir(program):
            return spawn(self.jail, slot, program, ("/sandbox/cache", "/tmp/own"))

        def tamper():
            with open("/tmp/own/db", "r+") as file:
                first = file.read()
                file.seek(0)
                file.write("poisoned")
            try:
                with open("/tmp/own/gen/module", "w") as file:
                    file.write("poisoned")
                shared = "written"
            except OSError:
                shared = "refused"
            return "%s %s %s" % (first, shared, os.stat("/tmp/own").st_uid == os.getuid())

        def look():
            with open("/tmp/own/db") as db, open("/tmp/own/gen/module") as module:
                return "%s %s" % (db.read(), module.read())

        self.assertEqual(spawn_with_own_dir(tamper), "original refused True")
        self.assertEqual(spawn_with_own_dir(look), "original original")
        with open(self.dir + "/cache/db") as db:
            self.assertEqual(db.read(), "original")

    def test_a_sandbox_cannot_change_the_template(self):
        slot = self.jail.take_slot()

        def remount():
            try:
                layers.mount(None, "/", None, layers.MS_REMOUNT | layers.MS_BIND)
                return "remounted"
            except OSError:
                return "refused"

        self.assertEqual(spawn(self.jail, slot, remount), "refused")
        self.assertEqual(spawn(self.jail, slot, leave_marks), "['/tmp/mark', '/dev/shm/mark']")


if __name__ == "__main__":
    unittest.main()
