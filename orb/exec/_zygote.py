# -*- test-case-name: tests.test_exec_jail -*-
"""
The zygote: the supervisor the peer starts with ``spawnProcess``.

It is a plain ``selectors`` loop, not a reactor: it reads run requests
(see :mod:`orb.exec._frames`) on stdin, gets a jailed child for each call
from the template (or hands the call to a warm worker), watches the
child's pipes, seccomp notifications and deadline, and writes one ``done``
frame per call on stdout.  It never forks a child itself: it holds every
tenant's input and output in flight, so children come from the template
(:class:`Template`), forked before the first call.

At start it moves into fresh network, IPC and mount namespaces (after a
user namespace, for a non-root peer), makes its cgroup dirs where the host
lets it (:mod:`orb.exec._cgroup`), builds the part of the children's root
every call shares, compiles the seccomp programs, pre-opens the
runtime's read-only paths for Landlock, builds one whole test jail
(:meth:`Jail.self_test`) and says ``hello`` with the layers that worked.

Messages (frames of :mod:`orb.exec._frames`):

- peer -> zygote ``{"op": "run", "id", "runtime", "entry", "package_dir",
  "fid", "request_id", "reuse", "timeout_s", "memory_mb",
  "output_max_bytes", "log_max_bytes", "scratch_max_bytes",
  "scratch_max_inodes", "max_tasks", "nofile", "boot_max_s"}`` with the input
  as payload (``timeout_s`` runs from when the call's jail is up; booting
  it may take ``boot_max_s`` more);
  ``{"op": "cancel", "id"}``: the peer withdrew that call: it leaves the
  waiting list at once, or its child (a warm worker: the worker) is
  killed, and its ``done`` (status ``INTERNAL``, "cancelled") is sent once
  the template reaped it, so a slot is free only when nothing of the call
  is left; a cancel naming no call of this zygote's is ignored;
  ``{"op": "ping", "n"}`` (answered ``{"op": "pong", "n"}`` while the
  template lives); ``{"op": "stop"}`` (or EOF on stdin) to shut down.
- zygote -> peer ``{"op": "hello", "pid", "layers", "missing",
  "landlock_abi", "notes", "scratch_root", "cgroup_dirs", ...}`` once
  (``cgroup_dirs``: the zygote's own cgroup dirs, for the peer to remove
  if the zygote dies before it can), then per call
  ``{"op": "done", "id", "status", "message", "boot_ms", "exec_ms",
  "out_len", "log_len"}`` with output then log as payload.  ``status`` is a
  :class:`orb.protocol.codes.ResultStatus` name.
- zygote -> child (its stdin): ``_child.ORDER_HEADER`` + spec JSON, then
  (with seccomp notification) ``G`` once the zygote took its listener,
  then the input until EOF, or, for a warm worker, ``{"fid",
  "request_id", "timeout_s"}`` frames + input; worker -> zygote
  ``{"kind": "ok" | "error"}`` + output.

Usage (internal)::

    python -m orb.exec._zygote [--once] [--probe] [--scratch-root DIR]
                               [--max-workers N] [--worker-idle-s S]
                               [--max-calls N] [--no-prefork] [--allow-unconfined]
                               [--uid-base N] [--uid-count N] [--disable LAYER]
"""

import argparse
import collections
import ctypes
import errno
import gc
import json
import os
import select
import selectors
import signal
import stat
import struct
import sys
import time

from . import _cgroup, _child, _landlock, _ns, _seccomp
from ._frames import HEADER, MAX_CTL_BYTES, FrameDecoder, FrameError, encode

# Pre-import what the child runtime uses, so no child has to read ORB's or
# the venv's files after its jail closes.
import importlib.util  # noqa: F401,E402
import io  # noqa: F401,E402
import linecache  # noqa: F401,E402
import threading  # noqa: F401,E402
import tokenize  # noqa: F401,E402
import traceback  # noqa: F401,E402

_libc = ctypes.CDLL(None, use_errno=True)


#: Layers a call needs before untrusted code may run.
REQUIRED_LAYERS = (
    "seccomp",
    "landlock_fs",
    "landlock_net",
    "landlock_scope",
    "no_new_privs",
    "rlimits",
    "pidns",
    "call_namespaces",
    "root",
    "pivot_root",
)

STATUS = (
    "OK",
    "ERROR",
    "TIMEOUT",
    "MEMORY",
    "KILLED_BY_POLICY",
    "OUTPUT_TOO_LARGE",
    "BUSY",
    "NOT_FOUND",
    "DENIED",
    "REFUSED",
    "INTERNAL",
)

MAX_INPUT_BYTES = 16 * 1024 * 1024
DEFAULT_UID_BASE = 1_900_000_000
DEFAULT_UID_COUNT = 4096
WORKER_CPU_S = 600
IDLE_S = 0.001
WORKER_MAX_CALLS = 10000
# The worker's answer frame is read whatever length its header claims (that
# header is the function's to write): the zygote counts the bytes that really
# came, and OUTPUT_TOO_LARGE is its own count passing the cap.
ANSWER_MAX_BYTES = (1 << 32) - 1
MAX_PRIMED = 2  # functions with a child readied for their next call
PRIMED_IDLE_S = 5.0  # an unused primed child is killed after this long
BOOT_MAX_S = 10.0  # a run frame without boot_max_s: its jail must be up within timeout_s + this


def _now() -> float:
    return time.monotonic()


def _ms(seconds: float) -> float:
    return round(max(0.0, seconds) * 1000.0, 3)


def runtime_ro_paths() -> list[str]:
    """The runtime's own files, granted read-only to every child."""
    paths = [sys.base_prefix, "/usr/lib", "/usr/lib64", "/usr/local/lib"]
    out = []
    for p in paths:
        real = os.path.realpath(p)
        if os.path.exists(real) and real not in out:
            out.append(real)
    return out


def interpreter_allowlist() -> set[str]:
    """Interpreters an ``exec`` script may name in its ``#!`` line."""
    names = [sys.executable, "/usr/bin/python3", "/bin/sh", "/bin/bash", "/usr/bin/perl"]
    return {os.path.realpath(n) for n in names if os.path.exists(n)}


def compile_seccomp(notify: bool) -> tuple[dict, dict]:
    """The seccomp programs and a syscall-name table, made in a short-lived
    child: libseccomp and its binding (several MB) then never load into the
    zygote, nor into the template and every child forked from it."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the helper never returns
        try:
            os.close(r)
            if not _seccomp.available():
                raise RuntimeError("kernel lacks seccomp kill_process filters or libseccomp is missing")
            doc = {"programs": {rt: _seccomp.compile_policy(rt, notify=notify).hex()
                                for rt in ("python", "exec")},
                   "names": {nr: _seccomp.syscall_name(nr) for nr in range(0, 512)}}
        except BaseException as e:
            doc = {"error": str(e)[:400]}
        try:
            data = json.dumps(doc).encode()
            while data:
                data = data[os.write(w, data):]
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while True:
        chunk = os.read(r, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    try:
        doc = json.loads(b"".join(chunks))
    except ValueError:
        raise RuntimeError("the seccomp compiler died") from None
    if "error" in doc:
        raise RuntimeError(doc["error"])
    programs = {rt: bytes.fromhex(prog) for rt, prog in doc["programs"].items()}
    names = {int(nr): name for nr, name in doc["names"].items() if not name.startswith("syscall ")}
    return programs, names


def root_ro_dirs() -> list[str]:
    """Host trees bound read-only, at the same path, into every child's root:
    /usr (with a merged /usr that holds /bin and /lib) and the interpreter's
    own prefix when it lives elsewhere (pyenv, /opt)."""
    out = []
    for path in ("/usr", "/lib", "/lib64", "/bin", sys.base_prefix, "/etc/alternatives"):
        if os.path.islink(path) or not os.path.isdir(path):
            continue
        real = os.path.realpath(path)
        if any(real == d or real.startswith(d + "/") for d in out):
            continue
        out.append(real)
    return out


def root_symlinks() -> dict[str, str]:
    """/bin -> usr/bin and the like, as the host has them."""
    out = {}
    for path in ("/bin", "/sbin", "/lib", "/lib64", "/lib32"):
        if os.path.islink(path):
            out[path] = os.readlink(path)
    return out


def _loader_paths() -> list[str]:
    out = []
    for p in ("/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"):
        if os.path.exists(p):
            out.append(os.path.realpath(p))
    return out


def _become_pidns_init() -> None:
    """Non-root peer: move the zygote into a PID namespace its user namespace
    owns (so it may later setns back into it after each child's own PID
    namespace).  The original process stays behind only to wait: it exits
    with the zygote's status, and the zygote dies with it (PDEATHSIG)."""
    _ns.unshare(_ns.CLONE_NEWPID, "unshare(CLONE_NEWPID) for the zygote")
    pid = os.fork()
    if pid == 0:
        _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for fd in (0, 1):
        os.close(fd)
    while True:
        try:
            _pid, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        return f"killed by {name}"
    return f"exit status {os.WEXITSTATUS(status)}"


