# -*- test-case-name: tests.test_exec_layers -*-
"""
The seccomp policy, compiled once per zygote and loaded in each child.

pyseccomp (libseccomp) compiles the policy to classic BPF at zygote start;
each child then loads the precompiled program with one ``seccomp(2)`` call,
so a call pays no compile cost.

The policy is an allowlist, so a syscall the kernel adds later is denied
too.  The default action is ``SECCOMP_RET_USER_NOTIF`` where the kernel
has it: the calling thread stops, the kernel tells the zygote (which holds
the child's listener) which syscall it was, and the zygote kills the
process; the syscall never runs, and no handler of the function's ever
sees it.  Otherwise it is ``SECCOMP_RET_KILL_PROCESS``: the whole process
dies at once, before any handler (a SIGSYS handler, even one an ``exec``
binary installs, never runs), and the zygote reads "killed by SIGSYS" from
the exit status the kernel gives it.  Sending SIGSYS is itself denied
(``kill``, ``tgkill``, ``rt_sigqueueinfo``...), so a function cannot fake
that exit: trying to is a forbidden syscall.

What is left out on purpose: sockets (``socket`` returns EACCES in the
``exec`` runtime, whose interpreters probe nscd through NSS at start-up),
new processes (``fork``, ``vfork``, ``clone`` without ``CLONE_THREAD``;
``clone3`` returns ENOSYS so libc falls back to ``clone``, whose flags BPF
can read), ``execve`` for python, tracing, namespaces and mounts, AIO,
SysV IPC, io_uring, userfaultfd, ``perf_event_open``, ``bpf``, keyrings,
inotify/fanotify, ``listmount``/``statmount``, modules and machine state.
Calls that take a target process (``prlimit64``, ``sched_*``,
``setpriority``, ``ioprio_set``, ``kill``...) are allowed only with pid 0
or 1: each child is pid 1 of its own PID namespace, so those name itself
(its threads have other ids, so a thread may still target itself by 0).
libseccomp kills any call from a foreign architecture (x32, i386).
"""

import ctypes
import errno
import os
import signal

CLONE_THREAD = 0x00010000
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME
CLONE_NEW_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                   0x40000000, 0x00000080)

_SYS_SECCOMP = 317
_SECCOMP_SET_MODE_FILTER = 1
_PR_SET_NO_NEW_PRIVS = 38

#: Syscalls every runtime may make with any arguments.
ALLOWED = (
    # files and fds (the mount tree, Landlock and the uid decide which files)
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2",
    "pwritev2", "open", "openat", "openat2", "close", "close_range", "creat", "lseek",
    "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs", "access", "faccessat",
    "faccessat2", "readlink", "readlinkat", "getdents", "getdents64", "getcwd", "chdir",
    "fchdir", "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat",
    "renameat2", "link", "linkat", "symlink", "symlinkat", "chmod", "fchmod", "fchmodat",
    "fchmodat2", "truncate", "ftruncate", "fallocate", "fsync", "fdatasync", "sync_file_range",
    "utime", "utimes", "utimensat", "futimesat", "umask", "flock", "fcntl", "ioctl",
    "dup", "dup2", "dup3", "pipe", "pipe2", "sendfile", "copy_file_range", "splice", "tee",
    "fadvise64", "readahead", "mknod", "mknodat",
    # waiting and time
    "poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl",
    "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "timerfd_create",
    "timerfd_settime", "timerfd_gettime", "nanosleep", "clock_nanosleep", "clock_gettime",
    "clock_getres", "gettimeofday", "time", "times", "alarm", "setitimer", "getitimer",
    "pause", "futex", "futex_waitv", "sched_yield",
    # memory
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "msync", "mincore",
    "membarrier",
    # signals, on itself (see _SELF_TARGETED for sending them)
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigtimedwait",
    "rt_sigsuspend", "sigaltstack", "signalfd", "signalfd4", "restart_syscall",
    # threads and process identity
    "set_tid_address", "set_robust_list", "get_robust_list", "rseq", "arch_prctl", "gettid",
    "getpid", "getppid", "getpgrp", "getpgid", "getsid", "getuid", "geteuid", "getgid",
    "getegid", "getresuid", "getresgid", "getgroups", "capget", "uname", "sysinfo",
    "getrusage", "getrlimit", "getrandom", "getcpu", "exit", "exit_group",
    "sched_getaffinity", "sched_getparam", "sched_getscheduler", "sched_get_priority_max",
    "sched_get_priority_min", "sched_rr_get_interval", "getpriority", "ioprio_get",
)

#: prctl options a function may not use: PR_SET_PDEATHSIG (1) would let it
#: outlive a dead template and zygote, unsupervised.
_PRCTL_DENIED = (1,)
_PR_SET_VMA = 0x53564D41

