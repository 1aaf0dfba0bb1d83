# -*- test-case-name: tests.test_exec_jail -*-
"""
Namespaces, the per-call root and the per-call identity.

Each jailed child gets, before any function code runs:

- its own PID namespace, in which it is pid 1 (the zygote forks it with
  :func:`fork_in_new_pidns`), so it can name no other process, and when it
  dies the kernel kills whatever is left in it;
- its own mount, IPC and UTS namespaces (:func:`unshare_call_namespaces`):
  SysV objects and scratch mounts die with the call;
- a root of its own (:class:`RootPlan`, :func:`build_root`,
  :func:`finish_root`): a small tmpfs holding only the runtime's files and
  the package, bound read-only, a size- and inode-capped tmpfs scratch at
  ``/tmp``, ``/dev/null``, ``/dev/zero``, ``/dev/urandom`` and
  ``/dev/random``, no ``/proc``, then ``pivot_root`` into it and the old
  root detached, so no host path can be named or stat'ed;
- an identity that owns nothing (:class:`UidPool`): a uid and gid from a
  configured range that no other running call holds, when the peer runs as
  root.  A non-root peer runs the zygote in a user namespace
  (:func:`enter_user_namespace`), and each call in a user namespace of its
  own nested in it (:func:`enter_call_user_namespace`), as a uid from the
  same pool, with no capabilities, on mounts it cannot change; the host
  sees the peer's uid.

The network namespace is the zygote's (empty) one.
"""

import collections
import ctypes
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

_SYS_PIVOT_ROOT = 155

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

#: Where the call's package and scratch appear inside its root.
PKG_DIR = "/pkg"
SCRATCH_DIR = "/tmp"
DEV_FILES = ("null", "zero", "urandom", "random")


class NamespaceError(OSError):
    """A namespace, mount or identity step failed; the message names it."""


def _fail(what: str):
    err = ctypes.get_errno()
    raise NamespaceError(err, f"{what}: {os.strerror(err)}")


def _enc(v):
    return v.encode() if isinstance(v, str) else v


def unshare(flags: int, what: str = "unshare") -> None:
    if _libc.unshare(ctypes.c_int(flags)) != 0:
        _fail(what)


def mount(source, target, fstype, flags, data=None, what: str = "mount") -> None:
    if _libc.mount(_enc(source), _enc(target), _enc(fstype), ctypes.c_ulong(flags),
                   _enc(data)) != 0:
        _fail(f"{what} ({target})")


def bind_ro(source: str, target: str, noexec: bool = True) -> None:
    """Bind ``source`` at ``target``, then make the bind read-only, nosuid, nodev."""
    mount(source, target, None, MS_BIND | MS_REC, what="bind")
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | (MS_NOEXEC if noexec else 0)
    mount(None, target, None, flags, what="read-only remount")


def fork_in_new_pidns(own_pidns_fd: int | None) -> int:
    """``os.fork()`` with the child as pid 1 of a new PID namespace.

    unshare(CLONE_NEWPID) changes only where the next child goes, and it
    works once per namespace; setns back to our own afterwards lets the next
    fork get a fresh one again."""
    if own_pidns_fd is None:
        return os.fork()
    unshare(CLONE_NEWPID, "unshare(CLONE_NEWPID)")
    pid = -1
    try:
        pid = os.fork()
        return pid
    finally:
        if pid != 0 and _libc.setns(own_pidns_fd, CLONE_NEWPID) != 0:
            _fail("setns back to the zygote's PID namespace")


def unshare_call_namespaces() -> None:
    """Mount, IPC and UTS namespaces of the child's own."""
    unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS, "unshare(mount, IPC, UTS)")


class RootPlan:
    """What goes into every child's root: read-only runtime trees and symlinks."""

    def __init__(self, mountpoint: str, ro_dirs: list[str], symlinks: dict[str, str]):
        self.mountpoint = mountpoint  # an empty dir in the zygote's mount namespace
        self.ro_dirs = ro_dirs  # host dirs bound at the same path, read-only
        self.symlinks = symlinks  # e.g. {"/bin": "usr/bin"} for a merged /usr


def _mkdirs(root: str, path: str) -> str:
    target = root + path
    os.makedirs(target, mode=0o755, exist_ok=True)
    return target


def build_root(plan: RootPlan) -> None:
    """The call-independent part of the root, built once in the zygote's
    mount namespace; every child's mount namespace starts as a copy.  Its
    tmpfs is shared, so each child makes its copy of it read-only before any
    function code runs (:func:`finish_root`)."""
    root = plan.mountpoint
    mount("orb-root", root, "tmpfs", MS_NOSUID | MS_NODEV,
          "size=1m,nr_inodes=512,mode=0755", what="root tmpfs")
    for path in plan.ro_dirs:
        bind_ro(path, _mkdirs(root, path), noexec=False)
    for link, target in plan.symlinks.items():
        os.symlink(target, root + link)
    _mkdirs(root, "/dev")
    for name in DEV_FILES:
        target = f"{root}/dev/{name}"
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o666))
        mount(f"/dev/{name}", target, None, MS_BIND, what="bind /dev")
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NOEXEC, what="remount /dev")
    _mkdirs(root, PKG_DIR)
    _mkdirs(root, SCRATCH_DIR)


