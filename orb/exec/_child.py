# -*- test-case-name: tests.test_exec_jail -*-
"""
What a freshly forked child does between ``fork()`` in the zygote and the
first instruction of function code: enter the jail, then run the runtime.

Nothing here returns: every path ends in ``os._exit`` or ``execve``.

Set once in the zygote and inherited: an empty environment, no_new_privs,
the SIGSYS reporter, 1 MiB thread stacks and one malloc arena.  Then, in
the child, in this order:

1. own session and process group; die with the zygote (PDEATHSIG)
   (:func:`prepare`);
2. Landlock ruleset: the zygote's pre-opened runtime paths and /dev/null
   etc., the package dir (read-only, plus execute for ``exec``) and the
   scratch dir (read-write); TCP bind/connect and signal/abstract-socket
   scopes handled with no exceptions;
3. move the call's fds to 0-3 and close every other fd;
4. chdir to scratch, rlimits (CPU, AS, FSIZE, NOFILE, NPROC, CORE=0),
   drop every capability;
5. Landlock ``restrict_self``;
6. seccomp, last, so nothing above can be undone.

A pre-forked spare (:func:`spare`) does step 1, the runtime half of step 2
and the common seccomp policy before its call exists; once its order
arrives it adds the call's rules and, for python, stacks ``python_extra``.
Stacking only ever narrows what is allowed, so the early filter is safe:
everything the spare still does after it (reading its order, landlock,
dup/close, chdir, prlimit, capset) is allowed by it.

Status pipe (fd 3) records understood by the zygote: ``R`` + float64
CLOCK_MONOTONIC (the jail is closed, function code starts now; exec runtime
and warm workers), ``D`` + ``DONE_HEADER`` (ready time, exit code,
inline length) + inline output (python runtime: the output is complete,
the child is exiting), ``S`` + int32 little-endian syscall number (seccomp
trapped it), ``E`` + text (the jail could not be built; nothing ran).
"""

import ctypes
import io
import json
import os
import resource
import signal
import struct
import sys
import time
import traceback
import types
from typing import NoReturn

from . import _landlock, _seccomp

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_MEMORY = 3
EXIT_SETUP = 4
EXIT_SIGSYS = 159

THREAD_STACK_BYTES = 1024 * 1024
_M_ARENA_MAX = -8

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


class _Sigaction(ctypes.Structure):
    _fields_ = [
        ("sa_sigaction", ctypes.c_void_p),
        ("sa_mask", ctypes.c_ulong * 16),
        ("sa_flags", ctypes.c_int),
        ("sa_restorer", ctypes.c_void_p),
    ]


_SA_SIGINFO = 4
_SIGINFO_SYSCALL_OFFSET = 24  # si_syscall in siginfo_t on x86_64 / aarch64
_HANDLER_T = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