#: Target-process calls: allowed only when the pid argument (index) is 0 or 1.
_SELF_TARGETED = {
    "prlimit64": 0, "sched_setaffinity": 0, "sched_setparam": 0, "sched_setscheduler": 0,
    "sched_setattr": 0, "sched_getattr": 0, "setpriority": 1, "ioprio_set": 1,
    "kill": 0, "tgkill": 0, "rt_sigqueueinfo": 0, "rt_tgsigqueueinfo": 0,
}
#: Signal-sending calls and the index of their signal argument: SIGSYS is never allowed.
_SIGNAL_ARG = {"kill": 1, "tkill": 1, "tgkill": 2, "rt_sigqueueinfo": 1,
               "rt_tgsigqueueinfo": 2}

#: Named in tests and in ``orb sandbox-check``: denied (by being absent from ALLOWED).
MUST_DENY = (
    "socket", "connect", "bind", "ptrace", "process_vm_readv", "mount", "unshare", "setns",
    "pivot_root", "chroot", "bpf", "keyctl", "add_key", "io_uring_setup", "userfaultfd",
    "perf_event_open", "io_setup", "io_submit", "shmget", "shmat", "semget", "msgget",
    "inotify_init1", "fanotify_init", "listmount", "statmount", "open_by_handle_at",
    "fork", "vfork", "setsid", "setpgid", "memfd_create", "execveat", "pidfd_open",
    "pidfd_send_signal", "pidfd_getfd", "kcmp", "setuid", "setresuid", "capset",
    "chown", "fchown", "fchownat", "lchown", "setxattr", "fsetxattr", "lsetxattr",
)


def _add(flt, action, name, *args) -> None:
    try:
        flt.add_rule(action, name, *args)
    except (OSError, ValueError, RuntimeError):
        # A syscall this libseccomp or architecture does not know cannot be
        # called either.
        pass


def compile_policy(runtime: str, notify: bool = False) -> bytes:
    """The classic-BPF program for ``runtime`` (``python`` or ``exec``).

    With ``notify``, a denied syscall is not killed by the kernel but handed
    to the supervisor (``SECCOMP_RET_USER_NOTIF``): the kernel tells it which
    syscall it was, and it kills the process.  The syscall never runs either
    way; if the supervisor is gone it fails with ENOSYS."""
    import pyseccomp as sc

    if runtime not in ("python", "exec"):
        raise ValueError(f"unknown runtime {runtime!r}")
    flt = sc.SyscallFilter(defaction=sc.NOTIFY if notify else sc.KILL_PROCESS)
    try:
        # A binary tree of syscall numbers instead of a linear list: the
        # kernel emulates the filter once per syscall number when it loads
        # it (to cache the always-allowed ones), so a linear list of ~200
        # rules costs ~0.6 ms per child; the tree, a fraction of that.
        flt.set_attr(sc.Attr.CTL_OPTIMIZE, 2)
    except (AttributeError, OSError, ValueError, RuntimeError):
        pass
    for name in ALLOWED:
        _add(flt, sc.ALLOW, name)
    for name, pid_arg in _SELF_TARGETED.items():
        sig_arg = _SIGNAL_ARG.get(name)
        for pid in (0, 1):
            if sig_arg is None:
                _add(flt, sc.ALLOW, name, sc.Arg(pid_arg, sc.EQ, pid))
            else:
                _add(flt, sc.ALLOW, name, sc.Arg(pid_arg, sc.EQ, pid),
                     sc.Arg(sig_arg, sc.NE, signal.SIGSYS))
    # prctl: the denied options fail with EPERM; any other option below 128
    # (all there are, and no upper bits set), and PR_SET_VMA, are allowed.
    # libseccomp checks the equality rules first.
    for option in _PRCTL_DENIED:
        _add(flt, sc.ERRNO(errno.EPERM), "prctl", sc.Arg(0, sc.EQ, option))
    _add(flt, sc.ALLOW, "prctl", sc.Arg(0, sc.MASKED_EQ, 0xFFFFFFFFFFFFFF80, 0))
    _add(flt, sc.ALLOW, "prctl", sc.Arg(0, sc.EQ, _PR_SET_VMA))
    # tkill(tid, sig): a thread of its own (its pid namespace holds nothing else).
    _add(flt, sc.ALLOW, "tkill", sc.Arg(1, sc.NE, signal.SIGSYS))
    # Threads only: clone without CLONE_THREAD or with any CLONE_NEW* flag is denied.
    new_mask = 0
    for flag in CLONE_NEW_FLAGS:
        new_mask |= flag
    _add(flt, sc.ALLOW, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD | new_mask, CLONE_THREAD))
    _add(flt, sc.ERRNO(errno.ENOSYS), "clone3")
    if runtime == "exec":
        # Interpreters probe nscd through NSS at start-up and fall back on an
        # error; nothing is created either way.
        _add(flt, sc.ERRNO(errno.EACCES), "socket")
        _add(flt, sc.ERRNO(errno.EACCES), "socketpair")
        # The mount tree and Landlock's EXECUTE right limit what it can run.
        _add(flt, sc.ALLOW, "execve")
    return _export(flt)


