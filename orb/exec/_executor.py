# -*- test-case-name: tests.test_exec_executor -*-
"""
The peer's side of the executor: scheduling, the queue, BUSY, and the
zygote process.  Nothing here blocks; the zygote does the forking.
"""

import collections
import enum
import os
import sys

import attrs
from twisted.internet import defer, error, protocol
from twisted.logger import Logger

from ..protocol.codes import ResultStatus
from ._frames import FrameDecoder, FrameError, encode

log = Logger(namespace="orb.exec")

RUNTIMES = ("python", "exec")
REUSE_POLICIES = ("per-call", "per-function")

_BOOTSTRAP = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from orb.exec._zygote import main; sys.exit(main(sys.argv[2:]))"
)


class ExecutorState(enum.Enum):
    """Where an :class:`Executor` is in its life."""

    NEW = "new"  # start() not called yet
    STARTING = "starting"  # zygote spawned, no hello yet
    READY = "ready"  # serving calls
    REFUSING = "refusing"  # a required jail layer is missing: every call is REFUSED
    RESTARTING = "restarting"  # the zygote died or hung; a new one is on its way
    FAILED = "failed"  # the zygote could not be (re)started
    STOPPING = "stopping"
    STOPPED = "stopped"


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@attrs.frozen
class RuntimeSpec:
    """How to run one function: the manifest's ``runtime`` section."""

    runtime: str = attrs.field(validator=attrs.validators.in_(RUNTIMES))
    entry: str = attrs.field()
    reuse: str = attrs.field(default="per-call", validator=attrs.validators.in_(REUSE_POLICIES))
    memory_mb: int | None = None
    timeout_s: float | None = None

    @entry.validator
    def _check_entry(self, _attribute, value):
        if not isinstance(value, str) or not value or os.path.isabs(value):
            raise ValueError("entry must be a path relative to the package dir")
        if ".." in value.split("/"):
            raise ValueError("entry must stay inside the package dir")

    def __attrs_post_init__(self):
        if self.runtime == "exec" and self.reuse != "per-call":
            raise ValueError("the exec runtime supports only per-call reuse")

    @classmethod
    def from_manifest(cls, manifest) -> "RuntimeSpec":
        """Build from a manifest mapping: ``runtime``, ``entry``, optional ``reuse``,
        ``memory_mb`` and ``timeout_s``.  Raises ValueError with a readable message."""
        try:
            return cls(
                runtime=manifest["runtime"],
                entry=manifest.get("entry", "main.py" if manifest["runtime"] == "python" else "main"),
                reuse=manifest.get("reuse", "per-call"),
                memory_mb=manifest.get("memory_mb"),
                timeout_s=manifest.get("timeout_s"),
            )
        except KeyError as e:
            raise ValueError(f"manifest lacks {e.args[0]!r}") from None
        except TypeError as e:
            raise ValueError(f"bad manifest: {e}") from None


@attrs.frozen
class ExecResult:
    """How one invocation ended.  ``log`` is the function's capped stderr."""

    status: ResultStatus
    output: bytes = b""
    log: bytes = b""
    message: str = ""
    queue_ms: float = 0.0
    boot_ms: float = 0.0
    exec_ms: float = 0.0
    request_id: str = ""

    def to_json(self) -> dict:
        return {
            "status": self.status.name,
            "code": int(self.status),
            "message": self.message,
            "output": self.output.decode("utf-8", errors="backslashreplace"),
            "log": self.log.decode("utf-8", errors="backslashreplace"),
            "timing": {"queue_ms": self.queue_ms, "boot_ms": self.boot_ms, "exec_ms": self.exec_ms},
            "request_id": self.request_id,
        }


