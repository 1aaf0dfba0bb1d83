# -*- test-case-name: tests.test_exec_layers -*-
"""
Landlock through raw syscalls (ctypes); no reactor, no third-party code.

The zygote opens the runtime's read-only paths once (``O_PATH``) and each
child builds its own ruleset from them plus its package and scratch dirs,
then calls :func:`restrict_self`.  A ruleset fd is never shared between
processes, because adding a rule to an inherited ruleset would change the
zygote's copy too.
"""

import ctypes
import errno
import os

_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446

_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_RULE_NET_PORT = 2

# Filesystem rights (include/uapi/linux/landlock.h).
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5

NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4

SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

# Rights that may be granted on a non-directory.
FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV

READ_ONLY = FS_READ_FILE | FS_READ_DIR
READ_WRITE = (
    FS_READ_FILE
    | FS_READ_DIR
    | FS_WRITE_FILE
    | FS_REMOVE_DIR
    | FS_REMOVE_FILE
    | FS_MAKE_DIR
    | FS_MAKE_REG
    | FS_MAKE_SYM
    | FS_REFER
    | FS_TRUNCATE
)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _check(res: int, what: str) -> int:
    if res < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return res


def abi_version() -> int:
    """The Landlock ABI the kernel offers, or 0 when it offers none."""
    res = _libc.syscall(
        _SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION)
    )
    if res < 0:
        return 0
    return int(res)


def handled_fs(abi: int) -> int:
    """Every filesystem right this ABI knows, so all of them are denied by default."""
    rights = (FS_MAKE_SYM << 1) - 1  # ABI 1: bits 0..12
    if abi >= 2:
        rights |= FS_REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


def handled_net(abi: int) -> int:
    return (NET_BIND_TCP | NET_CONNECT_TCP) if abi >= 4 else 0


def scopes(abi: int) -> int:
    return (SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL) if abi >= 6 else 0


def create_ruleset(abi: int) -> int:
    """A new ruleset fd handling every right ``abi`` knows, with no rules yet."""
    attr = _RulesetAttr(handled_fs(abi), handled_net(abi), scopes(abi))
    size = ctypes.sizeof(_RulesetAttr)
    if abi < 4:
        size = 8  # only handled_access_fs exists
    elif abi < 6:
        size = 16
    return _check(
        _libc.syscall(
            _SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)
        ),
        "landlock_create_ruleset",
    )


def add_path_rule(ruleset_fd: int, path_fd: int, access: int, abi: int, is_dir: bool) -> None:
    """Allow ``access`` beneath the file or directory open at ``path_fd``."""
    access &= handled_fs(abi)
    if not is_dir:
        access &= FILE_RIGHTS
    if not access:
        return
    attr = _PathBeneathAttr(access, path_fd)
    _check(
        _libc.syscall(
            _SYS_ADD_RULE,
            ctypes.c_int(ruleset_fd),
            ctypes.c_int(_RULE_PATH_BENEATH),
            ctypes.byref(attr),
            ctypes.c_uint32(0),
        ),
        "landlock_add_rule",
    )


def restrict_self(ruleset_fd: int) -> None:
    _check(
        _libc.syscall(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset_fd), ctypes.c_uint32(0)),
        "landlock_restrict_self",
    )


def open_path(path: str) -> tuple[int, bool] | None:
    """An ``O_PATH`` fd for ``path`` and whether it is a directory, or None if absent."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
            return None
        raise
    import stat

    return fd, stat.S_ISDIR(os.fstat(fd).st_mode)