def _child_exited(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != 0
    except ChildProcessError:
        return True


def host_pid() -> int:
    """Our pid as the peer sees it (/proc is the host's proc mount)."""
    try:
        return int(os.readlink("/proc/self"))
    except (OSError, ValueError):
        return os.getpid()


class Jail:
    """What the zygote prepared once, for every child to use."""

    def __init__(self, allow_unconfined: bool, uid_base: int = DEFAULT_UID_BASE,
                 uid_count: int = DEFAULT_UID_COUNT, disabled: tuple = ()):
        self.layers: dict = {}
        self.notes: dict = {}
        # Layers switched off on purpose (bench/exec.py measures what each
        # costs): reported as missing like any other, so untrusted code is
        # refused unless the operator also opts out.
        self.disabled = set(disabled)
        self.allow_unconfined = allow_unconfined
        self.landlock_abi = _landlock.abi_version()
        self.layers["landlock_fs"] = self.landlock_abi >= 1
        self.layers["landlock_net"] = self.landlock_abi >= 4
        self.layers["landlock_scope"] = self.landlock_abi >= 6
        self.layers["no_new_privs"] = True
        self.layers["rlimits"] = True
        self.programs: dict = {}
        self.syscall_names: dict = {}
        self.use_notify = False
        try:
            self.use_notify = _seccomp.notify_available() and "seccomp_notify" not in self.disabled
            self.programs, self.syscall_names = compile_seccomp(self.use_notify)
            self.layers["seccomp"] = True
            self.notes["seccomp_mode"] = (
                "filter: allowlist; a denied syscall is stopped and named through user "
                "notification, then the process is killed" if self.use_notify else
                "filter: allowlist, default kill_process (syscall not named)")
        except Exception as e:
            self.layers["seccomp"] = False
            self.notes["seccomp"] = str(e)
        if "seccomp" in self.disabled:
            self.use_notify = False
        for name in ("seccomp", "landlock_fs", "landlock_net", "landlock_scope"):
            if name in self.disabled or (name.startswith("landlock") and "landlock" in self.disabled):
                self.layers[name] = False
                self.notes[name] = "disabled by the operator"
        self.use_landlock = self.layers["landlock_fs"]
        self.use_seccomp = self.layers["seccomp"]
        self.ro_fds = []
        for path in runtime_ro_paths():
            got = _landlock.open_path(path)
            if got is not None:
                self.ro_fds.append(got)
        self.dev_fds = []
        for path in ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"):
            got = _landlock.open_path(path)
            if got is not None:
                self.dev_fds.append(got[0])
        self.interpreters = interpreter_allowlist()
        self.loaders = _loader_paths()
        self.root_uid = os.geteuid() == 0
        # Root peer: host uids that own nothing.  Non-root peer: the uid each
        # call has inside a user namespace of its own.
        self.uid_pool = _ns.UidPool(uid_base, uid_count)
        self.cgroups = _cgroup.Cgroups()
        self.pidns_fd: int | None = None
        self.root_plan: _ns.RootPlan | None = None
        self.use_namespaces = False  # own mount/IPC/UTS namespaces and root
        self.use_pidns = False
        self.use_uid = False  # setuid to a pool uid (root peer)
        self.use_call_userns = False  # a user namespace per call (non-root peer)
        self.mountns = False

    def enter_namespaces(self) -> None:
        """A user namespace (non-root peer only), then fresh net, IPC and
        mount namespaces for the zygote and every child."""
        if not self.root_uid:
            try:
                _ns.enter_user_namespace()
                self.layers["userns"] = True
                _become_pidns_init()
            except OSError as e:
                self.layers["userns"] = False
                self.notes["userns"] = str(e)
        try:
            _ns.unshare(_ns.CLONE_NEWNET, "unshare(CLONE_NEWNET)")
            self.layers["netns"] = True
        except OSError as e:
            self.layers["netns"] = False
            self.notes["netns"] = str(e)
        try:
            _ns.unshare(_ns.CLONE_NEWIPC | _ns.CLONE_NEWNS, "unshare(IPC, mount)")
            # Nothing a child mounts propagates back to the host.
            _ns.mount(None, "/", None, _ns.MS_REC | _ns.MS_PRIVATE, what="make / private")
            self.mountns = True
        except OSError as e:
            self.notes["call_namespaces"] = str(e)
        try:
            self.pidns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            self.notes["pidns"] = str(e)

    def self_test(self, mountpoint: str, empty_dir: str) -> None:
        """Build one whole child jail (PID, mount, IPC, UTS namespaces, the
        root, pivot_root, the per-call identity) and report what worked.

        The layers a peer gets are the ones that really worked here, not the
        ones the kernel advertises."""
        self.root_plan = _ns.RootPlan(mountpoint, root_ro_dirs(), root_symlinks())
        identity = "uid_pool" if self.root_uid else "userns"
        steps = ("pidns", "root", "call_namespaces", "pivot_root", identity)
        if not self.mountns or self.pidns_fd is None:
            for name in steps:
                self.layers[name] = False
            self.notes.setdefault("pidns", "the zygote has no private mount namespace")
            return
        # The root is built once, here in the zygote's own mount namespace;
        # each child's new mount namespace starts as a copy of it, so a child
        # only adds its package and scratch and pivots.
        try:
            _ns.build_root(self.root_plan)
        except OSError as e:
            self.layers.update({name: False for name in steps})
            self.notes["root"] = str(e)
            return
        r, w = os.pipe2(os.O_CLOEXEC)
        uid = self.uid_pool.take()
        owner = uid if self.root_uid else 0  # of the scratch, in the zygote's namespace
        try:
            pid = _ns.fork_in_new_pidns(self.pidns_fd)
        except OSError as e:
            os.close(r)
            os.close(w)
            self.uid_pool.give_back(uid)
            self.layers.update({name: False for name in steps})
            self.notes["pidns"] = str(e)
            return
        if pid == 0:  # pragma: no cover - the child never returns
            step = "pidns"
            try:
                if os.getpid() != 1:
                    raise OSError("not pid 1 of a new PID namespace")
                step = "call_namespaces"
                _ns.unshare_call_namespaces()
                proc_fd = None if self.root_uid else _ns.open_proc_self()
                step = "pivot_root"
                _ns.finish_root(self.root_plan, empty_dir, False, 4096, 16, owner, owner)
                if os.listdir("/") == [] or os.path.exists(mountpoint + "/pkg"):
                    raise OSError("the new root is not in place")
                step = identity
                if self.root_uid:
                    _ns.become(uid, uid)
                else:
                    _ns.enter_call_user_namespace(proc_fd, uid)
                os.write(w, b"ok")
            except BaseException as e:
                os.write(w, f"{step}:{e}"[:400].encode())
            finally:
                os._exit(0)
        os.close(w)
        answer = b""
        while True:
            chunk = os.read(r, 512)
            if not chunk:
                break
            answer += chunk
        os.close(r)
        os.waitpid(pid, 0)
        self.uid_pool.give_back(uid)
        if answer == b"ok":
            failed = None
        else:
            failed, _, why = answer.decode(errors="replace").partition(":")
            if failed not in steps:
                failed, why = "pidns", answer.decode(errors="replace") or "the test child died"
            self.notes[failed] = why
        ok = True
        for name in steps:
            if name == failed:
                ok = False
            self.layers[name] = ok
        for name in ("pidns", "root", identity):
            if name in self.disabled:
                self.layers[name] = False
                self.notes[name] = "disabled by the operator"
        self.use_pidns = self.layers["pidns"]
        self.use_namespaces = all(self.layers[name] for name in steps[1:4])
        self.use_uid = self.layers[identity] and self.root_uid
        self.use_call_userns = self.layers[identity] and not self.root_uid
        uids = f"uids {self.uid_pool.base}..{self.uid_pool.base + self.uid_pool.size - 1}"
        if self.root_uid:
            self.notes["uid_pool"] = uids
        elif self.use_call_userns:
            self.notes["userns"] = (f"the zygote's, and one per call nested in it ({uids} inside, "
                                    "mapped to the peer's uid; a task count of its own)")

    def setup_cgroups(self, tag: str) -> None:
        """A memory and a pids cgroup per child where the host lets us make
        them; otherwise the rlimits (and the call's own uid or user
        namespace, for tasks) are the bounds, and the note says why."""
        if "cgroup" in self.disabled:
            self.cgroups.why_not = {name: "disabled by the operator" for name in _cgroup.CONTROLLERS}
        else:
            self.cgroups.setup(tag)
        self.layers["cgroup_memory"] = self.cgroups.memory
        self.layers["cgroup_pids"] = self.cgroups.pids
        self.layers["cgroup"] = self.cgroups.memory and self.cgroups.pids
        note = self.cgroups.report()
        if not self.cgroups.memory:
            note += ("; memory is bounded by RLIMIT_AS alone, and an allocation past it ends "
                     "ERROR (no kernel witness for MEMORY)")
        if not self.cgroups.pids:
            note += "; tasks are bounded by RLIMIT_NPROC of the call's own uid or user namespace"
        self.notes["cgroup"] = note

    def missing(self) -> list[str]:
        required = REQUIRED_LAYERS + ("uid_pool" if self.root_uid else "userns",)
        return [name for name in required if not self.layers.get(name)]


class Writer:
    """Non-blocking, buffered writes to one fd through the selector."""

    def __init__(self, loop: "Loop", fd: int, on_error=None):
        self.loop = loop
        self.fd = fd
        self.buf = bytearray()
        self.registered = False
        self.closed = False
        self.closing = False
        self.on_error = on_error
        os.set_blocking(fd, False)

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        self.buf += data
        self._flush()

    def close_when_flushed(self) -> None:
        self.closing = True
        self._flush()

    def _flush(self) -> None:
        try:
            while self.buf:
                n = os.write(self.fd, self.buf[: 1 << 20])
                del self.buf[:n]
        except BlockingIOError:
            pass
        except OSError:
            self.close()
            if self.on_error:
                self.on_error()
            return
        if not self.buf and self.closing:
            self.close()
            return
        if self.buf and not self.registered:
            self.loop.sel.register(self.fd, selectors.EVENT_WRITE, self.on_writable)
            self.registered = True
        elif not self.buf and self.registered:
            self.loop.sel.unregister(self.fd)
            self.registered = False

    def on_writable(self) -> None:
        self._flush()

    def close(self) -> None:
        if self.closed:
            return
        if self.registered:
            self.loop.sel.unregister(self.fd)
            self.registered = False
        self.closed = True
        try:
            os.close(self.fd)
        except OSError:
            pass


class Primed:
    """The owner of a primed child until a call adopts it."""

    call = None

    def __init__(self, key):
        self.key = key
        self.finished = False


class Gate:
    """A child's stdin, held shut until the zygote has taken the child's
    seccomp listener: the child waits for ``G`` before it closes its own
    copy of the listener and runs function code."""

    def __init__(self, writer: "Writer"):
        self.writer = writer
        self.held = bytearray()
        self.opened = False
        self.closing = False

    def write(self, data: bytes) -> None:
        if self.opened:
            self.writer.write(data)
        else:
            self.held += data

    def close_when_flushed(self) -> None:
        if self.opened:
            self.writer.close_when_flushed()
        else:
            self.closing = True

    def close(self) -> None:
        self.writer.close()

    def open(self) -> None:
        if self.opened:
            return
        self.opened = True
        self.writer.write(b"G" + bytes(self.held))
        self.held = bytearray()
        if self.closing:
            self.writer.close_when_flushed()


class Call:
    def __init__(self, ctl: dict, event: bytes, t_start: float):
        self.ctl = ctl
        self.id = ctl["id"]
        self.event = event
        self.t_start = t_start
        self.t_ready: float | None = None
        self.timeout_s = float(ctl["timeout_s"])
        self.boot_max_s = float(ctl.get("boot_max_s", BOOT_MAX_S))
        self.out = bytearray()
        self.log = bytearray()
        self.log_dropped = 0
        self.timed_out = False
        self.too_large = False
        self.syscall: int | None = None
        self.setup_error: str | None = None
        self.worker: "Worker | None" = None
        self.proc: "Proc | None" = None
        self.finished = False
        self.protocol_error: str | None = None
        self.aborted = False
        self.cancelled = False  # the peer withdrew it

    @property
    def deadline(self) -> float:
        """Booting the jail never counts against the call's time: its
        ``timeout_s`` runs from when the jail is up (the child's ``R``, or at
        once for a warm worker or a primed child).  Until then the call has
        ``timeout_s`` + ``boot_max_s`` from its arrival."""
        if self.t_ready is None:
            return self.t_start + self.timeout_s + self.boot_max_s
        return self.t_ready + self.timeout_s

    @property
    def output_max(self) -> int:
        return int(self.ctl["output_max_bytes"])

    @property
    def log_max(self) -> int:
        return int(self.ctl["log_max_bytes"])

    def add_log(self, data: bytes) -> None:
        room = self.log_max - len(self.log)
        if room > 0:
            self.log += data[:room]
        self.log_dropped += max(0, len(data) - max(room, 0))


class Proc:
    """One jailed child: its pid, pidfd, pipes, uid and (unconfined only) scratch dir."""

    def __init__(self, loop: "Loop", pid: int, pidfd: int, uid: int | None, scratch: str | None):
        self.loop = loop
        self.pid = pid
        self.pidfd = pidfd  # for signals only; the template reports the exit
        self.uid = uid
        self.scratch = scratch
        self.fds: dict[int, str] = {}
        self.exit_status: int | None = None
        self.cpu_s = 0.0
        self.status_buf = bytearray()
        self.ready = False
        self.reaped = False
        self.listener: int | None = None  # our copy of its seccomp notification fd
        self.gate: Gate | None = None
        self.cgroup: "_cgroup.CallGroup | None" = None

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def signal(self, sig: int) -> None:
        if not self.reaped:
            try:
                signal.pidfd_send_signal(self.pidfd, sig)
            except OSError:
                pass


class Worker:
    """A warm, jailed python worker serving one function, one call at a time.
    Stopped (SIGSTOP) whenever it has no call."""

    def __init__(self, key, proc: Proc, stdin: Writer, output_max: int):
        self.key = key
        self.proc = proc
        self.stdin = stdin
        self.call: Call | None = None
        self.decoder = FrameDecoder(max_data_bytes=ANSWER_MAX_BYTES)
        self.received = 0  # bytes read from its stdout during this call
        self.answer: tuple | None = None  # (kind, output) while it is being stopped
        self.calls_served = 0
        self.last_used = _now()
        self.dead = False


class Template:
    """The zygote's end of the template: a pristine process, forked before
    the first call, that forks (and reaps) every jailed child.

    The zygote holds every tenant's input and output in flight; it never
    forks, so no child starts from a heap where another tenant's bytes were.
    The template never sees a tenant's code, input or output: it gets a
    child's pipe ends (SCM_RIGHTS) and answers with the child's pid and a
    pidfd; when a child exits it reports the exit status and CPU time the
    kernel gave it.  Messages (SOCK_SEQPACKET, one per datagram):

    - zygote -> template: ``S`` with 4 fds (order_r, out_w, err_w, st_w),
      then the ``cgroup.procs`` of the child's own cgroup (one per
      hierarchy) for it to join;
      ``H`` (are you alive and answering?); ``W`` + pid (say when this
      child is stopped: a warm worker the zygote just sent SIGSTOP);
    - template -> zygote: ``P`` + pid (the reply, with the pidfd attached,
      or pid -1), ``X`` + pid + wait status + CPU microseconds, ``T`` + pid
      (the kernel reports it stopped), ``h``."""

    PID = struct.Struct(">q")
    EXIT = struct.Struct(">qiq")
    TIMEOUT_S = 5.0

    def __init__(self, pid: int, sock):
        # The zygote's own child: never signalled by pid after it is reaped.
        self.pid = pid
        self.sock = sock
        self.broken = False
        self.exits: collections.deque = collections.deque()  # (pid, status, cpu_s)
        self.replies: collections.deque = collections.deque()  # (pid, pidfd) or None
        self.stops: collections.deque = collections.deque()  # pids seen stopped
        self.healthy = 0  # health answers not yet passed on

    @classmethod
    def start(cls, jail: Jail) -> "Template":
        import socket

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the template never returns
            try:
                ours.close()
                if jail.uid_pool is not None:
                    jail.uid_pool.drop_leases()  # the zygote's; a copy here would keep them held
                template_main(jail, theirs)
            finally:
                os._exit(0)
        theirs.close()
        return cls(pid, ours)

    def ping(self) -> bool:
        """Ask the template whether it is alive and answering (``H`` -> ``h``)."""
        if self.broken:
            return False
        try:
            self.sock.send(b"H")
            return True
        except OSError:
            self.broken = True
            return False

    def watch_stop(self, pid: int) -> bool:
        """Ask for a ``T`` report once child ``pid`` is stopped."""
        if self.broken:
            return False
        try:
            self.sock.send(b"W" + self.PID.pack(pid))
            return True
        except OSError:
            self.broken = True
            return False

    def request(self, child_fds: list[int]) -> bool:
        """Ask for one child with ``child_fds``; the reply comes later."""
        import socket

        if self.broken:
            return False
        try:
            socket.send_fds(self.sock, [b"S"], child_fds)
            return True
        except OSError:
            self.broken = True
            return False

    def read_reports(self) -> bool:
        """Read everything the template sent: replies go to ``replies``,
        exit reports to ``exits``.  False if it is gone or misbehaves."""
        import socket

        while True:
            try:
                msg, fds, _flags, _addr = socket.recv_fds(self.sock, 64, 2)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                self.broken = True
                return False
            if not msg:
                self.broken = True
                return False
            if msg[:1] == b"X" and len(msg) == 1 + self.EXIT.size and not fds:
                pid, status, cpu_us = self.EXIT.unpack(msg[1:])
                self.exits.append((pid, status, cpu_us / 1e6))
            elif msg == b"h" and not fds:
                self.healthy += 1
            elif msg[:1] == b"T" and len(msg) == 1 + self.PID.size and not fds:
                self.stops.append(self.PID.unpack(msg[1:])[0])
            elif msg[:1] == b"P" and len(msg) == 1 + self.PID.size and len(fds) <= 1:
                (pid,) = self.PID.unpack(msg[1:])
                if pid > 0 and len(fds) == 1:
                    self.replies.append((pid, fds[0]))
                else:
                    for fd in fds:
                        os.close(fd)
                    self.replies.append(None)
            else:
                for fd in fds:
                    os.close(fd)
                self.broken = True
                return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def template_main(jail: Jail, sock) -> None:  # pragma: no cover - runs in the template
    import socket

    _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die with the zygote
    _child._set_name(b"orb-template")
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1):  # never hold the peer's pipes
        os.dup2(null, fd)
    os.close(null)
    children: dict[int, int] = {}  # pidfd -> pid
    pidfds: dict[int, int] = {}  # pid -> pidfd
    watched: set[int] = set()  # pids to report once stopped
    # SIGCHLD (a child stopped) wakes the poll through this pipe.
    wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(wake_r, select.POLLIN)

    def report_stopped() -> None:
        for pid in list(watched):
            try:
                info = os.waitid(os.P_PIDFD, pidfds[pid], os.WSTOPPED | os.WNOHANG)
            except (ChildProcessError, KeyError, OSError):
                watched.discard(pid)
                continue
            if info is not None and info.si_code == os.CLD_STOPPED:
                watched.discard(pid)
                try:
                    sock.send(b"T" + Template.PID.pack(pid))
                except OSError:
                    os._exit(0)

    while True:
        for fd, _ev in poller.poll():
            if fd == wake_r:
                try:
                    while os.read(wake_r, 256):
                        pass
                except OSError:
                    pass
                report_stopped()
            elif fd == sock.fileno():
                try:
                    msg, fds, _flags, _addr = socket.recv_fds(sock, 16, 8)
                except OSError:
                    os._exit(0)
                if not msg:
                    os._exit(0)  # the zygote is gone
                if msg == b"H":
                    try:
                        sock.send(b"h")
                    except OSError:
                        os._exit(0)
                    for f in fds:
                        os.close(f)
                    continue
                if msg[:1] == b"W" and len(msg) == 1 + Template.PID.size:
                    for f in fds:
                        os.close(f)
                    pid = Template.PID.unpack(msg[1:])[0]
                    if pid in pidfds:
                        watched.add(pid)
                        report_stopped()  # it may have stopped already
                    continue
                pid, pidfd = -1, None
                if msg == b"S" and 4 <= len(fds) <= 6:
                    try:
                        pid = _ns.fork_in_new_pidns(jail.pidns_fd if jail.use_pidns else None)
                        if pid == 0:
                            signal.set_wakeup_fd(-1)
                            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                            keep = set(fds) | {f for f, _ in jail.ro_fds} | set(jail.dev_fds)
                            _child.spare(jail, tuple(fds[:4]), keep, tuple(fds[4:]))
                        pidfd = os.pidfd_open(pid)
                    except OSError:
                        pid = -1
                for f in fds:
                    os.close(f)
                try:
                    socket.send_fds(sock, [b"P" + Template.PID.pack(pid)],
                                    [pidfd] if pidfd is not None else [])
                except OSError:
                    os._exit(0)
                if pidfd is not None:
                    # Ours for watching; the zygote got its own copy for signals.
                    children[pidfd] = pid
                    pidfds[pid] = pidfd
                    poller.register(pidfd, select.POLLIN)
            elif fd in children:
                pid = children.pop(fd)
                pidfds.pop(pid, None)
                watched.discard(pid)
                poller.unregister(fd)
                os.close(fd)
                try:
                    _pid, status, usage = os.wait4(pid, 0)
                    cpu_us = int((usage.ru_utime + usage.ru_stime) * 1e6)
                except ChildProcessError:
                    status, cpu_us = 0, 0
                try:
                    sock.send(b"X" + Template.EXIT.pack(pid, status, cpu_us))
                except OSError:
                    os._exit(0)


