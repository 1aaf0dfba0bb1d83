# -*- test-case-name: tests.test_exec_jail -*-
"""
The zygote: a fork server the peer starts with ``spawnProcess``.

It is a plain ``selectors`` loop, not a reactor: it reads run requests
(see :mod:`orb.exec._frames`) on stdin, forks one child per call (or hands
the call to a warm worker), watches the child's pipes, pidfd and deadline,
and writes one ``done`` frame per call on stdout.

At start it moves into fresh mount, network and IPC namespaces where the
kernel allows (so every child inherits an empty network namespace and the
per-call scratch tmpfs mounts never show on the host), compiles the seccomp
programs once, pre-opens the runtime's read-only paths for Landlock and
says ``hello`` with the layers it found.

Messages (frames of :mod:`orb.exec._frames`):

- peer -> zygote ``{"op": "run", "id", "runtime", "entry", "package_dir",
  "fid", "request_id", "reuse", "timeout_s", "memory_mb",
  "output_max_bytes", "log_max_bytes", "scratch_max_bytes", "nofile"}`` with
  the input as payload; ``{"op": "stop"}`` (or EOF on stdin) to shut down.
- zygote -> peer ``{"op": "hello", "pid", "layers", "missing",
  "landlock_abi", "notes", "scratch_root", ...}`` once, then per call
  ``{"op": "done", "id", "status", "message", "boot_ms", "exec_ms",
  "out_len", "log_len"}`` with output then log as payload.  ``status`` is a
  :class:`orb.protocol.codes.ResultStatus` name.
- zygote -> warm worker: ``{"fid", "request_id", "timeout_s"}`` + input;
  worker -> zygote ``{"kind": "ok" | "error"}`` + output.
- zygote -> spare: ``_child.ORDER_HEADER`` + spec JSON + marshalled code,
  then the input until EOF.

Usage (internal)::

    python -m orb.exec._zygote [--once] [--probe] [--scratch-root DIR]
                               [--max-workers N] [--worker-idle-s S]
                               [--max-calls N] [--no-prefork] [--allow-unconfined]
"""

import argparse
import collections
import ctypes
import gc
import json
import marshal
import os
import selectors
import shutil
import signal
import stat
import struct
import sys
import time

from . import _child, _landlock, _seccomp
from ._frames import MAX_CTL_BYTES, FrameDecoder, FrameError, FrameTooLarge, encode

# Pre-import what the child runtime uses, so no child has to read ORB's or
# the venv's files after its jail closes.
import importlib.util  # noqa: F401,E402
import io  # noqa: F401,E402
import linecache  # noqa: F401,E402
import threading  # noqa: F401,E402
import tokenize  # noqa: F401,E402
import traceback  # noqa: F401,E402

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

#: Layers a call needs before untrusted code may run.
REQUIRED_LAYERS = (
    "seccomp",
    "landlock_fs",
    "landlock_net",
    "landlock_scope",
    "no_new_privs",
    "rlimits",
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
_EXEC_MEMORY_MARKERS = (b"MemoryError", b"Cannot allocate memory", b"memory allocation of",
                        b"out of memory")
WORKER_CPU_S = 600
ZYGOTE_COMPILE_MAX_BYTES = 64 * 1024
IDLE_S = 0.001
WORKER_MAX_CALLS = 10000


def _now() -> float:
    return time.monotonic()


def _ms(seconds: float) -> float:
    return round(max(0.0, seconds) * 1000.0, 3)


def _unshare(flags: int) -> bool:
    return _libc.unshare(ctypes.c_int(flags)) == 0


def _mount(source, target, fstype, flags, data) -> bool:
    enc = lambda v: v.encode() if isinstance(v, str) else v  # noqa: E731
    return (
        _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) == 0
    )


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 40


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


def _loader_paths() -> list[str]:
    out = []
    for p in ("/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"):
        if os.path.exists(p):
            out.append(os.path.realpath(p))
    return out