def _export(flt) -> bytes:
    fd = os.memfd_create("orb-seccomp", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "rb") as f:
            flt.export_bpf(f)
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    prog = b"".join(chunks)
    if not prog or len(prog) % 8:
        raise RuntimeError("libseccomp exported a malformed filter")
    return prog


#: Syscalls newer than the libseccomp a host may have installed, so that a
#: notification still names them.  From 424 on every architecture but alpha
#: shares these numbers (asm-generic/unistd.h); uretprobe is x86_64's own.
RECENT_SYSCALLS = {
    457: "statmount", 458: "listmount", 459: "lsm_get_self_attr", 460: "lsm_set_self_attr",
    461: "lsm_list_modules", 462: "mseal", 463: "setxattrat", 464: "getxattrat",
    465: "listxattrat", 466: "removexattrat", 467: "open_tree_attr", 468: "file_getattr",
    469: "file_setattr",
}
RECENT_X86_64 = {335: "uretprobe"}


def _recent_name(nr: int, machine: str) -> str | None:
    if machine == "x86_64" and nr in RECENT_X86_64:
        return RECENT_X86_64[nr]
    if machine != "alpha":
        return RECENT_SYSCALLS.get(nr)
    return None


def syscall_name(nr: int) -> str:
    """The name of native syscall ``nr`` (libseccomp's, or for syscalls it
    does not know yet, :data:`RECENT_SYSCALLS`), or ``syscall <nr>``."""
    name = None
    try:
        import pyseccomp as sc

        got = sc.resolve_syscall(sc.system_arch(), nr)
        name = got.decode() if isinstance(got, bytes) else str(got)
    except Exception:
        pass
    if not name or name.startswith("syscall") or name.isdigit():
        name = _recent_name(nr, os.uname().machine) or f"syscall {nr}"
    return name


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int


def set_no_new_privs() -> None:
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "prctl(PR_SET_NO_NEW_PRIVS)")


_SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
_SYS_PIDFD_GETFD = 438
# _IOWR('!', 0, struct seccomp_notif): the struct is 80 bytes (id, pid,
# flags, then seccomp_data: nr, arch, instruction pointer, 6 arguments).
_SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100
_NOTIF = ctypes.c_uint8 * 80


def load(prog: bytes, listener: bool = False) -> int:
    """Install a precompiled program on the calling thread (no_new_privs must
    be set).  With ``listener``, returns the notification fd."""
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = _SockFprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
    flags = _SECCOMP_FILTER_FLAG_NEW_LISTENER if listener else 0
    res = _libc.syscall(
        _SYS_SECCOMP, ctypes.c_uint(_SECCOMP_SET_MODE_FILTER), ctypes.c_uint(flags),
        ctypes.byref(fprog)
    )
    if res < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp(SET_MODE_FILTER): {os.strerror(err)}")
    return int(res)


def take_fd(pidfd: int, fd: int) -> int:
    """A copy of another process's ``fd`` (pidfd_getfd), close-on-exec."""
    res = _libc.syscall(_SYS_PIDFD_GETFD, ctypes.c_int(pidfd), ctypes.c_int(fd), ctypes.c_uint(0))
    if res < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"pidfd_getfd: {os.strerror(err)}")
    return int(res)


def receive_notification(listener: int) -> int | None:
    """The syscall number of one pending notification, or None."""
    notif = _NOTIF()
    if _libc.ioctl(ctypes.c_int(listener), ctypes.c_ulong(_SECCOMP_IOCTL_NOTIF_RECV),
                   ctypes.byref(notif)) != 0:
        return None
    return int.from_bytes(bytes(notif[16:20]), "little", signed=True)


def available() -> bool:
    """Whether this kernel has seccomp filters and libseccomp loads."""
    try:
        import pyseccomp  # noqa: F401
    except Exception:
        return False
    try:
        with open("/proc/sys/kernel/seccomp/actions_avail") as f:
            actions = f.read().split()
    except OSError:
        return False
    return "kill_process" in actions and "errno" in actions


def notify_available() -> bool:
    """Whether the kernel can hand denied syscalls to the supervisor."""
    try:
        with open("/proc/sys/kernel/seccomp/actions_avail") as f:
            return "user_notif" in f.read().split()
    except OSError:
        return False