@attrs.frozen
class ExecConfig:
    max_concurrent: int = attrs.field(factory=_cores)
    max_queue: int = attrs.field(factory=lambda: 4 * _cores())
    memory_mb: int = 256
    max_memory_mb: int = 2048  # ceiling for a manifest's own memory_mb
    default_timeout_s: float = 10.0
    max_timeout_s: float = 300.0
    output_max_bytes: int = 1024 * 1024
    log_max_bytes: int = 64 * 1024
    input_max_bytes: int = 1024 * 1024
    scratch_max_bytes: int = 16 * 1024 * 1024
    nofile: int = 64
    max_workers: int = attrs.field(factory=lambda: 2 * _cores())
    worker_idle_s: float = 60.0
    allow_unconfined: bool = False
    python: str = sys.executable
    scratch_root: str | None = None
    grace_s: float = 2.0
    restart_delay_s: float = 1.0
    max_restarts: int = 5
    prefork: bool = True  # keep one pre-forked spare child in the zygote
    scratch_max_inodes: int = 4096  # files and dirs in a call's scratch tmpfs
    max_tasks: int = 64  # processes + threads per call (RLIMIT_NPROC on the call's own uid)
    uid_base: int = 1_900_000_000  # per-call uids/gids (root peer): [uid_base, uid_base + uid_count)
    uid_count: int = 4096
    # Layers to switch off, for bench/exec.py's per-layer costs only: any of
    # "seccomp", "seccomp_notify", "landlock", "pidns", "root", "uid_pool" (root peer),
    # "userns" (non-root peer: the per-call user namespace), "cgroup".
    # A disabled layer is missing: calls are REFUSED unless allow_unconfined.
    disable_layers: tuple = ()
    # The zygote answers a ping every heartbeat_s; one that does not answer
    # within heartbeat_s is hung (or crippled) and is replaced.  0: off.
    heartbeat_s: float = 5.0
    # Booting a call's jail does not count against its deadline (the zygote
    # starts the call's clock when the jail is up), but must end within this.
    boot_max_s: float = 10.0


@attrs.define(eq=False)
class _Pending:
    id: int
    fid: str
    package_dir: str
    spec: RuntimeSpec
    data: bytes
    timeout_s: float
    request_id: str
    t_submit: float
    d: defer.Deferred
    t_dispatch: float | None = None
    secrets: dict | None = None  # the call's secrets (RFC 9.12): to context.secrets, dropped once sent
    watchdog: object = None
    cancelled: bool = False  # withdrawn while running: its slot is held until the zygote's done


class _ZygoteProtocol(protocol.ProcessProtocol):
    def __init__(self, executor: "Executor", max_data_bytes: int):
        self.executor = executor
        self.decoder = FrameDecoder(max_data_bytes=max_data_bytes)
        self.ended = defer.Deferred()
        self._stderr_budget = 64 * 1024

    def childDataReceived(self, fd, data):
        if fd == 1:
            try:
                frames = self.decoder.feed(data)
            except FrameError as e:
                log.error("zygote sent a bad frame: {err}", err=str(e))
                self.transport.signalProcess("KILL")
                return
            for ctl, payload in frames:
                self.executor._frame_received(self, ctl, payload)
        elif fd == 2 and self._stderr_budget > 0:
            text = data[: self._stderr_budget].decode("utf-8", errors="replace")
            self._stderr_budget -= len(data)
            log.warn("zygote stderr: {text}", text=text.rstrip())

    def processEnded(self, reason):
        self.executor._zygote_ended(self, reason)
        self.ended.callback(None)