class Context:
    """The ``context`` argument a python handler receives."""

    __slots__ = ("fid", "request_id", "deadline")

    def __init__(self, fid: str, request_id: str, deadline: float):
        self.fid = fid
        self.request_id = request_id
        self.deadline = deadline  # time.monotonic() value

    def remaining_s(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def __repr__(self) -> str:
        return f"Context(fid={self.fid!r}, request_id={self.request_id!r}, remaining_s={self.remaining_s():.3f})"


class JailSetupError(Exception):
    pass


def _drop_capabilities(last_cap: int) -> None:
    # Empty effective, permitted, inheritable and ambient sets.  With
    # no_new_privs, execve can never give more than the (empty) permitted
    # set back, even to uid 0, so the bounding set needs no 41 prctl calls.
    _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.capset(ctypes.byref(hdr), data) != 0:
        raise JailSetupError(f"capset: {os.strerror(ctypes.get_errno())}")


def _on_sigsys(signo, info, uctx):  # pragma: no cover - runs in the dying child
    try:
        nr = ctypes.c_int.from_address(info + _SIGINFO_SYSCALL_OFFSET).value
        os.write(3, b"S" + struct.pack("<i", nr))
    finally:
        os._exit(EXIT_SIGSYS)


# Built once at import (in the zygote), so a child only pays for sigaction().
_SIGSYS_CB = _HANDLER_T(_on_sigsys)
_SIGSYS_ACT = _Sigaction()
_SIGSYS_ACT.sa_sigaction = ctypes.cast(_SIGSYS_CB, ctypes.c_void_p).value
_SIGSYS_ACT.sa_flags = _SA_SIGINFO


def _install_sigsys_reporter() -> None:
    """SIGSYS (seccomp TRAP) writes ``S`` + the syscall number to fd 3, then exits."""
    if _libc.sigaction(signal.SIGSYS, ctypes.byref(_SIGSYS_ACT), None) != 0:
        raise JailSetupError("sigaction(SIGSYS) failed")


def _base_ruleset(jail) -> int | None:
    """A ruleset with the call-independent rules: runtime files, /dev/null etc."""
    abi = jail.landlock_abi
    if abi <= 0 or not jail.use_landlock:
        return None
    rs = _landlock.create_ruleset(abi)
    for fd, is_dir in jail.ro_fds:
        _landlock.add_path_rule(rs, fd, _landlock.READ_ONLY, abi, is_dir)
    for fd in jail.dev_fds:
        _landlock.add_path_rule(rs, fd, _landlock.FS_READ_FILE | _landlock.FS_WRITE_FILE, abi, False)
    return rs


def _build_ruleset(jail, spec, rs: int | None = None) -> int | None:
    """Add the call's rules (package read-only, scratch read-write) to ``rs``."""
    abi = jail.landlock_abi
    if rs is None:
        rs = _base_ruleset(jail)
    if rs is None:
        return None
    ro = _landlock.READ_ONLY
    extra = []
    try:
        pkg = _landlock.open_path(spec["package_dir"])
        if pkg is None:
            raise JailSetupError(f"package dir {spec['package_dir']} is missing")
        extra.append(pkg[0])
        pkg_rights = ro | (_landlock.FS_EXECUTE if spec["runtime"] == "exec" else 0)
        _landlock.add_path_rule(rs, pkg[0], pkg_rights, abi, pkg[1])
        scratch = _landlock.open_path(spec["scratch"])
        if scratch is None:
            raise JailSetupError("scratch dir is missing")
        extra.append(scratch[0])
        _landlock.add_path_rule(rs, scratch[0], _landlock.READ_WRITE, abi, True)
        for path in spec.get("exec_paths", ()):
            got = _landlock.open_path(path)
            if got is not None:
                extra.append(got[0])
                _landlock.add_path_rule(
                    rs, got[0], _landlock.FS_EXECUTE | _landlock.FS_READ_FILE, abi, got[1]
                )
    finally:
        for fd in extra:
            os.close(fd)
    return rs


def _setup_fds(fds: tuple[int, int, int, int], keep: int | None) -> int | None:
    """Put the call's fds at 0..3, close the rest; return ``keep``'s new number."""
    high = [os.dup(fd) if fd >= 0 else -1 for fd in fds]
    # os.dup can return a low number; move everything above 3 first.
    import fcntl

    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, 64) if fd >= 0 else -1 for fd in high]
    keep_moved = fcntl.fcntl(keep, fcntl.F_DUPFD, 64) if keep is not None else None
    for target, fd in enumerate(moved):
        if fd >= 0:
            os.dup2(fd, target, inheritable=True)
    lo = 4
    if keep_moved is None:
        os.closerange(lo, 1 << 20)
        return None
    os.closerange(lo, keep_moved)
    os.closerange(keep_moved + 1, 1 << 20)
    return keep_moved


def _set_rlimits(spec) -> None:
    mem = int(spec["memory_mb"]) * 1024 * 1024
    cpu = int(spec["cpu_s"])
    limits = [
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_FSIZE, int(spec["fsize_bytes"])),
        (resource.RLIMIT_NOFILE, int(spec["nofile"])),
        (resource.RLIMIT_NPROC, int(spec.get("nproc", 64))),
        (resource.RLIMIT_AS, mem),
    ]
    for what, value in limits:
        resource.setrlimit(what, (value, value))


def zygote_setup() -> None:
    """Process state every child inherits, set once in the zygote: an empty
    environment, no_new_privs (inherited across fork, and the zygote never
    needs to gain privileges through exec), and the SIGSYS reporter
    (dispositions are inherited across fork; execve resets a caught signal
    to its default, so an exec'd binary simply dies of SIGSYS)."""
    os.environ.clear()
    _seccomp.set_no_new_privs()
    _install_sigsys_reporter()
    _runtime_setup()  # thread stack size and malloc arenas are inherited too


def _set_name(name: bytes) -> None:
    """The process name (``/proc/PID/comm``) that tells a waiting spare from a call."""
    _libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)


