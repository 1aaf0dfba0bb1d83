# -*- test-case-name: tests.test_exec_layers -*-
"""
The seccomp policy, compiled once per zygote and loaded in each child.

pyseccomp (libseccomp) compiles the policy to classic BPF at zygote start;
each child then loads the precompiled program with one ``seccomp(2)`` call,
so a call pays no compile cost.

Choice of actions:

- Forbidden syscalls are ``SECCOMP_RET_TRAP``.  The kernel skips the call
  and forces SIGSYS on the thread; ``si_syscall`` names the syscall.  The
  python runtime installs a SIGSYS handler (before the filter closes, and the
  filter then forbids changing it) that writes the syscall number to the
  status pipe and exits, so the result names the syscall.  An ``exec``
  runtime binary has no such handler and simply dies of SIGSYS (still
  KILLED_BY_POLICY, syscall unknown).  A forced SIGSYS cannot be blocked or
  ignored, and even a handler the code installs itself cannot make the
  forbidden call happen: TRAP never executes it.
- In the ``exec`` runtime ``socket``/``socketpair`` return EACCES instead:
  glibc's NSS (``getpwuid``, which interpreter start-up calls) probes nscd
  over a unix socket and must be able to fall back.  No socket is created
  either way; with no socket, connect/bind/sendto have nothing to act on.
- ``clone3`` returns ENOSYS, so glibc falls back to ``clone`` whose flags
  BPF can inspect: ``clone`` without ``CLONE_THREAD`` (fork, vfork,
  posix_spawn) traps, threads are allowed.
- The default is ALLOW: the policy is a deny list of the kernel's attack
  surface (sockets, tracing, namespaces, mounts, BPF, keyrings, io_uring,
  modules, new processes, exec).  Filesystem and signal reach is Landlock's
  job, memory is rlimits', so a deny list here keeps every pure-Python
  library working.  libseccomp kills any call from a foreign architecture
  (x32, i386) outright.
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

#: Syscalls that trap in every runtime.
DENIED = (
    # sockets of any family
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    # looking into or steering other processes
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    "process_madvise",
    # namespaces, mounts and roots
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns",
    "mount_setattr", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick",
    # kernel attack surface
    "bpf", "keyctl", "add_key", "request_key", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "userfaultfd", "perf_event_open", "fanotify_init",
    "open_by_handle_at", "name_to_handle_at", "lookup_dcookie",
    # kernel modules, kexec and machine state
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "reboot", "swapon", "swapoff", "settimeofday", "clock_settime", "clock_adjtime",
    "adjtimex", "acct", "quotactl", "syslog", "vhangup", "iopl", "ioperm", "uselib",
    # new processes and escaping the process group the host kills
    "fork", "vfork", "setsid", "setpgid",
    # executable memory from nowhere (would sidestep Landlock's execute right)
    "memfd_create", "execveat",
)


def _add(flt, action, name, *args) -> None:
    try:
        flt.add_rule(action, name, *args)
    except (OSError, ValueError, RuntimeError):
        # A syscall this libseccomp or architecture does not know cannot be
        # called either.
        pass


def compile_policy(runtime: str) -> bytes:
    """The classic-BPF program for ``runtime``.

    ``python`` and ``exec`` are complete policies.  ``python_extra`` is what
    python adds to ``exec``: a pre-forked spare loads the ``exec`` policy
    before it knows its runtime, and a python call then stacks
    ``python_extra`` on top (the kernel applies the strictest action of all
    stacked filters, so TRAP beats the ``exec`` policy's EACCES)."""
    import pyseccomp as sc

    flt = sc.SyscallFilter(defaction=sc.ALLOW)
    if runtime == "python_extra":
        for name in ("execve", "socket", "socketpair"):
            _add(flt, sc.TRAP, name)
        _add(flt, sc.ERRNO(errno.EPERM), "rt_sigaction", sc.Arg(0, sc.EQ, signal.SIGSYS))
        return _export(flt)
    for name in DENIED:
        if runtime == "exec" and name in ("socket", "socketpair"):
            # glibc's NSS (getpwuid, run by every interpreter's startup)
            # probes nscd over a unix socket and falls back on an error;
            # an exec'd program gets EACCES instead of being killed.
            _add(flt, sc.ERRNO(errno.EACCES), name)
        else:
            _add(flt, sc.TRAP, name)
    _add(flt, sc.ERRNO(errno.ENOSYS), "clone3")
    _add(flt, sc.TRAP, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, 0))
    for flag in CLONE_NEW_FLAGS:  # a "thread" in a new namespace is not a thread
        _add(flt, sc.TRAP, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    if runtime == "python":
        # The child is forked from the zygote: it never needs exec.
        _add(flt, sc.TRAP, "execve")
        # Keep the runtime's SIGSYS reporter in place.
        _add(flt, sc.ERRNO(errno.EPERM), "rt_sigaction", sc.Arg(0, sc.EQ, signal.SIGSYS))
    elif runtime != "exec":
        raise ValueError(f"unknown runtime {runtime!r}")
    # exec: execve stays allowed; Landlock's EXECUTE right limits it to the
    # package and the script's allowlisted interpreter.
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


def syscall_name(nr: int) -> str:
    """The name of native syscall ``nr``, or ``syscall <nr>``."""
    try:
        import pyseccomp as sc

        name = sc.resolve_syscall(sc.system_arch(), nr)
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        return f"syscall {nr}"


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int


def set_no_new_privs() -> None:
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "prctl(PR_SET_NO_NEW_PRIVS)")


def load(prog: bytes) -> None:
    """Install a precompiled program on the calling thread (no_new_privs must be set)."""
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = _SockFprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
    res = _libc.syscall(
        _SYS_SECCOMP, ctypes.c_uint(_SECCOMP_SET_MODE_FILTER), ctypes.c_uint(0), ctypes.byref(fprog)
    )
    if res != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp(SET_MODE_FILTER): {os.strerror(err)}")


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
    return "trap" in actions and "errno" in actions