def finish_root(plan: RootPlan, package_dir: str, exec_pkg: bool, scratch_bytes: int,
                scratch_inodes: int, uid: int, gid: int) -> None:
    """Bind the package, mount the scratch, pivot into the root, detach the old one."""
    root = plan.mountpoint
    bind_ro(package_dir, root + PKG_DIR, noexec=not exec_pkg)
    mount("orb-scratch", root + SCRATCH_DIR, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
          f"size={max(scratch_bytes, 4096)},nr_inodes={scratch_inodes},mode=0700,"
          f"uid={uid},gid={gid}", what="scratch tmpfs")
    os.chdir(root)
    if _libc.syscall(_SYS_PIVOT_ROOT, b".", b".") != 0:
        _fail("pivot_root")
    if _libc.umount2(b".", MNT_DETACH) != 0:
        _fail("detach the old root")
    os.chdir("/")
    mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV,
          what="read-only root")


def become(uid: int | None, gid: int | None) -> None:
    """Take the call's uid and gid (and no groups); every capability goes with root."""
    if uid is None:
        return
    if _libc.setgroups(ctypes.c_size_t(0), None) != 0:
        _fail("setgroups")
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def enter_user_namespace() -> None:
    """For a non-root peer: become root of a new user namespace mapped to us."""
    uid, gid = os.geteuid(), os.getegid()
    unshare(CLONE_NEWUSER, "unshare(CLONE_NEWUSER)")
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")


def open_proc_self() -> int:
    """This process's /proc dir, opened while /proc is still reachable (before
    ``pivot_root``), for :func:`enter_call_user_namespace`."""
    return os.open("/proc/self", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def enter_call_user_namespace(proc_fd: int, inside_id: int) -> None:
    """A non-root peer's call: a user namespace of its own, nested in the
    zygote's, where it is ``inside_id`` (its uid and gid), mapped to the
    zygote's one id.  The task count that RLIMIT_NPROC bounds is kept per
    user namespace and uid, so each call's is its own, not one shared by
    every call of the peer.  The mount namespace stays the zygote's
    namespace's: the call holds no capability over its own mounts.

    The map files are opened through ``proc_fd`` after the unshare (a map
    file belongs to the namespace its opener is in), once the root is
    pivoted and no /proc is left to name them by path."""
    unshare(CLONE_NEWUSER, "unshare(CLONE_NEWUSER) for the call")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{inside_id} 0 1"),
                       ("gid_map", f"{inside_id} 0 1")):
        fd = os.open(name, os.O_WRONLY | os.O_CLOEXEC, dir_fd=proc_fd)
        try:
            os.write(fd, text.encode())
        except OSError as e:
            raise NamespaceError(e.errno, f"write {name} of the call's user namespace: "
                                 f"{e.strerror}") from None
        finally:
            os.close(fd)
    if os.getuid() != inside_id:
        raise NamespaceError(0, "the call's user namespace did not map its uid")


UID_LEASE_DIR = "/run/orb-uid-leases"


class UidPool:
    """Per-call uids (gid = uid) from ``[base, base + size)``, none shared by
    two live calls, of this executor or of any other on the host (a tracker
    and peers on one machine, or two test runs, draw from the same range):
    each uid in use is leased with an exclusive ``flock`` on
    ``<lease_dir>/<uid>``, which the kernel releases if this process dies."""

    def __init__(self, base: int, size: int, lease_dir: str | None = UID_LEASE_DIR):
        import random

        self.base = base
        self.size = size
        # First in, first out: a uid waits as long as possible before reuse;
        # start at a random place so that executors rarely contend.
        start = random.SystemRandom().randrange(size) if size else 0
        self._free = collections.deque(base + (start + i) % size for i in range(size))
        self._used: dict[int, int | None] = {}  # uid -> the fd holding its lease
        self._lease_dir = self._prepare(lease_dir)

    @staticmethod
    def _prepare(lease_dir):
        """The lease directory, made 0700 and owned by us; None (no cross-process
        leases) when it cannot be made safely."""
        if lease_dir is None:
            return None
        try:
            os.makedirs(lease_dir, mode=0o700, exist_ok=True)
            st = os.lstat(lease_dir)
        except OSError:
            return None
        import stat

        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            return None
        return lease_dir

    def _lease(self, uid: int):
        """The fd of a held lease on ``uid``, or False if another process holds it."""
        if self._lease_dir is None:
            return None
        import fcntl

        try:
            fd = os.open(os.path.join(self._lease_dir, str(uid)), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        return fd

    def take(self) -> int | None:
        for _ in range(len(self._free)):
            uid = self._free.popleft()
            fd = self._lease(uid)
            if fd is False:  # another executor's call has it: try the next
                self._free.append(uid)
                continue
            self._used[uid] = fd
            return uid
        return None

    def give_back(self, uid: int | None) -> None:
        if uid is not None and uid in self._used:
            fd = self._used.pop(uid)
            if fd is not None:
                os.close(fd)  # releases the lease
            self._free.append(uid)

    @property
    def in_use(self) -> int:
        return len(self._used)

    def drop_leases(self) -> None:
        """In a forked child: close this process's copies of the lease fds
        (the parent's leases stay held; the child must not keep them)."""
        for fd in self._used.values():
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass


def remove_tree(root: str) -> None:
    """Delete ``root`` without recursion (no tree is too deep for it), each
    directory scanned once, and never crossing into another filesystem (a
    mount below ``root`` is left alone, not emptied)."""
    try:
        dev = os.lstat(root).st_dev
    except OSError:
        return
    stack = [(root, False)]
    while stack:
        path, scanned = stack.pop()
        if scanned:
            try:
                os.rmdir(path)
            except OSError:
                pass
            continue
        stack.append((path, True))
        try:
            entries = list(os.scandir(path))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
                if st.st_dev != dev:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, False))
                else:
                    os.unlink(entry.path)
            except OSError:
                pass
