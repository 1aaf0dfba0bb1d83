# -*- test-case-name: tests.test_exec_jail -*-
"""
What a freshly forked child does between ``fork()`` in the zygote and the
first instruction of function code: enter the jail, then run the runtime.

Nothing here returns: every path ends in ``os._exit`` or ``execve``.

Set once in the zygote and inherited: an empty environment, no_new_privs,
1 MiB thread stacks and one malloc arena.  The zygote forks each child as
pid 1 of a new PID namespace.  Then, in the child, in this order:

1. own session and process group;
   new mount, IPC and UTS namespaces; the call-independent part of its
   root: runtime trees bound read-only, ``/dev`` (:func:`prepare`);
2. the package bound read-only at ``/pkg``, a capped tmpfs at ``/tmp``
   owned by the call's uid, ``pivot_root`` into the new root and the old
   one detached (:func:`_ns.finish_root`);
3. a Landlock ruleset: runtime paths and /dev files read-only, ``/pkg``
   read-only (plus execute for ``exec``), ``/tmp`` read-write; TCP
   bind/connect and signal/abstract-socket scopes handled with no
   exceptions;
4. move the call's fds to 0-3 and close every other fd; chdir to ``/tmp``;
5. the call's uid and gid from the zygote's pool (no groups; every
   capability goes), or, for a non-root peer, a user namespace of its own
   (entered right after step 2) where it is that uid, and an empty
   capability set;
6. rlimits (CPU, AS, FSIZE, NOFILE, NPROC, CORE=0); Landlock
   ``restrict_self``;
7. seccomp, last, so nothing above can be undone;
8. ``R`` on the status pipe (fd 3), then fd 3 is closed: function code can
   never write to it.

A pre-forked spare (:func:`spare`) does step 1 before its call exists and
waits for its order on stdin; the call's input follows the order.

The status pipe carries only ``R`` (the jail is closed; the zygote stamps
the time with its own clock) or ``E`` + text (the jail could not be built;
nothing ran).  Both are written before any function code runs, so the
zygote's verdict never rests on bytes the function wrote: it comes from the
exit status, the signal and the zygote's own clock.  The python runtime
reports its outcome only as its exit code (0 OK, anything else ERROR) and
its output on stdout; MEMORY is the zygote's verdict, from the out-of-memory
count of the child's own cgroup.
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

from . import _landlock, _ns, _seccomp
from ._frames import FrameDecoder, FrameError, encode

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_SETUP = 4

THREAD_STACK_BYTES = 1024 * 1024
SOURCE_MAX_BYTES = 1024 * 1024
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


class Context:
    """The ``context`` argument a python handler receives."""

    __slots__ = ("fid", "request_id", "deadline", "secrets")

    def __init__(self, fid: str, request_id: str, deadline: float, secrets=None):
        self.fid = fid
        self.request_id = request_id
        self.deadline = deadline  # time.monotonic() value
        # The function's secrets on this host (RFC 9.12), names to text, read-only; empty when it has none.
        self.secrets = types.MappingProxyType(_text_map(secrets))

    def remaining_s(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def __repr__(self) -> str:
        return f"Context(fid={self.fid!r}, request_id={self.request_id!r}, remaining_s={self.remaining_s():.3f})"


def _text_map(value):
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


class JailSetupError(Exception):
    pass


def _drop_capabilities() -> None:
    # Empty effective, permitted, inheritable and ambient sets.  With
    # no_new_privs, execve can never give more than the (empty) permitted
    # set back, even to uid 0 of a user namespace.
    _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.capset(ctypes.byref(hdr), data) != 0:
        raise JailSetupError(f"capset: {os.strerror(ctypes.get_errno())}")


def _build_ruleset(jail, spec) -> int | None:
    """Landlock: the runtime's files and /dev (opened by the zygote), the
    package and the scratch (opened here, inside the new root)."""
    abi = jail.landlock_abi
    if abi <= 0 or not jail.use_landlock:
        return None
    rs = _landlock.create_ruleset(abi)
    ro = _landlock.READ_ONLY
    for fd, is_dir in jail.ro_fds:
        _landlock.add_path_rule(rs, fd, ro, abi, is_dir)
    for fd in jail.dev_fds:
        _landlock.add_path_rule(rs, fd, _landlock.FS_READ_FILE | _landlock.FS_WRITE_FILE, abi, False)
    extra = []
    try:
        pkg = _landlock.open_path(spec["package_root"])
        scratch = _landlock.open_path(spec.get("scratch") or _ns.SCRATCH_DIR)
        if pkg is None or scratch is None:
            raise JailSetupError("the package or scratch mount is missing")
        extra += [pkg[0], scratch[0]]
        pkg_rights = ro | (_landlock.FS_EXECUTE if spec["runtime"] == "exec" else 0)
        _landlock.add_path_rule(rs, pkg[0], pkg_rights, abi, True)
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
    import fcntl

    high = [os.dup(fd) if fd >= 0 else -1 for fd in fds]
    # os.dup can return a low number; move everything above 3 first.
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
        (resource.RLIMIT_AS, int(spec.get("as_bytes", mem))),
    ]
    for what, value in limits:
        resource.setrlimit(what, (value, value))


def zygote_setup() -> None:
    """Process state every child inherits, set once in the zygote: an empty
    environment and no_new_privs (inherited across fork, and the zygote never
    needs to gain privileges through exec)."""
    os.environ.clear()
    _seccomp.set_no_new_privs()
    _runtime_setup()  # thread stack size and malloc arenas are inherited too


def _set_name(name: bytes) -> None:
    """The process name (``/proc/PID/comm``) that tells a waiting spare from a call."""
    _libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)


def prepare(jail) -> None:
    """The call-independent part of the jail, done ahead of time in a spare."""
    os.setsid()
    if jail.use_namespaces:
        _ns.unshare_call_namespaces()  # the root comes with it, built by the zygote


def _setup_failed(status_fd: int, e: BaseException) -> NoReturn:
    try:
        os.write(status_fd, b"E" + f"jail setup failed: {e!r}"[:500].encode())
    finally:
        os._exit(EXIT_SETUP)


ORDER_HEADER = struct.Struct(">I")  # spec JSON length


def _read_exact(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            raise EOFError("order pipe closed early")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def spare(jail, fds: tuple[int, int, int, int], keep: set, cgroup_fds: tuple = ()) -> NoReturn:
    """A pre-forked child: join its cgroup (``cgroup_fds``: the
    ``cgroup.procs`` files the zygote made for it), prepare, then wait for
    one order on ``fds[0]``.

    The order is ``ORDER_HEADER`` + spec JSON; the call's input follows until
    EOF, so the same pipe becomes the function's stdin."""
    order_fd, status_fd = fds[0], fds[3]
    _set_name(b"orb-spare")
    try:
        for fd in cgroup_fds:
            os.write(fd, b"0")  # "0": the writer itself
            os.close(fd)
    except BaseException as e:
        _setup_failed(status_fd, e)
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
        prepare(jail)
    except BaseException as e:
        _setup_failed(status_fd, e)
    try:
        head = os.read(order_fd, ORDER_HEADER.size)
        if not head:
            os._exit(EXIT_OK)  # the zygote is stopping: no order will come
        if len(head) < ORDER_HEADER.size:
            head += _read_exact(order_fd, ORDER_HEADER.size - len(head))
        # The zygote sends an order only after the template reaped the
        # intermediate that forked us: our parent is the zygote by now, and
        # the parent-death signal refers to it.  (Set earlier, the
        # intermediate's exit would fire it.)  Until then a dead zygote
        # shows as EOF on the order pipe.
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        (spec_len,) = ORDER_HEADER.unpack(head)
        spec = json.loads(_read_exact(order_fd, spec_len))
        _set_name(b"orb-call")
    except BaseException as e:
        _setup_failed(status_fd, e)
    _enter_jail(jail, spec, fds)