class Jail:
    """What the zygote prepared once, for every child to use."""

    def __init__(self, allow_unconfined: bool):
        self.layers: dict = {}
        self.notes: dict = {}
        self.allow_unconfined = allow_unconfined
        self.landlock_abi = _landlock.abi_version()
        self.layers["landlock_fs"] = self.landlock_abi >= 1
        self.layers["landlock_net"] = self.landlock_abi >= 4
        self.layers["landlock_scope"] = self.landlock_abi >= 6
        self.layers["no_new_privs"] = True
        self.layers["rlimits"] = True
        self.programs: dict = {}
        try:
            if not _seccomp.available():
                raise RuntimeError("kernel lacks seccomp filters or libseccomp is missing")
            self.programs = {rt: _seccomp.compile_policy(rt)
                             for rt in ("python", "exec", "python_extra")}
            self.layers["seccomp"] = True
        except Exception as e:
            self.layers["seccomp"] = False
            self.notes["seccomp"] = str(e)
        self.use_landlock = self.landlock_abi >= 1
        self.use_seccomp = self.layers["seccomp"]
        self.last_cap = _last_cap()
        self.ro_fds = []
        for path in runtime_ro_paths():
            got = _landlock.open_path(path)
            if got is not None:
                self.ro_fds.append(got)
        self.dev_fds = []
        for path in ("/dev/null", "/dev/zero", "/dev/urandom"):
            got = _landlock.open_path(path)
            if got is not None:
                self.dev_fds.append(got[0])
        self.interpreters = interpreter_allowlist()
        self.loaders = _loader_paths()
        self.mountns = False

    def enter_namespaces(self) -> None:
        """Fresh net, IPC and mount namespaces for the zygote and every child."""
        netns = _unshare(CLONE_NEWNET)
        self.layers["netns"] = netns
        if not netns:
            self.notes["netns"] = os.strerror(ctypes.get_errno())
        _unshare(CLONE_NEWIPC)
        if _unshare(CLONE_NEWNS) and _mount(None, "/", None, MS_REC | MS_PRIVATE, None):
            self.mountns = True
        self.layers["scratch_tmpfs"] = self.mountns

    def missing(self) -> list[str]:
        return [name for name in REQUIRED_LAYERS if not self.layers.get(name)]


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


class Call:
    def __init__(self, ctl: dict, event: bytes, t_start: float):
        self.ctl = ctl
        self.id = ctl["id"]
        self.event = event
        self.t_start = t_start
        self.t_ready: float | None = None
        self.deadline = t_start + float(ctl["timeout_s"])
        self.out = bytearray()
        self.log = bytearray()
        self.log_dropped = 0
        self.status_buf = bytearray()
        self.timed_out = False
        self.too_large = False
        self.syscall: int | None = None
        self.setup_error: str | None = None
        self.worker: "Worker | None" = None
        self.proc: "Proc | None" = None
        self.finished = False
        self.protocol_error: str | None = None
        self.aborted = False

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
    """One jailed child: its pid, pidfd, pipes and scratch dir."""

    def __init__(self, loop: "Loop", pid: int, scratch: str, mounted: bool):
        self.loop = loop
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        self.scratch = scratch
        self.mounted = mounted
        self.fds: dict[int, str] = {}
        self.t_ready: float | None = None
        self.exit_status: int | None = None
        self.status_buf = bytearray()
        self.reaped = False

    def kill(self) -> None:
        if self.reaped:  # its pid may belong to someone else by now
            return
        for fn in (os.killpg, os.kill):
            try:
                fn(self.pid, signal.SIGKILL)
            except OSError:
                pass


class Worker:
    """A warm, jailed python worker serving one function, one call at a time."""

    def __init__(self, key, proc: Proc, stdin: Writer, output_max: int):
        self.key = key
        self.proc = proc
        self.stdin = stdin
        self.call: Call | None = None
        self.decoder = FrameDecoder(max_data_bytes=output_max)
        self.calls_served = 0
        self.last_used = _now()
        self.dead = False
        self.new = True  # its first call pays for the jail (boot_ms)