class Executor:
    """Runs functions in jailed children of a zygote.  See :mod:`orb.exec`."""

    def __init__(self, reactor, config: ExecConfig = ExecConfig(), clock=None):
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self.config = config
        self.layers: dict = {}
        self.missing_layers: list[str] = []
        self._state = ExecutorState.NEW
        self._proto: _ZygoteProtocol | None = None
        self._queue: collections.deque[_Pending] = collections.deque()
        self._running: dict[int, _Pending] = {}
        self._next_id = 0
        self._start_d: defer.Deferred | None = None
        self._stop_d: defer.Deferred | None = None
        self._restarts = 0
        self._restart_call = None
        self._kill_call = None
        self._scratch_root: str | None = None
        self._cgroup_dirs: list[str] = []
        self._cgroup_retry: list = []  # removals of a dead zygote's cgroups, once more
        self._ping_n = 0
        self._ping_call = None  # the next ping
        self._pong_call = None  # the deadline for the answer to the last one
        self._kill_reason: str | None = None

    # -- public ----------------------------------------------------------

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def capacity(self) -> int:
        """Calls running plus queued at which the next one is BUSY.  A
        cancelled call counts in ``running`` until its child is reaped."""
        return self.config.max_concurrent + self.config.max_queue

    @property
    def state(self) -> ExecutorState:
        return self._state

    @property
    def zygote_pid(self) -> int | None:
        """The pid of the zygote serving now, or None between zygotes."""
        proto = self._proto
        transport = getattr(proto, "transport", None)
        return getattr(transport, "pid", None)

    def start(self) -> defer.Deferred:
        """Start the zygote.  Fires with the layer report once it said hello."""
        if self._state != ExecutorState.NEW:
            raise RuntimeError("executor already started")
        self._start_d = defer.Deferred()
        self._spawn_zygote()
        return self._start_d

    def invoke(self, fid: str, package_dir: str, spec, input_bytes: bytes,
               deadline_s: float | None = None, request_id: str = "", secrets: dict | None = None) -> defer.Deferred:
        """Run one call.  Fires with an :class:`ExecResult`; never raises, never errbacks.  ``secrets``
        (names to text) reach a python function as ``context.secrets`` and nothing else."""
        try:
            return self._invoke(fid, package_dir, spec, input_bytes, deadline_s, request_id, secrets)
        except Exception as e:
            log.failure("invoke failed for {fid}", fid=fid)
            return defer.succeed(self._result(
                ResultStatus.INTERNAL, f"the executor failed to run the call: {type(e).__name__}",
                request_id=request_id))

    def _invoke(self, fid, package_dir, spec, input_bytes, deadline_s, request_id, secrets=None):
        now = self._clock.seconds()
        if not isinstance(spec, RuntimeSpec):
            try:
                spec = RuntimeSpec.from_manifest(spec)
            except ValueError as e:
                return defer.succeed(self._result(ResultStatus.ERROR, f"bad runtime spec: {e}",
                                                  request_id=request_id))
        timeout = deadline_s if deadline_s is not None else (
            spec.timeout_s if spec.timeout_s is not None else self.config.default_timeout_s)
        timeout = min(float(timeout), self.config.max_timeout_s)
        if len(input_bytes) > self.config.input_max_bytes:
            return defer.succeed(self._result(
                ResultStatus.ERROR,
                f"input of {len(input_bytes)} bytes passes the {self.config.input_max_bytes}-byte cap",
                request_id=request_id))
        if self._state in (ExecutorState.STOPPING, ExecutorState.STOPPED, ExecutorState.FAILED):
            return defer.succeed(self._result(ResultStatus.INTERNAL,
                                              f"executor is {self._state.value}",
                                              request_id=request_id))
        if self._state == ExecutorState.REFUSING:
            return defer.succeed(self._refusal(request_id))
        if self.missing_layers:
            log.warn("UNCONFINED: running {fid} without jail layers {missing} (operator opt-out)",
                     fid=fid, missing=", ".join(self.missing_layers))
        self._next_id += 1
        p = _Pending(self._next_id, fid, os.path.abspath(package_dir), spec, bytes(input_bytes),
                     timeout, request_id, now, None, secrets=dict(secrets) if secrets else None)
        p.d = defer.Deferred(lambda _d: self._withdraw(p))
        if self._state == ExecutorState.READY and len(self._running) < self.config.max_concurrent:
            self._dispatch(p)
        elif len(self._queue) < self.config.max_queue:
            self._queue.append(p)
        else:
            return defer.succeed(self._result(
                ResultStatus.BUSY,
                f"executor busy: {len(self._running)} running, {len(self._queue)} queued",
                request_id=request_id))
        if p.watchdog is None and not p.d.called:  # queued (a dispatched call has its own)
            p.watchdog = self._clock.callLater(timeout + self.config.grace_s, self._watchdog, p)
        return p.d

    def stop(self) -> defer.Deferred:
        """Stop the zygote and every child; pending calls end INTERNAL."""
        if self._stop_d is not None:
            return self._stop_d
        self._stop_d = defer.Deferred()
        self._state = ExecutorState.STOPPING
        self._stop_heartbeat()
        if self._restart_call is not None and self._restart_call.active():
            self._restart_call.cancel()
        while self._queue:
            self._fail(self._queue.popleft(), ResultStatus.INTERNAL, "executor stopping")
        proto = self._proto
        if proto is None or proto.transport is None:
            self._finish_stop()
        else:
            try:
                proto.transport.write(encode({"op": "stop"}))
                proto.transport.closeStdin()
            except Exception:
                log.failure("could not ask the zygote to stop")
            self._kill_call = self._clock.callLater(self.config.grace_s, self._kill_zygote)
        return self._stop_d

    # -- zygote lifecycle ---------------------------------------------------

    def _spawn_zygote(self) -> None:
        c = self.config
        orb_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        args = [c.python, "-I", "-B", "-c", _BOOTSTRAP, orb_parent,
                "--max-workers", str(c.max_workers), "--worker-idle-s", str(c.worker_idle_s),
                "--max-calls", str(2 * c.max_concurrent + 4),
                "--uid-base", str(c.uid_base), "--uid-count", str(c.uid_count)]
        if c.scratch_root:
            args += ["--scratch-root", c.scratch_root]
        if c.allow_unconfined:
            args.append("--allow-unconfined")
        if not c.prefork:
            args.append("--no-prefork")
        for name in c.disable_layers:
            args += ["--disable", name]
        max_data = c.output_max_bytes + c.log_max_bytes + 4096
        self._proto = _ZygoteProtocol(self, max_data)
        self._state = ExecutorState.STARTING
        try:
            self._reactor.spawnProcess(self._proto, c.python, args, env={},
                                       childFDs={0: "w", 1: "r", 2: "r"})
        except Exception as e:
            log.failure("could not spawn the zygote")
            self._proto = None
            self._start_failed(f"could not spawn the zygote: {e}")

    def _start_failed(self, why: str) -> None:
        self._state = ExecutorState.FAILED
        while self._queue:
            self._fail(self._queue.popleft(), ResultStatus.INTERNAL, why)
        if self._start_d is not None:
            d, self._start_d = self._start_d, None
            d.errback(RuntimeError(why))

    def _frame_received(self, proto, ctl: dict, payload: bytes) -> None:
        if proto is not self._proto:
            return
        op = ctl.get("op")
        if op == "hello":
            self._hello(ctl)
            self._schedule_ping()
        elif op == "done":
            self._done(ctl, payload)
        elif op == "pong":
            if ctl.get("n") == self._ping_n and self._pong_call is not None:
                self._cancel(self._pong_call)
                self._pong_call = None
                self._schedule_ping()
        else:
            log.warn("zygote sent unknown op {op!r}", op=op)

    def _hello(self, ctl: dict) -> None:
        self.layers = dict(ctl.get("layers", {}))
        self._scratch_root = ctl.get("scratch_root")
        self._cgroup_dirs = [d for d in ctl.get("cgroup_dirs", ()) if isinstance(d, str)]
        missing = list(ctl.get("missing", []))
        self._restarts = 0
        if missing and not self.config.allow_unconfined:
            self._state = ExecutorState.REFUSING
            self.missing_layers = missing
            log.error("jail layers missing on this host: {missing}; refusing untrusted functions "
                      "(pass the explicit opt-out to run them anyway)", missing=", ".join(missing))
            while self._queue:
                p = self._queue.popleft()
                self._cancel_watchdog(p)
                p.d.callback(self._refusal(p.request_id))
        else:
            self._state = ExecutorState.READY
            self.missing_layers = missing
            if missing:
                log.critical("UNCONFINED EXECUTION ENABLED: jail layers {missing} are missing and the "
                             "operator opted out of refusing; hostile functions can harm this host",
                             missing=", ".join(missing))
            log.info("executor ready: zygote pid {pid}, layers {layers}", pid=ctl.get("pid"),
                     layers=self.layers)
        if self._start_d is not None:
            d, self._start_d = self._start_d, None
            d.callback(dict(ctl))
        self._pump()

    # -- heartbeat ------------------------------------------------------------

    def _schedule_ping(self) -> None:
        if self.config.heartbeat_s > 0 and self._ping_call is None:
            self._ping_call = self._clock.callLater(self.config.heartbeat_s, self._ping)

    def _ping(self) -> None:
        self._ping_call = None
        proto = self._proto
        if proto is None or proto.transport is None:
            return
        self._ping_n += 1
        proto.transport.write(encode({"op": "ping", "n": self._ping_n}))
        self._pong_call = self._clock.callLater(self.config.heartbeat_s, self._no_pong)

    def _no_pong(self) -> None:
        self._pong_call = None
        why = (f"the zygote did not answer a heartbeat within {self.config.heartbeat_s} s "
               "(hung or crippled)")
        log.error("{why}; replacing it", why=why)
        self._kill_reason = why
        self._kill_zygote()

    def _stop_heartbeat(self) -> None:
        for name in ("_ping_call", "_pong_call"):
            call = getattr(self, name)
            if call is not None:
                self._cancel(call)
            setattr(self, name, None)

    @staticmethod
    def _cancel(delayed) -> None:
        if delayed.active():
            delayed.cancel()

    def _refusal(self, request_id: str) -> ExecResult:
        return self._result(
            ResultStatus.REFUSED,
            "refusing untrusted code: jail layers missing on this host: " + ", ".join(self.missing_layers),
            request_id=request_id)

    def _zygote_ended(self, proto, reason) -> None:
        if proto is not self._proto:
            return
        self._proto = None
        self._remove_scratch_root()
        if self._kill_call is not None and self._kill_call.active():
            self._kill_call.cancel()
        self._stop_heartbeat()
        why = "the zygote exited"
        if not reason.check(error.ProcessDone):
            why = f"the zygote died: {reason.getErrorMessage()}"
        if self._kill_reason:
            why, self._kill_reason = self._kill_reason, None
        # Decide the new state before failing the calls in flight: their
        # callbacks may call invoke() again at once.
        running = list(self._running.values())
        self._running.clear()
        if self._state == ExecutorState.STOPPING:
            self._fail_all(running, why)
            self._finish_stop()
            return
        if self._state == ExecutorState.STARTING and self._start_d is not None:
            self._fail_all(running, why)
            self._start_failed(why)
            return
        log.error("{why}; restarting it", why=why)
        self._restarts += 1
        if self._restarts > self.config.max_restarts:
            self._fail_all(running, why)
            self._start_failed(f"{why}; gave up after {self.config.max_restarts} restarts")
            return
        self._state = ExecutorState.RESTARTING
        self._restart_call = self._clock.callLater(self.config.restart_delay_s, self._spawn_zygote)
        self._fail_all(running, f"{why}; the call was lost and the zygote is being replaced")

    def _fail_all(self, calls, why: str) -> None:
        for p in calls:
            self._fail(p, ResultStatus.INTERNAL, why)

    def _remove_scratch_root(self) -> None:
        """A zygote that was killed could not wipe its scratch root; its tmpfs
        mounts died with its mount namespace, so only empty dirs are left."""
        from . import _cgroup

        dirs, self._cgroup_dirs = self._cgroup_dirs, []
        for d in dirs:  # its children's cgroups: empty once they are gone
            if os.path.basename(d).startswith(_cgroup.PREFIX):
                _cgroup.remove_tree(d)
                if os.path.isdir(d):  # a child of a killed zygote still dying
                    self._cgroup_retry.append(
                        (d, self._clock.callLater(self.config.grace_s, _cgroup.remove_tree, d)))
        root, self._scratch_root = self._scratch_root, None
        if not root or os.path.basename(root).split("-")[:2] != ["orb", "zygote"]:
            return
        from ._ns import remove_tree

        remove_tree(root)

    def _kill_zygote(self) -> None:
        proto = self._proto
        if proto is not None and proto.transport is not None:
            try:
                proto.transport.signalProcess("KILL")
            except error.ProcessExitedAlready:
                pass

    def _finish_stop(self) -> None:
        self._state = ExecutorState.STOPPED
        retry, self._cgroup_retry = self._cgroup_retry, []
        if retry:
            from ._cgroup import remove_tree

            for d, call in retry:
                if call.active():
                    call.cancel()
                    remove_tree(d)
        if self._kill_call is not None and self._kill_call.active():
            self._kill_call.cancel()
        for p in list(self._running.values()):
            self._fail(p, ResultStatus.INTERNAL, "executor stopped")
        self._running.clear()
        d, self._stop_d = self._stop_d, defer.Deferred()
        self._stop_d.callback(None)
        d.callback(None)

    # -- scheduling ----------------------------------------------------------

    def _pump(self) -> None:
        while (self._state == ExecutorState.READY and self._queue
               and len(self._running) < self.config.max_concurrent):
            self._dispatch(self._queue.popleft())

    def _dispatch(self, p: _Pending) -> None:
        now = self._clock.seconds()
        p.t_dispatch = now
        remaining = p.timeout_s - (now - p.t_submit)
        if remaining <= 0:
            self._fail(p, ResultStatus.TIMEOUT, "deadline passed while queued")
            return
        c = self.config
        ctl = {
            "op": "run", "id": p.id, "fid": p.fid, "request_id": p.request_id,
            "runtime": p.spec.runtime, "entry": p.spec.entry, "package_dir": p.package_dir,
            "reuse": p.spec.reuse, "timeout_s": round(remaining, 6),
            "memory_mb": min(p.spec.memory_mb or c.memory_mb, c.max_memory_mb),
            "output_max_bytes": c.output_max_bytes, "log_max_bytes": c.log_max_bytes,
            "scratch_max_bytes": c.scratch_max_bytes, "nofile": c.nofile,
            "scratch_max_inodes": c.scratch_max_inodes, "max_tasks": c.max_tasks,
            "boot_max_s": c.boot_max_s,
        }
        if p.secrets:
            ctl["secrets"] = p.secrets
            p.secrets = None
        proto = self._proto
        if proto is None or proto.transport is None:
            self._fail(p, ResultStatus.INTERNAL, "the zygote is gone; the call was not started")
            return
        self._running[p.id] = p
        proto.transport.write(encode(ctl, p.data))
        p.data = b""
        # Booting its jail does not count against the call (the zygote's
        # deadline runs from when the jail is up), so the watchdog allows it.
        self._cancel_watchdog(p)
        p.watchdog = self._clock.callLater(remaining + c.boot_max_s + c.grace_s, self._watchdog, p)

    def _withdraw(self, p: _Pending) -> None:
        """The Deferred of ``p`` was cancelled.  Queued: it leaves the queue.
        Running: the zygote kills its child (or warm worker), and the slot
        stays taken until the zygote's ``done`` says the child was reaped; a
        zygote that does not say so within ``grace_s`` is replaced."""
        if p in self._queue:
            self._queue.remove(p)
            self._cancel_watchdog(p)
        elif self._running.get(p.id) is p and not p.cancelled:
            p.cancelled = True
            self._cancel_watchdog(p)
            p.watchdog = self._clock.callLater(self.config.grace_s, self._watchdog, p)
            proto = self._proto
            if proto is not None and proto.transport is not None:
                proto.transport.write(encode({"op": "cancel", "id": p.id}))

    def _done(self, ctl: dict, payload: bytes) -> None:
        p = self._running.pop(ctl.get("id"), None)
        if p is None:
            return  # already failed by the watchdog
        self._cancel_watchdog(p)
        if p.d.called:  # cancelled: its child is gone, its slot free
            self._pump()
            return
        try:
            status = ResultStatus[ctl["status"]]
            out_len = int(ctl["out_len"])
            log_len = int(ctl["log_len"])
            if out_len < 0 or log_len < 0 or out_len + log_len != len(payload):
                raise ValueError("lengths do not match the payload")
        except (KeyError, ValueError, TypeError) as e:
            log.error("zygote sent a malformed result: {err}", err=str(e))
            status, out_len, log_len = ResultStatus.INTERNAL, 0, 0
            payload = b""
            ctl = dict(ctl, message="malformed result from the zygote")
        p.d.callback(ExecResult(
            status=status, output=payload[:out_len], log=payload[out_len:out_len + log_len],
            message=str(ctl.get("message", "")), queue_ms=self._queue_ms(p),
            boot_ms=float(ctl.get("boot_ms", 0.0)), exec_ms=float(ctl.get("exec_ms", 0.0)),
            request_id=p.request_id))
        self._pump()

    def _watchdog(self, p: _Pending) -> None:
        p.watchdog = None
        if p in self._queue:
            self._queue.remove(p)
            self._fail(p, ResultStatus.TIMEOUT, "deadline passed while queued")
        elif self._running.get(p.id) is p:
            del self._running[p.id]
            log.error("zygote did not answer call {id} within {what} plus grace; restarting it",
                      id=p.id, what="its cancel" if p.cancelled else "its deadline")
            self._fail(p, ResultStatus.TIMEOUT, "deadline passed and the zygote did not answer")
            self._kill_zygote()
            self._pump()

    # -- helpers ---------------------------------------------------------------

    def _queue_ms(self, p: _Pending) -> float:
        end = p.t_dispatch if p.t_dispatch is not None else self._clock.seconds()
        return round(max(0.0, end - p.t_submit) * 1000.0, 3)

    def _cancel_watchdog(self, p: _Pending) -> None:
        if p.watchdog is not None and p.watchdog.active():
            p.watchdog.cancel()
        p.watchdog = None

    def _fail(self, p: _Pending, status: ResultStatus, message: str) -> None:
        self._cancel_watchdog(p)
        if not p.d.called:
            p.d.callback(ExecResult(status=status, message=message, queue_ms=self._queue_ms(p),
                                    request_id=p.request_id))

    @staticmethod
    def _result(status: ResultStatus, message: str, request_id: str = "") -> ExecResult:
        return ExecResult(status=status, message=message, request_id=request_id)