def _enter_jail(jail, spec: dict, fds: tuple[int, int, int, int]) -> NoReturn:
    status_fd = fds[3]
    try:
        if spec["runtime"] == "exec":
            # Ignored signals survive execve; give the binary the defaults.
            for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
        inside_uid = spec.get("inside_uid")
        proc_fd = _ns.open_proc_self() if inside_uid is not None else None
        if jail.use_namespaces:
            _ns.finish_root(jail.root_plan, spec["package_dir"], spec["runtime"] == "exec",
                            int(spec["scratch_max_bytes"]), int(spec["scratch_inodes"]),
                            int(spec.get("uid") or 0), int(spec.get("gid") or 0))
        if proc_fd is not None:
            _ns.enter_call_user_namespace(proc_fd, int(inside_uid))
            os.close(proc_fd)
        ruleset = _build_ruleset(jail, spec) if jail.use_landlock else None
        ruleset = _setup_fds(fds, ruleset)
        status_fd = 3
        os.chdir(_ns.SCRATCH_DIR if jail.use_namespaces else spec["scratch"])
        _ns.become(spec.get("uid"), spec.get("gid"))
        # A uid change clears the parent-death signal: set it again.
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        _set_rlimits(spec)
        _drop_capabilities()
        if ruleset is not None:
            _landlock.restrict_self(ruleset)
            os.close(ruleset)
        listener = -1
        if jail.use_seccomp:
            listener = _seccomp.load(jail.programs[spec["runtime"]], listener=jail.use_notify)
        # The jail is closed.  Say so (with the seccomp listener's number,
        # which the zygote copies out of this process with pidfd_getfd), wait
        # for its go-ahead on stdin, then close the listener and the status
        # pipe, so no function code can ever reach either.
        os.write(3, b"R" + struct.pack("<i", listener if jail.use_notify else -1))
        if jail.use_notify:
            if os.read(0, 1) != b"G":
                raise JailSetupError("the zygote did not take the seccomp listener")
            os.close(listener)
        os.close(3)
    except BaseException as e:  # the jail is incomplete: run nothing
        _setup_failed(status_fd, e)
    try:
        if spec["runtime"] == "exec":
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