class Loop:
    def __init__(self, jail: Jail, scratch_root: str, once: bool, max_workers: int,
                 worker_idle_s: float, prefork: bool = True, max_calls: int = 64):
        self.jail = jail
        self.scratch_root = scratch_root
        self.once = once
        self.max_workers = max_workers
        self.worker_idle_s = worker_idle_s
        self.sel = selectors.DefaultSelector()
        self.calls: dict[int, Call] = {}
        self.procs: dict[int, tuple[Proc, object]] = {}  # pidfd -> (proc, owner)
        self.workers: list[Worker] = []
        self.running = True
        self.runs_seen = 0
        self.scratch_seq = 0
        self.code_cache: dict = {}
        self.path_cache: dict = {}  # (package_dir, entry) -> realpaths, checked
        self.spare: tuple | None = None  # (pid, order_w, out_r, err_r, st_r)
        self.use_spare = prefork and not once
        self.max_calls = max_calls
        self.cleanup: collections.deque = collections.deque()
        self.decoder = FrameDecoder(max_data_bytes=MAX_INPUT_BYTES)
        self.stdout = Writer(self, 1, on_error=self.shutdown)
        os.set_blocking(0, False)
        self.sel.register(0, selectors.EVENT_READ, self.on_control)

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
            elif op == "stop":
                self.shutdown()
                return

    def shutdown(self) -> None:
        if not self.running:
            return
        self.running = False
        try:
            self.sel.unregister(0)
        except (KeyError, ValueError):
            pass
        self.drop_spare()
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
            worker = self.get_worker(spec, call)
            if worker is not None:
                self.dispatch_to_worker(worker, call)
                return
        try:
            self.fork_once(call, spec)
        except OSError as e:
            self.finish(call, "INTERNAL", f"could not start the jailed child: {e}")

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
        spec = {
            "runtime": runtime,
            "package_dir": pkg,
            "entry": entry,
            "fid": str(ctl.get("fid", "")),
            "request_id": str(ctl.get("request_id", "")),
            "timeout_s": float(ctl["timeout_s"]),
            "memory_mb": int(ctl["memory_mb"]),
            "cpu_s": max(1, int(float(ctl["timeout_s"]) + 1.999)),
            "fsize_bytes": int(ctl["scratch_max_bytes"]),
            "scratch_max_bytes": int(ctl["scratch_max_bytes"]),
            "nofile": int(ctl.get("nofile", 64)),
            "input_max_bytes": MAX_INPUT_BYTES,
            "exec_paths": [],
        }
        if runtime == "python":
            spec["code"] = self.compiled(entry, st)
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

    def compiled(self, entry: str, st: os.stat_result):
        """The entry's code object, compiled here once so each child only runs it.

        Compiling executes nothing, but it is work done outside the jail on
        a stranger's source, so only small sources (64 KiB, which compile in
        well under a millisecond) are compiled here; anything larger, and any
        source that fails to compile, is compiled by the jailed child itself
        and its error lands in the call's log.  Bounded: 64 entries."""
        key = (entry, st.st_mtime_ns, st.st_size, st.st_ino)
        if key in self.code_cache:
            return self.code_cache[key]
        code = None
        if st.st_size <= ZYGOTE_COMPILE_MAX_BYTES:
            try:
                with open(entry, "rb") as f:
                    code = compile(f.read(ZYGOTE_COMPILE_MAX_BYTES + 1), entry, "exec",
                                   dont_inherit=True)
            except Exception:  # SyntaxError, RecursionError, MemoryError, ...
                code = None
        if len(self.code_cache) >= 64:
            self.code_cache.pop(next(iter(self.code_cache)))
        self.code_cache[key] = code
        return code

    def new_scratch(self, max_bytes: int) -> tuple[str, bool]:
        self.scratch_seq += 1
        path = os.path.join(self.scratch_root, f"call-{self.scratch_seq}")
        os.mkdir(path, 0o700)
        mounted = False
        if self.jail.mountns:
            opts = f"size={max(max_bytes, 4096)},nr_inodes=4096,mode=0700"
            mounted = _mount("orb-scratch", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts)
        return path, mounted

    def drop_scratch(self, proc: Proc) -> None:
        """Wipe a finished call's scratch when the loop is next idle (at most
        8 wait), so the wipe never delays the next request."""
        self.cleanup.append((proc.scratch, proc.mounted))
        if len(self.cleanup) > 8:
            self.run_cleanup()

    def run_cleanup(self) -> None:
        while self.cleanup:
            scratch, mounted = self.cleanup.popleft()
            if mounted:
                _libc.umount2(scratch.encode(), MNT_DETACH)
            try:
                os.rmdir(scratch)  # an unmounted tmpfs leaves an empty dir
            except OSError:
                shutil.rmtree(scratch, ignore_errors=True)

    def spawn(self, spec: dict, stdin_fd: int):
        """Fork a jailed child.  Returns (proc, out_r, err_r, status_r)."""
        scratch, mounted = self.new_scratch(spec["scratch_max_bytes"])
        spec = dict(spec, scratch=scratch)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        st_r, st_w = os.pipe2(os.O_CLOEXEC)
        try:
            pid = os.fork()
        except OSError:
            for fd in (out_r, out_w, err_r, err_w, st_r, st_w):
                os.close(fd)
            raise
        if pid == 0:  # pragma: no cover - the child never returns
            try:
                _child.enter(self.jail, spec, (stdin_fd, out_w, err_w, st_w))
            finally:
                os._exit(_child.EXIT_SETUP)
        for fd in (out_w, err_w, st_w):
            os.close(fd)
        proc = Proc(self, pid, scratch, mounted)
        for fd in (out_r, err_r, st_r):
            os.set_blocking(fd, False)
        return proc, out_r, err_r, st_r

    def watch(self, proc: Proc, owner, out_r: int, err_r: int, st_r: int) -> None:
        proc.fds = {out_r: "out", err_r: "err", st_r: "status"}
        for fd, kind in proc.fds.items():
            self.sel.register(fd, selectors.EVENT_READ, (self.on_pipe, proc, owner, fd, kind))
        self.sel.register(proc.pidfd, selectors.EVENT_READ, (self.on_exit, proc, owner))
        self.procs[proc.pidfd] = (proc, owner)

    def make_spare(self) -> None:
        """Pre-fork the next call's child while the zygote is idle.

        The spare runs :func:`_child.spare`: it does the call-independent
        setup now and waits on its order pipe, so a call starts without
        paying for fork() and its copy-on-write aftermath."""
        if self.spare is not None or not self.running or not self.use_spare:
            return
        order_r, order_w = os.pipe2(os.O_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        st_r, st_w = os.pipe2(os.O_CLOEXEC)
        child_fds = (order_r, out_w, err_w, st_w)
        keep = set(child_fds) | {fd for fd, _ in self.jail.ro_fds} | set(self.jail.dev_fds)
        try:
            pid = os.fork()
        except OSError:
            for fd in (order_r, order_w, out_r, out_w, err_r, err_w, st_r, st_w):
                os.close(fd)
            self.use_spare = False
            return
        if pid == 0:  # pragma: no cover - the child never returns
            try:
                _child.spare(self.jail, child_fds, keep)
            finally:
                os._exit(_child.EXIT_SETUP)
        for fd in child_fds:
            os.close(fd)
        self.spare = (pid, order_w, out_r, err_r, st_r)

    def drop_spare(self, reaped: bool = False) -> None:
        if self.spare is None:
            return
        pid, order_w, out_r, err_r, st_r = self.spare
        self.spare = None
        for fd in (order_w, out_r, err_r, st_r):
            os.close(fd)
        if reaped or pid <= 0:
            return
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass

    def use_spare_for(self, call: Call, spec: dict) -> bool:
        pid, order_w, out_r, err_r, st_r = self.spare
        try:
            gone = os.waitpid(pid, os.WNOHANG)[0] != 0
        except ChildProcessError:
            gone = True
        if gone:  # the spare died while idle (already reaped): fork directly
            self.drop_spare(reaped=True)
            return False
        self.spare = None
        scratch, mounted = self.new_scratch(spec["scratch_max_bytes"])
        order = dict(spec, scratch=scratch)
        code = order.pop("code", None)
        body = json.dumps(order).encode()
        code_bytes = marshal.dumps(code) if code is not None else b""
        proc = Proc(self, pid, scratch, mounted)
        for fd in (out_r, err_r, st_r):
            os.set_blocking(fd, False)
        writer = Writer(self, order_w)
        writer.write(_child.ORDER_HEADER.pack(len(body), len(code_bytes)) + body + code_bytes)
        writer.write(call.event)
        writer.close_when_flushed()
        call.event = b""
        call.proc = proc
        call.input_writer = writer
        self.watch(proc, call, out_r, err_r, st_r)
        return True

    def fork_once(self, call: Call, spec: dict) -> None:
        if self.spare is not None and self.use_spare_for(call, spec):
            return
        memfd = os.memfd_create("orb-input", os.MFD_CLOEXEC)
        try:
            view = memoryview(call.event)
            while view:
                view = view[os.write(memfd, view):]
            os.lseek(memfd, 0, os.SEEK_SET)
            proc, out_r, err_r, st_r = self.spawn(spec, memfd)
        finally:
            os.close(memfd)
        call.event = b""
        call.proc = proc
        self.watch(proc, call, out_r, err_r, st_r)

    # -- warm workers -----------------------------------------------------

    def worker_key(self, spec: dict) -> tuple:
        return (spec["fid"], spec["package_dir"], spec["entry"], spec["memory_mb"], spec["nofile"],
                spec["scratch_max_bytes"])

    def get_worker(self, spec: dict, call: Call) -> Worker | None:
        key = self.worker_key(spec)
        for w in self.workers:
            if w.key == key and w.call is None and not w.dead:
                return w
        live = [w for w in self.workers if not w.dead]
        if len(live) >= self.max_workers:
            idle = sorted((w for w in live if w.call is None), key=lambda w: w.last_used)
            if not idle:
                return None
            self.retire(idle[0])
        wspec = dict(spec, worker=True, cpu_s=WORKER_CPU_S)
        in_r, in_w = os.pipe2(os.O_CLOEXEC)
        try:
            proc, out_r, err_r, st_r = self.spawn(wspec, in_r)
        except OSError:
            os.close(in_w)
            return None
        finally:
            os.close(in_r)
        worker = Worker(key, proc, Writer(self, in_w), call.output_max)
        self.workers.append(worker)
        self.watch(proc, worker, out_r, err_r, st_r)
        return worker

    def dispatch_to_worker(self, worker: Worker, call: Call) -> None:
        worker.call = call
        call.worker = worker
        call.proc = worker.proc
        if worker.new:
            worker.new = False
        else:
            # Warm: the jail is already up; function code starts now.
            call.t_ready = call.t_start
        worker.decoder.max_data_bytes = call.output_max
        worker.stdin.write(encode({"fid": call.ctl.get("fid", ""),
                                   "request_id": call.ctl.get("request_id", ""),
                                   "timeout_s": call.ctl["timeout_s"]}, call.event))
        call.event = b""

    def retire(self, worker: Worker) -> None:
        worker.dead = True
        worker.stdin.close()
        worker.proc.kill()

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
            proc.status_buf += data
            self.parse_status(proc, call)
            return
        if call is None or call.finished:
            return  # an idle worker's stray log or output: dropped
        if kind == "err":
            call.add_log(data)
        elif isinstance(owner, Worker):
            try:
                frames = owner.decoder.feed(data)
            except FrameTooLarge:
                call.too_large = True
                self.retire(owner)
                return
            except FrameError as e:
                call.protocol_error = f"the function wrote to the worker's result channel ({e})"
                self.retire(owner)
                return
            for ctl, out in frames:
                self.worker_done(owner, ctl, out)
        else:
            room = call.output_max - len(call.out)
            if len(data) > room:
                call.too_large = True
                proc.kill()
                return
            call.out += data

    def parse_status(self, proc: Proc, call: Call | None) -> None:
        buf = proc.status_buf
        while buf:
            tag = buf[:1]
            if tag == b"R":
                if len(buf) < 9:
                    return
                (t_ready,) = struct.unpack("<d", bytes(buf[1:9]))
                del buf[:9]
                if proc.t_ready is None:
                    proc.t_ready = t_ready
                    if call is not None and call.t_ready is None:
                        call.t_ready = t_ready
            elif tag == b"D":
                head = 1 + _child.DONE_HEADER.size
                if len(buf) < head:
                    return
                t_ready, code, inline_len = _child.DONE_HEADER.unpack(bytes(buf[1:head]))
                if inline_len > _child.INLINE_MAX_BYTES:
                    del buf[:]  # not from our runtime: ignore the rest
                    return
                if len(buf) < head + inline_len:
                    return
                inline = bytes(buf[head:head + inline_len])
                del buf[:head + inline_len]
                if call is not None and not call.finished and call.worker is None:
                    self.pipe_data(proc, call, "out", inline)
                if proc.t_ready is None:
                    proc.t_ready = t_ready
                    if call is not None and call.t_ready is None:
                        call.t_ready = t_ready
                if call is not None and not call.finished and call.worker is None:
                    self.call_done(proc, call, code)
            elif tag == b"S":
                if len(buf) < 5:
                    return
                (nr,) = struct.unpack("<i", bytes(buf[1:5]))
                del buf[:5]
                if call is not None:
                    call.syscall = nr
            elif tag == b"E":
                msg = bytes(buf[1:513]).decode(errors="replace")
                del buf[:]
                if call is not None and call.t_ready is None:
                    call.setup_error = msg
            else:
                del buf[:]  # garbage from function code: ignore the rest

    def call_done(self, proc: Proc, call: Call, code: int) -> None:
        """The python runtime finished (``D`` record): its output is complete
        in the pipes.  Answer now; the exit is reaped later, off the call's
        critical path.  The process is killed first, so a forged early ``D``
        cannot keep running outside the peer's concurrency accounting."""
        proc.kill()
        for fd, kind in list(proc.fds.items()):
            if kind == "status":
                continue
            while not call.too_large:
                try:
                    data = os.read(fd, 1 << 16)
                except (BlockingIOError, OSError):
                    break
                if not data:
                    break
                self.pipe_data(proc, call, kind, data)
        limit = call.ctl["memory_mb"]
        if call.syscall is not None:
            name = _seccomp.syscall_name(call.syscall)
            self.finish(call, "KILLED_BY_POLICY", f"seccomp stopped forbidden syscall {name}")
        elif call.too_large:
            self.finish(call, "OUTPUT_TOO_LARGE", f"output passed the {call.output_max}-byte cap")
        elif call.timed_out:
            self.finish(call, "TIMEOUT", f"wall-clock deadline of {call.ctl['timeout_s']} s reached")
        elif code == _child.EXIT_OK:
            self.finish(call, "OK", "")
        elif code == _child.EXIT_MEMORY:
            self.finish(call, "MEMORY", f"memory limit of {limit} MB reached")
        else:
            self.finish(call, "ERROR", f"function exited with status {code} (see log)")

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

    def on_exit(self, proc: Proc, owner) -> None:
        try:
            if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                return
        except ChildProcessError:
            pass
        # Still a zombie, so its pid and process group cannot have been
        # reused: kill anything left in the group, then reap.
        proc.kill()
        try:
            _pid, status = os.waitpid(proc.pid, 0)
        except ChildProcessError:
            status = 0
        proc.reaped = True
        proc.exit_status = status
        writer = getattr(owner, "input_writer", None)
        if writer is not None:
            writer.close()
        self.drain(proc, owner)
        self.sel.unregister(proc.pidfd)
        os.close(proc.pidfd)
        del self.procs[proc.pidfd]
        try:
            self._finish_exit(proc, owner)
        finally:
            self.drop_scratch(proc)

    def _finish_exit(self, proc: Proc, owner) -> None:
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

    def worker_done(self, worker: Worker, ctl: dict, out: bytes) -> None:
        call = worker.call
        if call is None:
            return
        # The worker flushed its log before answering; collect it, and its
        # ready report if this was its first call.
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
                        worker.proc.status_buf += data
                        self.parse_status(worker.proc, call)
        worker.call = None
        worker.calls_served += 1
        worker.last_used = _now()
        call.out = bytearray(out)
        if ctl.get("kind") == "ok":
            self.finish(call, "OK", "")
        else:
            self.finish(call, "ERROR", "the handler raised an exception (see log)")

    def classify_and_finish(self, call: Call, proc: Proc) -> None:
        status = proc.exit_status or 0
        limit = call.ctl["timeout_s"]
        if call.setup_error is not None:
            self.finish(call, "INTERNAL", call.setup_error)
        elif call.syscall is not None:
            name = _seccomp.syscall_name(call.syscall)
            self.finish(call, "KILLED_BY_POLICY", f"seccomp stopped forbidden syscall {name}")
        elif call.too_large:
            self.finish(call, "OUTPUT_TOO_LARGE", f"output passed the {call.output_max}-byte cap")
        elif call.timed_out:
            self.finish(call, "TIMEOUT", f"wall-clock deadline of {limit} s reached; process group killed")
        elif call.aborted:
            self.finish(call, "INTERNAL", "the executor stopped during the call")
        elif call.protocol_error:
            self.finish(call, "ERROR", call.protocol_error)
        elif os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            if sig == signal.SIGXCPU:
                self.finish(call, "TIMEOUT", "CPU-time limit reached (SIGXCPU)")
            elif sig == signal.SIGSYS:
                self.finish(call, "KILLED_BY_POLICY", "seccomp stopped a forbidden syscall (SIGSYS)")
            elif sig == signal.SIGXFSZ:
                self.finish(call, "ERROR", "file-size limit reached in scratch (SIGXFSZ)")
            elif sig == signal.SIGKILL:
                self.finish(call, "ERROR", "killed by SIGKILL (by the function itself, or the "
                            "kernel's out-of-memory killer)")
            else:
                self.finish(call, "ERROR", f"killed by signal {name}")
        else:
            code = os.WEXITSTATUS(status)
            if call.t_ready is None:
                self.finish(call, "INTERNAL", f"jailed child exited with {code} before the function started")
            elif call.worker is not None and code == 0:
                self.finish(call, "ERROR", "the warm worker exited during the call")
            elif code == _child.EXIT_OK and call.worker is None:
                self.finish(call, "OK", "")
            elif code == _child.EXIT_MEMORY and call.ctl.get("runtime") == "python":
                self.finish(call, "MEMORY", f"memory limit of {call.ctl['memory_mb']} MB reached")
            elif call.ctl.get("runtime") == "exec" and any(
                    m in call.log[-4096:] for m in _EXEC_MEMORY_MARKERS):
                # An exec'd program reports failed allocations in its own
                # words; these are the common ones (glibc, Python, Rust, Go).
                self.finish(call, "MEMORY", f"memory limit of {call.ctl['memory_mb']} MB reached "
                            f"(exit status {code}; see log)")
            else:
                self.finish(call, "ERROR", f"function exited with status {code} (see log)")

    def finish(self, call: Call, status: str, message: str) -> None:
        if call.finished:
            return
        call.finished = True
        now = _now()
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
        for call in list(self.calls.values()):
            if call.finished or call.proc is None:
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
        while self.running or self.procs:
            if self.once and self.runs_seen and not self.calls and self.running:
                self.shutdown()
            timeout = self.check_deadlines()
            if self.workers:
                timeout = 1.0 if timeout is None else min(timeout, 1.0)
            if not self.running:
                timeout = 0.5 if timeout is None else min(timeout, 0.5)
            events = self.sel.select(0)
            if not events and (self.cleanup or (self.use_spare and self.spare is None
                                                and self.running)):
                # Housekeeping (scratch wipes, the next spare) waits for the
                # loop to be idle for IDLE_S: back-to-back calls then never
                # compete with it, and a call after any pause finds a spare.
                wait = IDLE_S if timeout is None else min(timeout, IDLE_S)
                events = self.sel.select(wait)
                if not events:
                    self.run_cleanup()
                    self.make_spare()
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
            if not self.running:
                for proc, _o in list(self.procs.values()):
                    proc.kill()
        # Flush what is left for the peer, bounded by a short wait.
        end = _now() + 2.0
        while self.stdout.buf and not self.stdout.closed and _now() < end:
            self.sel.select(0.1)
            self.stdout._flush()
        self.run_cleanup()
        shutil.rmtree(self.scratch_root, ignore_errors=True)
        return 0


def probe(allow_unconfined: bool = False) -> dict:
    jail = Jail(allow_unconfined)
    jail.enter_namespaces()
    return {"layers": jail.layers, "landlock_abi": jail.landlock_abi, "missing": jail.missing(),
            "notes": jail.notes}


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
    args = parser.parse_args(argv)
    _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die with the peer
    if args.probe:
        sys.stdout.write(json.dumps(probe(args.allow_unconfined)) + "\n")
        return 0
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    jail = Jail(args.allow_unconfined)
    jail.enter_namespaces()
    # Not tempfile: it imports random, whose at-fork hook would reseed (and
    # read getrandom) in every child.
    root = args.scratch_root or "/tmp"
    os.makedirs(root, mode=0o700, exist_ok=True)
    scratch_root = os.path.join(root, f"orb-zygote-{os.getpid()}-{os.urandom(6).hex()}")
    os.mkdir(scratch_root, 0o700)
    loop = Loop(jail, scratch_root, args.once, args.max_workers, args.worker_idle_s,
                prefork=not args.no_prefork, max_calls=args.max_calls)
    _child.zygote_setup()
    # Children start from this heap: keep the collector from touching (and
    # so copying) the zygote's pages in each of them.
    gc.collect()
    gc.freeze()
    loop.send({"op": "hello", "pid": os.getpid(), "layers": jail.layers,
               "scratch_root": scratch_root,
               "landlock_abi": jail.landlock_abi, "missing": jail.missing(), "notes": jail.notes,
               "allow_unconfined": jail.allow_unconfined, "max_ctl_bytes": MAX_CTL_BYTES})
    return loop.run()


if __name__ == "__main__":
    sys.exit(main())