def prepare() -> None:
    """The call-independent part of the jail, done ahead of time in a spare."""
    os.setsid()
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    os.environ.clear()  # no-op after zygote_setup(); kept for safety


def _setup_failed(status_fd: int, e: BaseException) -> NoReturn:
    try:
        os.write(status_fd, b"E" + f"jail setup failed: {e!r}"[:500].encode())
    finally:
        os._exit(EXIT_SETUP)


def enter(jail, spec: dict, fds: tuple[int, int, int, int]) -> NoReturn:
    """Run in the child right after fork.  Never returns."""
    try:
        prepare()
    except BaseException as e:
        _setup_failed(fds[3], e)
    _enter_jail(jail, spec, fds)


ORDER_HEADER = struct.Struct(">II")  # spec JSON length, marshalled code length


def _read_exact(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            raise EOFError("order pipe closed early")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def spare(jail, fds: tuple[int, int, int, int], keep: set) -> NoReturn:
    """A pre-forked child: prepare, then wait for one order on ``fds[0]``.

    The order is ``ORDER_HEADER`` + spec JSON + marshalled code (compiled by
    the zygote, never by the function); the call's input follows until EOF,
    so for ``exec`` the same pipe becomes the program's stdin."""
    order_fd, status_fd = fds[0], fds[3]
    try:
        # Drop every fd but ours at once: a copy of another call's input
        # pipe held here would keep that call from ever seeing EOF.
        lo = 3
        for fd in sorted(keep):
            if fd > lo:
                os.closerange(lo, fd)
            lo = max(lo, fd + 1)
        os.closerange(lo, 1 << 20)
        # Nor keep the zygote's control pipes while waiting.
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        prepare()
        _set_name(b"orb-spare")
        base = _base_ruleset(jail)
        if jail.use_seccomp:
            # The exec policy is the common core of both runtimes; a python
            # call stacks python_extra on it once it knows its runtime.
            _seccomp.load(jail.programs["exec"])
    except BaseException as e:
        _setup_failed(status_fd, e)
    try:
        head = os.read(order_fd, ORDER_HEADER.size)
        if not head:
            os._exit(EXIT_OK)  # the zygote is stopping: no order will come
        if len(head) < ORDER_HEADER.size:
            head += _read_exact(order_fd, ORDER_HEADER.size - len(head))
        spec_len, code_len = ORDER_HEADER.unpack(head)
        spec = json.loads(_read_exact(order_fd, spec_len))
        if code_len:
            import marshal

            spec["code"] = marshal.loads(_read_exact(order_fd, code_len))
        _set_name(b"orb-call")
    except BaseException as e:
        _setup_failed(status_fd, e)
    _enter_jail(jail, spec, fds, base, preloaded=True)


def _enter_jail(jail, spec: dict, fds: tuple[int, int, int, int],
                base: int | None = None, preloaded: bool = False) -> NoReturn:
    status_fd = fds[3]
    try:
        if spec["runtime"] == "exec":
            # Ignored signals survive execve; give the binary the defaults.
            for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
        if jail.use_seccomp:
            _seccomp.set_no_new_privs()  # already inherited; cheap and explicit
        ruleset = _build_ruleset(jail, spec, base) if jail.use_landlock else None
        ruleset = _setup_fds(fds, ruleset)
        status_fd = 3
        if spec["runtime"] == "exec":
            os.set_inheritable(3, False)
        os.chdir(spec["scratch"])
        _set_rlimits(spec)
        _drop_capabilities(jail.last_cap)
        if ruleset is not None:
            _landlock.restrict_self(ruleset)
            os.close(ruleset)
        if jail.use_seccomp:
            if not preloaded:
                _seccomp.load(jail.programs[spec["runtime"]])
            elif spec["runtime"] == "python":
                _seccomp.load(jail.programs["python_extra"])
    except BaseException as e:  # the jail is incomplete: run nothing
        _setup_failed(status_fd, e)
    try:
        if spec["runtime"] == "exec":
            _ready()
            entry = spec["entry"]
            os.execve(entry, [entry], {})
        elif spec.get("worker"):
            _run_worker(spec)
        else:
            _run_python_once(spec)
    except BaseException:
        try:
            traceback.print_exc()
        finally:
            os._exit(EXIT_ERROR)
    os._exit(EXIT_ERROR)


def _ready() -> None:
    """Tell the zygote the jail is closed and function code starts now."""
    os.write(3, b"R" + struct.pack("<d", time.monotonic()))


def _log_stream():
    return io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), write_through=True, errors="backslashreplace"
    )


