"""Unit tests of layers.py: the arguments each layer prepares, and, as root, the layers a
freshly cloned child enters."""

import os
import resource
import select
import signal
import unittest

from faas_jail import layers

ROOT = os.geteuid() == 0


def in_child(flags, check):
    """Runs `check()` in a child cloned with `flags`; its return value (a short string)."""
    read_end, write_end = os.pipe()
    pid = layers.clone(flags)
    if pid == 0:
        try:
            os.write(write_end, str(check()).encode())
        except BaseException as exc:  # noqa: BLE001 - the parent sees what went wrong
            os.write(write_end, ("raised %r" % exc).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    result = os.read(read_end, 1000).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    return result


class Prepared(unittest.TestCase):
    def test_tmpfs_options(self):
        self.assertEqual(layers.tmpfs_options(1024, 16, 1000),
                         "size=1024,nr_inodes=16,mode=0700,uid=1000,gid=1000")

    def test_limits_resolve_their_names_once(self):
        limits = layers.Limits({"NOFILE": 64, "CORE": 0})
        self.assertEqual(limits.pairs, ((resource.RLIMIT_NOFILE, (64, 64)),
                                        (resource.RLIMIT_CORE, (0, 0))))
        with self.assertRaises(AttributeError):
            layers.Limits({"NO_SUCH_LIMIT": 1})

    def test_fresh_tmp_mounts_tmp_then_proc(self):
        calls = layers.FreshTmp("size=1", with_proc=True).calls
        targets = [call[1] for call in calls]
        self.assertEqual(targets[:2], [b"/", b"/tmp"])
        self.assertEqual(targets[-1], b"/proc")
        self.assertNotIn(b"/proc", [call[1] for call in layers.FreshTmp("size=1", False).calls])

    def test_limits_apply_in_a_child(self):
        def check():
            layers.Limits({"NOFILE": 64})()
            return "%s %d" % (resource.getrlimit(resource.RLIMIT_NOFILE),
                              os.getpriority(os.PRIO_PROCESS, 0))

        self.assertEqual(in_child(0, check), "(64, 64) %d" % layers.NICENESS)

    def test_close_fds_except_keeps_only_those(self):
        fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(4)]
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                layers.close_fds_except({fds[1], fds[3], write_end})
                alive = []
                for fd in (*fds, read_end):
                    try:
                        os.fstat(fd)
                        alive.append(fd)
                    except OSError:
                        pass
                os.write(write_end, str(alive).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        try:
            self.assertEqual(os.read(read_end, 100).decode(), str([fds[1], fds[3]]))
        finally:
            os.waitpid(pid, 0)
            for fd in (*fds, read_end):
                os.close(fd)


class HelperChild(unittest.TestCase):
    def test_a_helper_dies_with_its_parent_and_holds_none_of_its_pipes(self):
        """A parent (the jailer) forks a helper, then is killed: the helper goes too, and the
        parent's stdout pipe reads its end (no orphan keeps it open)."""
        out_r, out_w = os.pipe()
        pid_r, pid_w = os.pipe()
        parent = os.fork()
        if parent == 0:
            try:
                os.dup2(out_w, 1)
                me = os.getpid()
                helper = os.fork()
                if helper == 0:
                    layers.helper_child(me)
                    while True:
                        select.select([], [], [])
                os.write(pid_w, str(helper).encode())
                while True:
                    select.select([], [], [])
            finally:
                os._exit(0)
        os.close(out_w)
        os.close(pid_w)
        helper = int(os.read(pid_r, 32))
        os.close(pid_r)
        pidfd = os.pidfd_open(helper)
        try:
            os.kill(parent, signal.SIGKILL)
            os.waitpid(parent, 0)
            gone, _, _ = select.select([pidfd], [], [], 10)
            self.assertEqual(gone, [pidfd], "the helper outlived its parent")
        finally:
            os.close(pidfd)
        self.assertEqual(os.read(out_r, 10), b"", "the parent's stdout reached its end")
        os.close(out_r)


@unittest.skipUnless(ROOT, "new namespaces need root")
class Namespaces(unittest.TestCase):
    def test_a_new_pid_namespace_makes_the_child_its_init(self):
        self.assertEqual(in_child(layers.CLONE_NEWPID, os.getpid), "1")

    def test_the_host_is_named_sandbox_in_a_new_uts_namespace(self):
        def check():
            layers.set_hostname()
            return os.uname().nodename

        self.assertEqual(in_child(layers.CLONE_NEWUTS, check), "sandbox")
        self.assertNotEqual(os.uname().nodename, "sandbox")

    def test_a_fresh_tmp_is_empty_and_private(self):
        marker = "/tmp/faas-layers-test-%d" % os.getpid()
        open(marker, "w").close()
        try:
            def check():
                layers.FreshTmp(layers.tmpfs_options(1 << 20, 64, 0), with_proc=False)()
                return os.listdir("/tmp")

            self.assertEqual(in_child(layers.CLONE_NEWNS, check), "[]")
            self.assertTrue(os.path.exists(marker), "the host's /tmp is untouched")
        finally:
            os.remove(marker)

    def test_dropping_identity_leaves_no_group_and_no_way_back(self):
        def check():
            layers.drop_identity(1_999_999)
            try:
                os.setuid(0)
                back = "back to root"
            except PermissionError:
                back = "no way back"
            return "%s %s %s" % (os.getresuid(), os.getgroups(), back)

        self.assertEqual(in_child(0, check),
                         "(1999999, 1999999, 1999999) [] no way back")


if __name__ == "__main__":
    unittest.main()