def _log_stream():
    return io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), write_through=True, errors="backslashreplace"
    )


def _load_handler(spec):
    """Read and compile the entry here, inside the jail and under its limits."""
    sys.dont_write_bytecode = True
    sys.path.insert(0, spec["package_root"])
    with open(spec["entry"], "rb") as f:
        source = f.read(SOURCE_MAX_BYTES + 1)
    if len(source) > SOURCE_MAX_BYTES:
        raise ValueError(f"the entry passes the {SOURCE_MAX_BYTES}-byte source limit")
    code = compile(source, spec["entry"], "exec", dont_inherit=True)
    module = types.ModuleType("orb_function")
    module.__file__ = spec["entry"]
    sys.modules["orb_function"] = module
    exec(code, module.__dict__)
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


def _finish(code: int, out: bytes = b"") -> NoReturn:
    """Write the output on stdout and exit with the outcome as the exit code."""
    try:
        if out:
            _write_all(1, out)
    finally:
        os._exit(code)


def _memory_exit() -> NoReturn:
    # An exit code is the function's own word (it can choose any): this is
    # ERROR.  MEMORY is the supervisor's verdict, from the cgroup's OOM count.
    try:
        os.write(2, b"\nMemoryError: an allocation failed (the call's memory limit)\n")
    finally:
        os._exit(EXIT_ERROR)


def _runtime_setup() -> None:
    """Thread stacks of 1 MiB and one malloc arena, so that threads cost
    address space in proportion to use: with glibc's defaults each thread
    reserves an 8 MiB stack and up to a 64 MiB arena, and a handful of threads
    would exhaust the RLIMIT_AS budget."""
    import threading

    threading.stack_size(THREAD_STACK_BYTES)
    _libc.mallopt(_M_ARENA_MAX, 1)


CALL_HEADER = struct.Struct(">I")  # length of the call's JSON header, before its input


def _run_python_once(spec) -> NoReturn:
    """One call: a JSON header (request id, timeout) and the input arrive on
    stdin.  The child may have been readied ahead of the call (the zygote
    primes one for a function it just ran); its clock starts with the header."""
    _set_name(b"orb-ready")
    (head_len,) = CALL_HEADER.unpack(_read_exact(0, CALL_HEADER.size))
    _set_name(b"orb-call")
    head = json.loads(_read_exact(0, head_len))
    deadline = time.monotonic() + float(head["timeout_s"])
    event = _read_all(0)
    log = _log_stream()
    sys.stdout = sys.stderr = log
    sys.stdin = None
    ctx = Context(spec.get("fid", ""), str(head.get("request_id", "")), deadline, head.pop("secrets", None))
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
        os._exit(EXIT_ERROR)
    _finish(EXIT_OK, out)


def _run_worker(spec) -> NoReturn:
    """Per-function reuse: serve framed calls on fds 0/1 until stdin closes.

    The zygote stops this process (SIGSTOP) as soon as a call's answer is
    in, and continues it (SIGCONT) with the next call."""
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
                ctl.pop("secrets", None),
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