def _load_handler(spec):
    sys.dont_write_bytecode = True
    sys.path.insert(0, spec["package_dir"])
    code = spec.get("code")
    if code is not None:  # compiled by the zygote; run it here, in the jail
        module = types.ModuleType("orb_function")
        module.__file__ = spec["entry"]
        sys.modules["orb_function"] = module
        exec(code, module.__dict__)
    else:
        import importlib.util

        mod_spec = importlib.util.spec_from_file_location("orb_function", spec["entry"])
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules["orb_function"] = module
        mod_spec.loader.exec_module(module)
    handler = getattr(module, "handler", None)
    if not callable(handler):
        raise TypeError(f"{os.path.basename(spec['entry'])} defines no callable handler(event, context)")
    return handler


def _encode_result(result) -> bytes:
    if isinstance(result, (bytes, bytearray, memoryview)):
        return bytes(result)
    if isinstance(result, str):
        return result.encode("utf-8")
    return json.dumps(result).encode("utf-8")


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


_T_READY = [0.0]


INLINE_MAX_BYTES = 32 * 1024
DONE_HEADER = struct.Struct("<dBI")  # ready time, exit code, inline output length


def _done(code: int, out: bytes = b"") -> NoReturn:
    """Report the outcome (and a small output inline) on the status pipe, then exit.

    The ``D`` record lets the zygote answer after one wake-up, without
    waiting for this process's teardown and reaping.  Outputs over
    ``INLINE_MAX_BYTES`` go through stdout first, which the zygote reads as
    they are written."""
    try:
        inline = b""
        if len(out) > INLINE_MAX_BYTES:
            _write_all(1, out)
        else:
            inline = out
        _write_all(3, b"D" + DONE_HEADER.pack(_T_READY[0], code, len(inline)) + inline)
    finally:
        os._exit(code)


def _memory_exit() -> NoReturn:
    try:
        os.write(2, b"\nMemoryError: the function passed its memory limit\n")
    finally:
        _done(EXIT_MEMORY)


def _runtime_setup() -> None:
    """Thread stacks of 1 MiB and one malloc arena, so that threads cost
    address space in proportion to use: with glibc's defaults each thread
    reserves an 8 MiB stack and up to a 64 MiB arena, and a handful of threads
    would exhaust the RLIMIT_AS budget."""
    import threading

    threading.stack_size(THREAD_STACK_BYTES)
    _libc.mallopt(_M_ARENA_MAX, 1)


def _run_python_once(spec) -> NoReturn:
    # No ready record here: the final D record carries the ready time, so
    # the zygote is woken once per call, not twice.
    _T_READY[0] = time.monotonic()
    deadline = _T_READY[0] + float(spec["timeout_s"])
    event = _read_all(0)
    log = _log_stream()
    sys.stdout = sys.stderr = log
    sys.stdin = None
    ctx = Context(spec.get("fid", ""), spec.get("request_id", ""), deadline)
    try:
        handler = _load_handler(spec)
        out = _encode_result(handler(event, ctx))
    except MemoryError:
        _memory_exit()
    except BaseException:
        try:
            traceback.print_exc()
        except MemoryError:
            _memory_exit()
        _done(EXIT_ERROR)
    _done(EXIT_OK, out)


def _run_worker(spec) -> NoReturn:
    """Per-function reuse: serve framed calls on fds 0/1 until stdin closes."""
    from ._frames import FrameDecoder, FrameError, encode

    _ready()
    log = _log_stream()
    sys.stdout = sys.stderr = log
    sys.stdin = None
    decoder = FrameDecoder(max_data_bytes=int(spec["input_max_bytes"]))
    handler = None
    while True:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            os._exit(EXIT_OK)
        try:
            frames = decoder.feed(chunk)
        except FrameError:
            os._exit(EXIT_ERROR)
        for ctl, event in frames:
            ctx = Context(
                ctl.get("fid", ""),
                ctl.get("request_id", ""),
                time.monotonic() + float(ctl.get("timeout_s", 0)),
            )
            kind = "ok"
            out = b""
            try:
                if handler is None:
                    handler = _load_handler(spec)
                out = _encode_result(handler(event, ctx))
            except MemoryError:
                _memory_exit()
            except BaseException:
                kind = "error"
                try:
                    traceback.print_exc()
                except MemoryError:
                    _memory_exit()
            log.flush()
            _write_all(1, encode({"kind": kind}, out))