class Loop:
    def __init__(self, jail: Jail, scratch_root: str, once: bool, max_workers: int,
                 worker_idle_s: float, prefork: bool = True, max_calls: int = 64,
                 template: "Template | None" = None):
        self.jail = jail
        self.template = template
        self.scratch_root = scratch_root
        self.once = once
        self.max_workers = max_workers
        self.worker_idle_s = worker_idle_s
        self.sel = selectors.DefaultSelector()
        self.calls: dict[int, Call] = {}
        self.procs: dict[int, tuple[Proc, object]] = {}  # pid -> (proc, owner)
        self.workers: list[Worker] = []
        self.running = True
        self.stop_deadline = 0.0
        self.runs_seen = 0
        self.scratch_seq = 0
        self.path_cache: dict = {}  # (package_dir, entry) -> realpaths, checked
        self.primed: dict = {}  # primed_key -> (proc, writer, t) or a Primed while on its way
        self.pongs_due: list = []  # pings answered once the template answers its own
        # Children from the template: asked for, ready, and calls waiting.
        self.requested: collections.deque = collections.deque()  # (t, pipe ends, cgroup)
        self.ready_children: collections.deque = collections.deque()
        self.waiters: collections.deque = collections.deque()  # (call, start)
        self.use_spare = prefork and not once
        self.max_calls = max_calls
        self.cleanup: collections.deque = collections.deque()
        # Each child's cgroup, made and joined when it arrives (ahead of its
        # call), limited when its call starts, removed once it is reaped.
        self.groups: dict = {}  # pid -> CallGroup, for children without a call yet
        self.group_cleanup: collections.deque = collections.deque()  # (group, tries)
        self.decoder = FrameDecoder(max_data_bytes=MAX_INPUT_BYTES)
        self.stdout = Writer(self, 1, on_error=self.shutdown)
        os.set_blocking(0, False)
        self.sel.register(0, selectors.EVENT_READ, self.on_control)
        if template is not None:
            template.sock.setblocking(False)
            self.sel.register(template.sock, selectors.EVENT_READ, self.on_template)

    def on_template(self) -> None:
        """Children, exit reports and health answers from the template.
        Anything else, or EOF, means it died or misbehaves."""
        ok = self.template.read_reports()
        while self.template.healthy and self.pongs_due:
            self.template.healthy -= 1
            self.send({"op": "pong", "n": self.pongs_due.pop(0)})
        self.template.healthy = 0
        self.children_arrived()
        while self.template.stops:
            self.worker_stopped(self.template.stops.popleft())
        self.handle_exits()
        if not ok:
            try:
                self.sel.unregister(self.template.sock)
            except (KeyError, ValueError):
                pass
            self.template_failed("the template died")

    def handle_exits(self) -> None:
        exits = self.template.exits
        while exits:
            pid, status, cpu_s = exits.popleft()
            entry = self.procs.get(pid)
            if entry is not None:
                self.on_exit(entry[0], entry[1], status, cpu_s)
                continue
            for child in list(self.ready_children):
                if child[0] == pid:  # a spare died while it waited
                    self.ready_children.remove(child)
                    self.close_child(child, dead=True)
                    self.replenish()

    # -- control channel ------------------------------------------------

    def send(self, ctl: dict, data: bytes = b"") -> None:
        self.stdout.write(encode(ctl, data))

    def on_control(self) -> None:
        try:
            data = os.read(0, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.shutdown()
            return
        try:
            frames = self.decoder.feed(data)
        except FrameError:
            self.shutdown()
            return
        for ctl, payload in frames:
            op = ctl.get("op")
            if op == "run":
                self.runs_seen += 1
                self.start_call(ctl, payload)
            elif op == "cancel":
                self.cancel_call(ctl.get("id"))
            elif op == "ping":
                # Answered once the template answers too: a hung template
                # then shows as a hung zygote, and the peer replaces both.
                if self.template.pid and _child_exited(self.template.pid):
                    self.template_failed("the template died")
                    return
                self.pongs_due.append(ctl.get("n"))
                del self.pongs_due[:-4]
                if not self.template.ping():
                    self.template_failed("the template does not take requests")
                    return
            elif op == "stop":
                self.shutdown()
                return

    def shutdown(self) -> None:
        if not self.running:
            return
        self.running = False
        self.stop_deadline = _now() + 2.0  # for the template's last exit reports
        try:
            self.sel.unregister(0)
        except (KeyError, ValueError):
            pass
        while self.ready_children:
            self.close_child(self.ready_children.popleft())
        self.expire_primed(0.0)
        for call in self.calls.values():
            call.aborted = True
        for proc, _owner in list(self.procs.values()):
            proc.kill()

    # -- calls ----------------------------------------------------------

    def start_call(self, ctl: dict, event: bytes) -> None:
        t_start = _now()
        try:
            call = Call(ctl, event, t_start)
        except (KeyError, TypeError, ValueError) as e:
            self.send({"op": "done", "id": ctl.get("id"), "status": "INTERNAL",
                       "message": f"bad run request: {e}", "boot_ms": 0, "exec_ms": 0,
                       "out_len": 0, "log_len": 0})
            return
        if len(self.calls) >= self.max_calls:
            # The peer bounds its own concurrency; this bounds the zygote's
            # memory even if a peer does not.
            call.finished = True
            self.send({"op": "done", "id": call.id, "status": "BUSY",
                       "message": f"zygote is running {len(self.calls)} calls already",
                       "boot_ms": 0, "exec_ms": 0, "out_len": 0, "log_len": 0})
            return
        self.calls[call.id] = call
        missing = self.jail.missing()
        if missing and not self.jail.allow_unconfined:
            self.finish(call, "REFUSED", "jail layers missing on this host: " + ", ".join(missing))
            return
        try:
            spec = self.make_spec(ctl)
        except ValueError as e:
            self.finish(call, "ERROR", str(e))
            return
        if ctl.get("reuse") == "per-function" and spec["runtime"] == "python":
            if self.run_in_worker(spec, call):
                return
        self.fork_once(call, spec)

    def cancel_call(self, call_id) -> None:
        """The peer withdrew a call.  Waiting for a child: it ends now.
        Running: its child (or warm worker) is killed, and it ends when the
        template reports the exit, like any other ending."""
        call = self.calls.get(call_id) if isinstance(call_id, int) else None
        if call is None or call.finished or call.cancelled:
            return
        call.cancelled = True
        if call.proc is None:
            self.unwait(call)
            self.finish(call, "INTERNAL", "cancelled by the caller")
        elif call.worker is not None:
            self.retire(call.worker)
        else:
            call.proc.kill()

    def unwait(self, call: Call) -> None:
        """Take a call that has no child yet off the waiting list, with the
        warm worker reserved for it."""
        self.waiters = collections.deque(w for w in self.waiters if w[0] is not call)
        w = call.worker
        if w is not None and w.proc is None and not w.dead:
            w.dead = True
            self.workers.remove(w)

    def make_spec(self, ctl: dict) -> dict:
        runtime = ctl.get("runtime")
        if runtime not in ("python", "exec"):
            raise ValueError(f"unknown runtime {runtime!r}")
        key = (str(ctl["package_dir"]), str(ctl["entry"]))
        resolved = self.path_cache.get(key)
        if resolved is None:
            pkg = os.path.realpath(key[0])
            entry = os.path.realpath(os.path.join(pkg, key[1]))
            if not os.path.isdir(pkg):
                raise ValueError(f"package dir {pkg} does not exist")
            if os.path.commonpath([pkg, entry]) != pkg:
                raise ValueError("entry is outside the package dir")
            if len(self.path_cache) >= 256:
                self.path_cache.pop(next(iter(self.path_cache)))
            self.path_cache[key] = resolved = (pkg, entry)
        pkg, entry = resolved
        try:
            st = os.stat(entry)
        except OSError:
            self.path_cache.pop(key, None)
            raise ValueError(f"entry {ctl['entry']} not found in the package") from None
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"entry {ctl['entry']} is not a regular file")
        # Inside the child's root the package is at /pkg (with namespaces).
        inner_pkg = _ns.PKG_DIR if self.jail.use_namespaces else pkg
        inner_entry = inner_pkg + "/" + os.path.relpath(entry, pkg)
        spec = {
            "runtime": runtime,
            "package_dir": pkg,
            "package_root": inner_pkg,
            "entry": inner_entry,
            "fid": str(ctl.get("fid", "")),
            "request_id": str(ctl.get("request_id", "")),
            "timeout_s": float(ctl["timeout_s"]),
            "memory_mb": int(ctl["memory_mb"]),
            "as_bytes": self.address_space_bytes(int(ctl["memory_mb"])),
            "cpu_s": max(1, int(float(ctl["timeout_s"]) + 1.999)),
            "fsize_bytes": int(ctl["scratch_max_bytes"]),
            "scratch_max_bytes": int(ctl["scratch_max_bytes"]),
            "scratch_inodes": int(ctl.get("scratch_max_inodes", 4096)),
            "nofile": int(ctl.get("nofile", 64)),
            "nproc": int(ctl.get("max_tasks", 64)),
            "input_max_bytes": MAX_INPUT_BYTES,
            "exec_paths": [],
        }
        if runtime == "exec":
            if not st.st_mode & 0o111:
                raise ValueError(f"entry {ctl['entry']} is not executable")
            with open(entry, "rb") as f:
                head = f.read(256)
            if head.startswith(b"#!"):
                line = head[2:].split(b"\n", 1)[0].strip()
                interp = line.split()[0].decode(errors="replace") if line else ""
                real = os.path.realpath(interp) if interp else ""
                if real not in self.jail.interpreters:
                    raise ValueError(f"interpreter {interp!r} is not on the allowlist "
                                     f"({', '.join(sorted(self.jail.interpreters))})")
                spec["exec_paths"].append(real)
            elif not head.startswith(b"\x7fELF"):
                raise ValueError("entry is neither an ELF binary nor a #! script")
            spec["exec_paths"].extend(self.jail.loaders)
        return spec

    def address_space_bytes(self, memory_mb: int) -> int:
        """RLIMIT_AS: the memory limit itself without a memory cgroup.  With
        one, the cgroup is the bound (it counts what is resident, shared and
        tmpfs pages too, and its OOM kill is the kernel's witness for the
        MEMORY verdict), so the address space gets room enough that the
        cgroup binds first, and stays bounded."""
        mem = memory_mb * 1024 * 1024
        if self.jail.cgroups.memory:
            return 2 * mem + (1 << 30)
        return mem

    def new_identity(self, spec: dict) -> tuple[dict, int | None, str | None]:
        """The call's uid (from the pool, when root) and, without namespaces
        (the loud opt-out only), a scratch dir on the host."""
        uid = None
        if self.jail.use_uid or self.jail.use_call_userns:
            uid = self.jail.uid_pool.take()
            if uid is None:
                raise OSError(errno.EAGAIN, "the uid pool is exhausted")
        scratch = None
        if not self.jail.use_namespaces:
            self.scratch_seq += 1
            scratch = os.path.join(self.scratch_root, f"call-{self.scratch_seq}")
            os.mkdir(scratch, 0o700)
            if self.jail.use_uid:
                os.chown(scratch, uid, uid)
        if self.jail.use_call_userns:  # the uid inside the call's own user namespace
            return dict(spec, uid=None, gid=None, inside_uid=uid, scratch=scratch), uid, scratch
        return dict(spec, uid=uid, gid=uid, scratch=scratch), uid, scratch

    def release(self, proc: Proc) -> None:
        """A reaped child's uid goes back to the pool; its scratch (host
        dir, unconfined only) is wiped when the loop is next idle.  With
        namespaces the scratch was a tmpfs in the child's own mount
        namespace, gone with it."""
        if self.jail.uid_pool is not None:
            self.jail.uid_pool.give_back(proc.uid)
        proc.uid = None
        if proc.cgroup is not None:
            self.drop_group(proc.cgroup)
            proc.cgroup = None
        if proc.scratch:
            self.cleanup.append(proc.scratch)
            if len(self.cleanup) > 8:
                self.run_cleanup()

    def drop_group(self, group) -> None:
        """Remove a dead child's cgroup when the loop is next idle (rmdir of a
        memory cgroup costs ~0.1 ms: not between a call's answer and the next)."""
        self.group_cleanup.append((group, 0))
        if len(self.group_cleanup) > 16:
            self.run_cleanup()

    def run_cleanup(self) -> None:
        while self.cleanup:
            _ns.remove_tree(self.cleanup.popleft())
        for _ in range(len(self.group_cleanup)):
            group, tries = self.group_cleanup.popleft()
            if not group.remove() and tries < 1000:
                self.group_cleanup.append((group, tries + 1))

    def watch(self, proc: Proc, owner, out_r: int, err_r: int, st_r: int) -> None:
        proc.fds = {out_r: "out", err_r: "err", st_r: "status"}
        for fd, kind in proc.fds.items():
            self.sel.register(fd, selectors.EVENT_READ, (self.on_pipe, proc, owner, fd, kind))
        self.procs[proc.pid] = (proc, owner)

    # -- children from the template ---------------------------------------

    def request_child(self) -> None:
        """Ask the template for one more child; it arrives in on_template."""
        order_r, order_w = os.pipe2(os.O_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        st_r, st_w = os.pipe2(os.O_CLOEXEC)
        child_fds = [order_r, out_w, err_w, st_w]
        # Its cgroup, made now; the child joins it itself, first thing, so
        # the move costs this loop nothing (join_group is the fallback).
        group = None
        if self.jail.cgroups.parents:
            try:
                group = self.jail.cgroups.new_group()
                child_fds += group.open_procs()
            except OSError:
                if group is not None:
                    self.drop_group(group)
                group = None
                del child_fds[4:]
        try:
            sent = self.template.request(child_fds)
        finally:
            for fd in child_fds:
                os.close(fd)
        if not sent:
            for fd in (order_w, out_r, err_r, st_r):
                os.close(fd)
            if group is not None:
                self.drop_group(group)
            self.template_failed("the template does not take requests")
            return
        self.requested.append((_now(), (order_w, out_r, err_r, st_r), group))

    def replenish(self) -> None:
        """Keep one spare ready (or on its way) beyond the calls waiting."""
        if not self.running or self.template.broken:
            return
        want = len(self.waiters) + (1 if self.use_spare else 0)
        while len(self.ready_children) + len(self.requested) < want:
            self.request_child()
            if self.template.broken:
                return

    def acquire_child(self, call: Call, start) -> None:
        """``start(child)`` now with a ready child, or once one arrives."""
        if self.ready_children:
            child = self.ready_children.popleft()
            # The call first: its child sets up its jail on the other core
            # while the next spare (and its cgroup) is asked for.
            start(child)
            self.replenish()
            return
        self.waiters.append((call, start))
        self.replenish()

    def children_arrived(self) -> None:
        replies = self.template.replies
        while replies and self.requested:
            reply = replies.popleft()
            _t, ends, group = self.requested.popleft()
            if reply is None:
                for fd in ends:
                    os.close(fd)
                if group is not None:
                    self.drop_group(group)
                self.template_failed("the template could not fork a jailed child")
                return
            child = reply + ends  # (pid, pidfd, order_w, out_r, err_r, st_r)
            if group is not None:
                # It joined (or, failing, says so on its status pipe and
                # exits: its call ends INTERNAL, never unbounded).
                self.groups[child[0]] = group
            else:
                self.join_group(child[0])
            if self.waiters:
                call, start = self.waiters.popleft()
                start(child)
            else:
                self.ready_children.append(child)
        self.replenish()

    def join_group(self, pid: int) -> None:
        """Put a new child in a cgroup of its own, before it has a call."""
        if not self.jail.cgroups.parents:
            return
        try:
            group = self.jail.cgroups.new_group()
        except OSError:
            return  # start_child tries again, and fails the call if it cannot
        try:
            group.attach(pid)
        except OSError:
            self.drop_group(group)
            return
        self.groups[pid] = group

    def close_child(self, child: tuple, dead: bool = False) -> None:
        pid, pidfd, order_w, out_r, err_r, st_r = child
        group = self.groups.pop(pid, None)
        if not dead:
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except OSError:
                pass
        for fd in (pidfd, order_w, out_r, err_r, st_r):
            os.close(fd)
        if group is not None:
            self.group_cleanup.append((group, 0))

    def template_failed(self, why: str) -> None:
        """No call can start without the template: stop, so the peer sees the
        zygote exit and starts a new one.  Calls waiting end INTERNAL."""
        self.template.broken = True
        while self.waiters:
            call, _start = self.waiters.popleft()
            if call is not None:
                self.finish(call, "INTERNAL", f"{why}; the zygote is being replaced")
        if self.running:
            sys.stderr.write(f"orb zygote: {why}; exiting so the peer replaces us\n")
            self.shutdown()

    def start_child(self, child: tuple, spec: dict, owner) -> tuple[Proc, "Writer | Gate"]:
        """Send ``spec`` to a waiting child and watch it; returns its Proc and
        the writer of its stdin (the order pipe)."""
        pid, pidfd, order_w, out_r, err_r, st_r = child
        try:
            group = self.limit_group(pid, spec)
        except OSError as e:
            self.close_child(child)
            raise OSError(e.errno, f"could not bound it with a cgroup: {e.strerror or e}") from None
        try:
            order, uid, scratch = self.new_identity(spec)
        except OSError:
            if group is not None:
                self.groups[pid] = group  # close_child removes it
            self.close_child(child)
            raise
        body = json.dumps(order).encode()
        proc = Proc(self, pid, pidfd, uid, scratch)
        proc.cgroup = group
        for fd in (out_r, err_r, st_r):
            os.set_blocking(fd, False)
        writer = Writer(self, order_w)
        writer.write(_child.ORDER_HEADER.pack(len(body)) + body)
        if self.jail.use_notify and self.jail.use_seccomp:
            proc.gate = writer = Gate(writer)
        self.watch(proc, owner, out_r, err_r, st_r)
        return proc, writer

    def limit_group(self, pid: int, spec: dict):
        """The child's cgroup, limited for its call (made now if it had none)."""
        if not self.jail.cgroups.parents:
            return None
        group = self.groups.pop(pid, None)
        if group is None:
            group = self.jail.cgroups.new_group()
            try:
                group.attach(pid)
            except OSError:
                self.drop_group(group)
                raise
        try:
            group.limit(int(spec["memory_mb"]) * 1024 * 1024, int(spec["nproc"]))
        except OSError:
            self.groups[pid] = group
            raise
        return group

    def fork_once(self, call: Call, spec: dict) -> None:
        key = self.primed_key(spec)
        primed = self.primed.get(key) if key is not None else None
        if isinstance(primed, tuple):  # (a Primed placeholder: still on its way)
            del self.primed[key]
            # A child readied for this function after its last call: its jail
            # is up (or nearly); only the input is missing.
            proc, writer, _t = primed
            self.adopt(proc, call)
            self.send_input(call, proc, writer)
            if proc.ready and call.t_ready is None:
                call.t_ready = call.t_start
            self.prime(key, spec)
            return

        def start(child):
            if call.finished:
                self.ready_children.appendleft(child)
                return
            try:
                proc, writer = self.start_child(child, spec, call)
            except OSError as e:
                self.finish(call, "INTERNAL", f"could not start the jailed child: {e}")
                return
            self.send_input(call, proc, writer)

        self.acquire_child(call, start)
        if key is not None:
            self.prime(key, spec)

    def send_input(self, call: Call, proc: Proc, writer) -> None:
        if call.ctl.get("runtime") == "python":
            head = json.dumps({"request_id": str(call.ctl.get("request_id", "")),
                               "timeout_s": float(call.ctl["timeout_s"]),
                               "secrets": call.ctl.pop("secrets", None) or {}}).encode()
            writer.write(_child.CALL_HEADER.pack(len(head)) + head)
        writer.write(call.event)
        writer.close_when_flushed()
        call.event = b""
        call.proc = proc
        call.input_writer = writer

    # -- primed children: the next call of a function, jailed ahead ----------

    def primed_key(self, spec: dict) -> tuple | None:
        """Calls of the same function with the same limits can use a child
        primed for them; ``None`` for the runtimes that cannot (exec reads
        raw stdin, so it gets no call header)."""
        if not self.use_spare or spec["runtime"] != "python":
            return None
        return (spec["fid"], spec["package_dir"], spec["entry"], spec["memory_mb"], spec["cpu_s"],
                spec["nofile"], spec["nproc"], spec["scratch_max_bytes"], spec["scratch_inodes"])

    def prime(self, key: tuple, spec: dict) -> None:
        """Ready a child for the next call of this function: a fresh process
        that has run no code of it, its package and scratch mounted, its
        uid, limits, Landlock and seccomp in place, waiting for its input."""
        if key in self.primed or len(self.primed) >= MAX_PRIMED or not self.running:
            return
        holder = Primed(key)
        self.primed[key] = holder  # reserved while the child is on its way

        def start(child):
            if self.primed.get(key) is not holder or not self.running:
                self.ready_children.appendleft(child)
                return
            try:
                proc, writer = self.start_child(child, spec, holder)
            except OSError:
                self.primed.pop(key, None)
                return
            self.primed[key] = (proc, writer, _now())

        self.acquire_child(None, start)

    def adopt(self, proc: Proc, owner) -> None:
        """Point a primed child's pipes and notifications at its call."""
        self.procs[proc.pid] = (proc, owner)
        for fd, kind in proc.fds.items():
            self.sel.modify(fd, selectors.EVENT_READ, (self.on_pipe, proc, owner, fd, kind))
        if proc.listener is not None:
            self.sel.modify(proc.listener, selectors.EVENT_READ, (self.on_notify, proc, owner))

    def expire_primed(self, max_age_s: float = PRIMED_IDLE_S) -> None:
        now = _now()
        for key, entry in list(self.primed.items()):
            if isinstance(entry, tuple) and (now - entry[2] > max_age_s or not self.running):
                del self.primed[key]
                entry[1].close()
                entry[0].kill()

    # -- warm workers -----------------------------------------------------

    def worker_key(self, spec: dict) -> tuple:
        return (spec["fid"], spec["package_dir"], spec["entry"], spec["memory_mb"], spec["nofile"],
                spec["scratch_max_bytes"])

    def run_in_worker(self, spec: dict, call: Call) -> bool:
        """Hand the call to a warm worker of its function, starting one if
        needed; False if none can be had (then it runs per call)."""
        key = self.worker_key(spec)
        for w in self.workers:
            if w.key == key and w.call is None and not w.dead and w.proc is not None:
                self.dispatch_to_worker(w, call)
                return True
        live = [w for w in self.workers if not w.dead]
        if len(live) >= self.max_workers:
            idle = sorted((w for w in live if w.call is None and w.proc is not None),
                          key=lambda w: w.last_used)
            if not idle:
                return False
            self.retire(idle[0])
        wspec = dict(spec, worker=True, cpu_s=WORKER_CPU_S)
        worker = Worker(key, None, None, call.output_max)
        worker.call = call  # reserved for this call until it is up
        call.worker = worker
        self.workers.append(worker)

        def start(child):
            if call.finished or worker.dead:
                self.ready_children.appendleft(child)
                if not worker.dead:
                    worker.dead = True
                    self.workers.remove(worker)
                return
            try:
                worker.proc, worker.stdin = self.start_child(child, wspec, worker)
            except OSError as e:
                worker.dead = True
                self.workers.remove(worker)
                self.finish(call, "INTERNAL", f"could not start the warm worker: {e}")
                return
            self.dispatch_to_worker(worker, call)

        self.acquire_child(call, start)
        return True

    def dispatch_to_worker(self, worker: Worker, call: Call) -> None:
        worker.call = call
        call.worker = worker
        call.proc = worker.proc
        if worker.proc.ready:
            # Warm: the jail is already up; function code starts now.
            call.t_ready = call.t_start
        # Whatever the worker wrote after its last answer (it was stopped
        # right after it) belongs to no call: drop it, then wake it.
        self.discard_pending(worker)
        worker.decoder = FrameDecoder(max_data_bytes=ANSWER_MAX_BYTES)
        worker.received = 0
        worker.answer = None
        worker.stdin.write(encode({"fid": call.ctl.get("fid", ""),
                                   "request_id": call.ctl.get("request_id", ""),
                                   "timeout_s": call.ctl["timeout_s"],
                                   "secrets": call.ctl.pop("secrets", None) or {}}, call.event))
        call.event = b""
        worker.proc.signal(signal.SIGCONT)

    def discard_pending(self, worker: Worker) -> None:
        for fd, kind in list(worker.proc.fds.items()):
            if kind == "status":
                continue
            for _ in range(64):
                try:
                    if not os.read(fd, 1 << 16):
                        break
                except OSError:
                    break

    def retire(self, worker: Worker) -> None:
        worker.dead = True
        if worker.stdin is not None:
            worker.stdin.close()
        if worker.proc is not None:
            worker.proc.kill()
        elif worker in self.workers:
            self.workers.remove(worker)

    def reap_idle_workers(self) -> None:
        now = _now()
        for w in list(self.workers):
            if not w.dead and w.call is None and (
                now - w.last_used > self.worker_idle_s or w.calls_served >= WORKER_MAX_CALLS
            ):
                self.retire(w)

    # -- child events -----------------------------------------------------

    def on_pipe(self, proc: Proc, owner, fd: int, kind: str) -> None:
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.sel.unregister(fd)
            os.close(fd)
            del proc.fds[fd]
            return
        self.pipe_data(proc, owner, kind, data)

    def pipe_data(self, proc: Proc, owner, kind: str, data: bytes) -> None:
        call = owner if isinstance(owner, Call) else owner.call
        if kind == "status":
            proc.status_buf += data[:1024]
            self.parse_status(proc, call)
            return
        if call is None or call.finished:
            return  # an idle worker's stray log or output: dropped
        if kind == "err":
            call.add_log(data)
        elif isinstance(owner, Worker):
            if owner.answer is not None:
                return  # answered; being stopped: later bytes belong to no call
            owner.received += len(data)
            if owner.received > call.output_max + HEADER.size + MAX_CTL_BYTES:
                call.too_large = True  # counted here, not announced by a header
                self.retire(owner)
                return
            try:
                frames = owner.decoder.feed(data)
            except FrameError as e:
                call.protocol_error = call.protocol_error or (
                    f"the function wrote garbage to the worker's result channel ({e})")
                self.retire(owner)
                return
            for ctl, out in frames[:1]:
                if len(out) > call.output_max:
                    call.too_large = True
                    self.retire(owner)
                    return
                self.worker_answered(owner, ctl, out)
        else:
            room = call.output_max - len(call.out)
            if len(data) > room:
                call.too_large = True
                proc.kill()
                return
            call.out += data

    def parse_status(self, proc: Proc, call: Call | None) -> None:
        """The status pipe carries ``R`` + int32 (jail closed; the child's
        seccomp listener fd or -1) or ``E`` + text (setup failed), both
        written before any function code runs; the child closes it before
        running function code.  The time is the zygote's own."""
        buf = proc.status_buf
        if proc.ready or not buf:
            return
        tag = bytes(buf[:1])
        if tag == b"R":
            if len(buf) < 5:
                return
            (listener,) = struct.unpack("<i", bytes(buf[1:5]))
            del buf[:]
            proc.ready = True
            if call is not None and call.t_ready is None:
                call.t_ready = _now()
            if proc.gate is not None:
                try:
                    self.take_listener(proc, listener)
                except OSError as e:
                    if call is not None:
                        call.setup_error = f"could not take the seccomp listener: {e}"
                        proc.ready = False
                    proc.kill()
                    return
                proc.gate.open()
        elif tag == b"E":
            if call is not None and call.setup_error is None:
                call.setup_error = bytes(buf[1:513]).decode(errors="replace")
        else:
            del buf[:]

    def syscall_name(self, nr: int) -> str:
        return self.jail.syscall_names.get(nr, f"syscall {nr}")

    def take_listener(self, proc: Proc, fd: int) -> None:
        if fd < 0:
            raise OSError(errno.EBADF, "the child has no listener")
        proc.listener = _seccomp.take_fd(proc.pidfd, fd)
        os.set_blocking(proc.listener, False)
        owner = self.procs[proc.pid][1]
        self.sel.register(proc.listener, selectors.EVENT_READ, (self.on_notify, proc, owner))

    def on_notify(self, proc: Proc, owner) -> None:
        """The kernel stopped a denied syscall and says which: kill the process."""
        nr = _seccomp.receive_notification(proc.listener)
        if nr is None:  # no process left on the filter (hang-up): nothing to do
            self.drop_listener(proc)
            return
        call = owner if isinstance(owner, Call) else owner.call
        if call is not None and call.syscall is None and not call.finished:
            call.syscall = nr
        proc.kill()

    def drop_listener(self, proc: Proc) -> None:
        if proc.listener is not None:
            try:
                self.sel.unregister(proc.listener)
            except (KeyError, ValueError):
                pass
            os.close(proc.listener)
            proc.listener = None

    def drain(self, proc: Proc, owner) -> None:
        for fd, kind in list(proc.fds.items()):
            while True:
                try:
                    data = os.read(fd, 1 << 16)
                except (BlockingIOError, OSError):
                    break
                if not data:
                    break
                self.pipe_data(proc, owner, kind, data)
            self.sel.unregister(fd)
            os.close(fd)
        proc.fds.clear()

    def on_exit(self, proc: Proc, owner, status: int, cpu_s: float) -> None:
        """The template reaped ``proc``: the kernel already killed whatever
        was left in its PID namespace, and its pipes hold all it wrote."""
        proc.reaped = True
        proc.exit_status = status
        proc.cpu_s = cpu_s
        writer = getattr(owner, "input_writer", None)
        if writer is not None:
            writer.close()
        self.drain(proc, owner)
        self.drop_listener(proc)
        os.close(proc.pidfd)
        del self.procs[proc.pid]
        try:
            self._finish_exit(proc, owner)
        finally:
            self.release(proc)

    def _finish_exit(self, proc: Proc, owner) -> None:
        if isinstance(owner, Primed):  # died before any call took it
            entry = self.primed.get(owner.key)
            if isinstance(entry, tuple) and entry[0] is proc:
                del self.primed[owner.key]
            return
        if isinstance(owner, Worker):
            owner.dead = True
            owner.stdin.close()
            self.workers.remove(owner)
            call = owner.call
            owner.call = None
            if call is not None and not call.finished:
                self.classify_and_finish(call, proc)
        elif not owner.finished:
            self.classify_and_finish(owner, proc)

    def worker_answered(self, worker: Worker, ctl: dict, out: bytes) -> None:
        """The worker wrote its answer: stop it.  The call ends only once
        the kernel says it is stopped (the template's ``T`` report): until
        then the deadline still covers it."""
        call = worker.call
        if call is None:
            return
        # Its own frame says only whether its handler returned or raised:
        # the function's own outcome, like an exit code.  Any other field
        # is ignored.
        worker.answer = ("OK" if ctl.get("kind") == "ok" else "ERROR", out)
        worker.proc.signal(signal.SIGSTOP)
        if not self.template.watch_stop(worker.proc.pid):
            self.template_failed("the template does not take requests")

    def worker_stopped(self, pid: int) -> None:
        """The template saw a worker stop (SIGSTOP took hold)."""
        entry = self.procs.get(pid)
        if entry is None or not isinstance(entry[1], Worker):
            return
        worker = entry[1]
        call = worker.call
        if call is None or worker.answer is None or call.finished or call.cancelled:
            return  # a cancelled call ends when the worker's exit is reported
        for fd, kind in list(worker.proc.fds.items()):
            if kind in ("err", "status"):
                while True:
                    try:
                        data = os.read(fd, 1 << 16)
                    except (BlockingIOError, OSError):
                        break
                    if not data:
                        break
                    if kind == "err":
                        call.add_log(data)
                    else:
                        worker.proc.status_buf += data[:1024]
                        self.parse_status(worker.proc, call)
        status, out = worker.answer
        worker.answer = None
        worker.call = None
        worker.calls_served += 1
        worker.last_used = _now()
        call.out = bytearray(out)
        if status == "OK":
            self.finish(call, "OK", "")
        else:
            self.finish(call, "ERROR", "the handler raised an exception (see log)")

    def classify_and_finish(self, call: Call, proc: Proc) -> None:
        """The verdict, from what the zygote saw: the exit status and signal
        the kernel reported, seccomp notifications, the child's cgroup's
        out-of-memory count, its own clock and its own counts of output
        bytes.  Nothing the function wrote decides it: an exit code is the
        function's own OK (0) or ERROR (anything else), never a limit."""
        status = proc.exit_status or 0
        limit = call.ctl["timeout_s"]
        cpu_limit = max(1, int(float(limit) + 1.999))
        memory_mb = call.ctl["memory_mb"]
        if call.cancelled:
            self.finish(call, "INTERNAL", "cancelled by the caller")
        elif call.setup_error is not None and not proc.ready:
            self.finish(call, "INTERNAL", call.setup_error)
        elif call.syscall is not None:
            # The kernel's notification named it.
            self.finish(call, "KILLED_BY_POLICY",
                        f"seccomp stopped forbidden syscall {self.syscall_name(call.syscall)}")
        elif os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS:
            # seccomp's kill_process; the function cannot send SIGSYS itself
            # (that is a forbidden syscall too).
            self.finish(call, "KILLED_BY_POLICY", "seccomp stopped a forbidden syscall")
        elif (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
              and proc.cgroup is not None and proc.cgroup.oom_kills() > 0):
            # The kernel's OOM killer ended a task of this child's own cgroup
            # (its kill is a SIGKILL: only then is the count worth reading).
            self.finish(call, "MEMORY", f"memory limit of {memory_mb} MB reached "
                        "(the kernel's out-of-memory killer ended the call)")
        elif call.too_large:
            self.finish(call, "OUTPUT_TOO_LARGE", f"output passed the {call.output_max}-byte cap")
        elif call.timed_out:
            self.finish(call, "TIMEOUT", f"wall-clock deadline of {limit} s reached; jail killed")
        elif call.aborted:
            self.finish(call, "INTERNAL", "the executor stopped during the call")
        elif call.protocol_error:
            self.finish(call, "ERROR", call.protocol_error)
        elif not proc.ready:
            self.finish(call, "INTERNAL", "the jailed child died before the function started "
                        f"({_describe_status(status)})")
        elif os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            if sig in (signal.SIGXCPU, signal.SIGKILL) and proc.cpu_s >= cpu_limit - 0.05:
                self.finish(call, "TIMEOUT", f"CPU-time limit of {cpu_limit} s reached")
            elif sig == signal.SIGKILL:
                self.finish(call, "ERROR", "killed by SIGKILL (the function itself, or the "
                            "kernel's out-of-memory killer outside the call's cgroup)")
            else:
                self.finish(call, "ERROR", f"killed by signal {name}")
        else:
            code = os.WEXITSTATUS(status)
            if call.worker is not None:
                self.finish(call, "ERROR", f"the warm worker exited with status {code} during the "
                            f"call (see log; the memory limit is {memory_mb} MB)")
            elif code == _child.EXIT_OK:
                self.finish(call, "OK", "")
            else:
                # The function's own word: a failed allocation (python's
                # MemoryError at the address-space limit) shows in its log.
                self.finish(call, "ERROR", f"function exited with status {code} (see log; the "
                            f"memory limit is {memory_mb} MB)")

    def finish(self, call: Call, status: str, message: str) -> None:
        if call.finished:
            return
        call.finished = True
        now = _now()
        # Every timing is the zygote's own clock.
        if call.t_ready is not None:
            boot, run = call.t_ready - call.t_start, now - call.t_ready
        else:
            boot, run = now - call.t_start, 0.0
        out = bytes(call.out) if status == "OK" else (
            b"" if status == "OUTPUT_TOO_LARGE" else bytes(call.out[: call.output_max]))
        log = bytes(call.log)
        if call.log_dropped:
            note = f"\n[log truncated: {call.log_dropped} more bytes dropped]\n".encode()
            log = log[: max(0, call.log_max - len(note))] + note
        self.calls.pop(call.id, None)
        self.send({"op": "done", "id": call.id, "status": status, "message": message,
                   "boot_ms": _ms(boot), "exec_ms": _ms(run),
                   "out_len": len(out), "log_len": len(log)}, out + log)

    def check_deadlines(self) -> float | None:
        now = _now()
        nearest = None
        if self.requested and now - self.requested[0][0] > Template.TIMEOUT_S:
            self.template_failed(f"the template did not answer within {Template.TIMEOUT_S} s")
        for call in list(self.calls.values()):
            if call.finished:
                continue
            if call.proc is None:  # waiting for a child from the template
                if now >= call.deadline:
                    self.unwait(call)
                    self.finish(call, "TIMEOUT", "deadline passed before a jailed child was ready")
                else:
                    left = call.deadline - now
                    nearest = left if nearest is None else min(nearest, left)
                continue
            if now >= call.deadline:
                if not call.timed_out:
                    call.timed_out = True
                    if call.worker is not None:
                        self.retire(call.worker)
                    else:
                        call.proc.kill()
            else:
                left = call.deadline - now
                nearest = left if nearest is None else min(nearest, left)
        return nearest

    def run(self) -> int:
        while self.running or (self.procs and not self.template.broken
                               and _now() < self.stop_deadline):
            if self.once and self.runs_seen and not self.calls and self.running:
                self.shutdown()
            timeout = self.check_deadlines()
            if self.workers:
                timeout = 1.0 if timeout is None else min(timeout, 1.0)
            if not self.running:
                timeout = 0.5 if timeout is None else min(timeout, 0.5)
            if self.requested or self.primed:
                timeout = 1.0 if timeout is None else min(timeout, 1.0)
            events = self.sel.select(0)
            if not events and (self.cleanup or self.group_cleanup):
                # Scratch wipes (unconfined only) wait for the loop to be
                # idle for IDLE_S, so back-to-back calls never compete with them.
                wait = IDLE_S if timeout is None else min(timeout, IDLE_S)
                events = self.sel.select(wait)
                if not events:
                    self.run_cleanup()
                    events = self.sel.select(0)
            if not events:
                events = self.sel.select(timeout)
            for key, _mask in events:
                # An earlier callback in this batch may have closed this fd
                # (a child's exit drains and closes its pipes) or even reused
                # its number for a new call: skip events for stale keys.
                current = self.sel.get_map().get(key.fd)
                if current is None or current.data is not key.data:
                    continue
                cb = key.data
                if isinstance(cb, tuple):
                    cb[0](*cb[1:])
                else:
                    cb()
            if self.workers:
                self.reap_idle_workers()
            if self.primed:
                self.expire_primed()
            if not self.running:
                for proc, _o in list(self.procs.values()):
                    proc.kill()
        # Flush what is left for the peer, bounded by a short wait.
        end = _now() + 2.0
        while self.stdout.buf and not self.stdout.closed and _now() < end:
            self.sel.select(0.1)
            self.stdout._flush()
        self.template.close()
        for group in self.groups.values():
            self.group_cleanup.append((group, 0))
        self.groups.clear()
        self.run_cleanup()
        end = _now() + 1.0  # children killed a moment ago leave their cgroups soon
        while self.group_cleanup and _now() < end:
            time.sleep(0.01)
            self.run_cleanup()
        self.jail.cgroups.close()
        drop_scratch_root(self.jail, self.scratch_root)
        return 0


def make_scratch_root(base: str | None) -> str:
    # Not tempfile: it imports random, whose at-fork hook would reseed (and
    # read getrandom) in every child.
    root = base or "/tmp"
    os.makedirs(root, mode=0o700, exist_ok=True)
    scratch_root = os.path.join(root, f"orb-zygote-{os.getpid()}-{os.urandom(6).hex()}")
    os.mkdir(scratch_root, 0o755)
    for name in ("root", "empty"):
        os.mkdir(os.path.join(scratch_root, name), 0o755)
    return scratch_root


def drop_scratch_root(jail: Jail, scratch_root: str) -> None:
    """Detach the children's root template, then delete what is left."""
    if jail.root_plan is not None:
        _libc.umount2(jail.root_plan.mountpoint.encode(), _ns.MNT_DETACH)
    _ns.remove_tree(scratch_root)


def setup_jail(args) -> tuple[Jail, str]:
    jail = Jail(args.allow_unconfined, args.uid_base, args.uid_count, tuple(args.disable))
    jail.enter_namespaces()
    scratch_root = make_scratch_root(args.scratch_root)
    jail.setup_cgroups(os.path.basename(scratch_root)[len("orb-zygote-"):])
    jail.self_test(os.path.join(scratch_root, "root"), os.path.join(scratch_root, "empty"))
    return jail, scratch_root


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="orb.exec._zygote")
    parser.add_argument("--once", action="store_true")
    parser.add_argument("--probe", action="store_true")
    parser.add_argument("--scratch-root", default=None)
    parser.add_argument("--max-workers", type=int, default=4)
    parser.add_argument("--worker-idle-s", type=float, default=60.0)
    parser.add_argument("--allow-unconfined", action="store_true")
    parser.add_argument("--no-prefork", action="store_true")
    parser.add_argument("--max-calls", type=int, default=64)
    parser.add_argument("--uid-base", type=int, default=DEFAULT_UID_BASE)
    parser.add_argument("--uid-count", type=int, default=DEFAULT_UID_COUNT)
    parser.add_argument("--disable", action="append", default=[],
                        choices=["seccomp", "seccomp_notify", "landlock", "pidns", "root",
                                 "uid_pool", "userns", "cgroup"],
                        help="switch a layer off (it is then missing: calls are REFUSED "
                             "without --allow-unconfined; for benchmarks)")
    args = parser.parse_args(argv)
    _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die with the peer
    if args.probe:
        jail, scratch_root = setup_jail(args)
        jail.cgroups.close()
        drop_scratch_root(jail, scratch_root)
        sys.stdout.write(json.dumps({"layers": jail.layers, "landlock_abi": jail.landlock_abi,
                                     "missing": jail.missing(), "notes": jail.notes}) + "\n")
        return 0
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    jail, scratch_root = setup_jail(args)
    _child.zygote_setup()
    # Children start from the template's heap: keep the collector from
    # touching (and so copying) its pages in each of them.
    gc.collect()
    gc.freeze()
    # The template is forked before the first call: nothing of any tenant
    # is in its memory, now or later.
    template = Template.start(jail)
    loop = Loop(jail, scratch_root, args.once, args.max_workers, args.worker_idle_s,
                prefork=not args.no_prefork, max_calls=args.max_calls, template=template)
    loop.replenish()
    loop.send({"op": "hello", "pid": host_pid(), "layers": jail.layers,
               "scratch_root": scratch_root,
               "cgroup_dirs": sorted(set(jail.cgroups.parents.values())),
               "landlock_abi": jail.landlock_abi, "missing": jail.missing(), "notes": jail.notes,
               "allow_unconfined": jail.allow_unconfined, "max_ctl_bytes": MAX_CTL_BYTES})
    return loop.run()


if __name__ == "__main__":
    sys.exit(main())
