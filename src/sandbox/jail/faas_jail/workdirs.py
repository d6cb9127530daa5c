"""Work dirs of jails: each live jailer holds a lock in its own; a starting jailer removes the
dirs (and the cgroups named after them) of jails that died without cleaning up.

A work dir (see ../workdir.ts) is `faas-<label>-<random>` under the temp dir; the cgroups of its
slots are `<base>/<same name>/s<n>`. Its lock, `.lock`, is made locked (under another name, then
renamed), so a dir with an unlocked `.lock` belongs to no live jailer.
"""

import fcntl
import os
import shutil
import stat

from faas_jail.slots import remove_cgroup

LOCK = ".lock"
PREFIX = "faas-"


def hold(workdir):
    """Locks `workdir` for this process's life; returns the lock's fd (inherited by forks)."""
    temporary = os.path.join(workdir, ".lock-%d" % os.getpid())
    fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.rename(temporary, os.path.join(workdir, LOCK))
    return fd


def is_stale(path):
    """True when `path` is a work dir of this user whose jailer is gone."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        return False  # a symlink, a file, or someone else's
    try:
        fd = os.open(os.path.join(path, LOCK), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False  # not a work dir (yet): nothing to judge
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False  # held: a live jailer's
    finally:
        os.close(fd)


def sweep(workdir, cgroup_parents=()):
    """Removes the stale work dirs beside `workdir` and their cgroups under each of
    `cgroup_parents` (empty ones only: the kernel refuses others); returns their names."""
    parent = os.path.dirname(workdir)
    removed = []
    for name in sorted(os.listdir(parent)):
        path = os.path.join(parent, name)
        if not name.startswith(PREFIX) or path == workdir or not is_stale(path):
            continue
        for cgroups in cgroup_parents:
            remove_cgroup(os.path.join(cgroups, name))
        shutil.rmtree(path, ignore_errors=True)
        removed.append(name)
    return removed

