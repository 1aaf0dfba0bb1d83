# -*- test-case-name: tests.test_functions -*-
"""
INVOKE at a host (RFC 10.2): run a stored function once in the jail and
answer RESULT.

- The deadline clock starts when the INVOKE arrives; ``deadline_ms`` 0
  means the manifest's ``timeout_ms``, and no call runs longer than that.
  The executor's queue time counts against it.
- A package this host does not hold is RESULT ``not_found`` (the caller
  tries another replica); a full executor is RESULT ``busy``; an executor
  that cannot isolate untrusted code is ``refused``.
- The package runs from an unpacked, read-only copy made once per fid
  (at most MAX_UNPACKED kept; the least recently used goes first, and a
  package that leaves the store takes its copy with it).
- Status and timings are the executor's (orb.exec): what the host saw,
  never what the function wrote. RESULT carries queue, boot and exec times
  in microseconds; ``fetch_us`` is 0 (a host runs only what it holds).

Capability tokens (private functions) come with issue 13: every function
is public for now, and ``token`` is ignored.
"""

import collections
import os
import shutil

from twisted.internet import defer
from twisted.python.failure import Failure

from orb.net.logs import orb_logger
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol import package as packagemod
from orb.protocol.codes import ResultStatus, TlvType
from orb.protocol.messages import MessageType

log = orb_logger()

MAX_UNPACKED = 64
MAX_U32 = 2**32 - 1


def _us(ms):
    return max(0, min(MAX_U32, int(round(ms * 1000))))


def _unpack_to(data, root):
    """Write a package's files under ``root`` (dirs 0755, files 0644 or 0755), atomically."""
    files, _ = packagemod.unpack(data)
    tmp = root + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp, mode=0o755)
    os.chmod(tmp, 0o755)
    for f in files:
        path = os.path.join(tmp, *f.path.split("/"))
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        with open(path, "wb") as out:
            out.write(f.data)
        os.chmod(path, 0o755 if f.executable else 0o644)
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    return root


def _read_all(path):
    with open(path, "rb") as f:
        return f.read()


class Invocations:
    """The INVOKE handler of a host.  ``executor_factory()`` makes the jail's
    Executor (started on the first call); ``run_dir`` holds unpacked copies."""

    def __init__(self, clock, packages, run_dir, executor_factory):
        self.clock = clock
        self.packages = packages
        self.run_dir = run_dir
        self.executor_factory = executor_factory
        self._executor = None
        self._starting = None
        self._unpacked = collections.OrderedDict()  # fid -> Deferred[(dir, manifest json)]
        self.finished_listeners = []  # listener(fid_raw, result, trace_id, ended_s) after every call that ran
        packages.removed_listeners.append(self._package_removed)

    def handlers(self):
        return {MessageType.INVOKE: self.on_invoke}

    def on_invoke(self, record, message, request_id):
        received = self.clock.seconds()
        d = self.invoke(message, received)

        def answer(result):
            record.send(result, response_to=request_id)
            if result.status not in (ResultStatus.NOT_FOUND, ResultStatus.BUSY):  # it ran (orb.peer.logs keeps it)
                for listener in list(self.finished_listeners):
                    listener(message.fid, result, _trace_id(message), self.clock.seconds())

        def failed(failure):
            log.failure("invoking {fid}", failure, fid=message.fid.hex()[:16])
            answer(m.Result(status=int(ResultStatus.INTERNAL), queue_us=0, fetch_us=0, boot_us=0, exec_us=0,
                            output=b"", log=b"the host failed for reasons of its own"))

        d.addCallbacks(answer, failed)

    @defer.inlineCallbacks
    def invoke(self, message, received):
        raw = message.fid
        if self.packages.get(raw) is None:
            return _result(ResultStatus.NOT_FOUND, log=b"this host does not hold the function")
        fid_text = fidmod.to_text(raw)
        root, manifest = yield self._unpacked_copy(raw)
        timeout_s = manifest["timeout_ms"] / 1000
        if message.deadline_ms:
            timeout_s = min(timeout_s, message.deadline_ms / 1000)
        executor = yield self._ready()
        remaining = timeout_s - (self.clock.seconds() - received)
        if remaining <= 0:
            return _result(ResultStatus.TIMEOUT, log=b"the deadline passed before the call could start")
        from orb.exec import RuntimeSpec

        spec = RuntimeSpec(runtime=manifest["runtime"], entry=manifest["entry"], memory_mb=manifest["memory_mb"],
                           timeout_s=timeout_s,
                           reuse=manifest["isolation"] if manifest["runtime"] == "python" else "per-call")
        result = yield executor.invoke(fid_text, root, spec, message.input, deadline_s=remaining,
                                       request_id=f"invoke-{received:.6f}")
        log_text = result.log or (result.message.encode("utf-8") if result.status is not ResultStatus.OK else b"")
        return m.Result(status=int(result.status), queue_us=_us(result.queue_ms), fetch_us=0,
                        boot_us=_us(result.boot_ms), exec_us=_us(result.exec_ms),
                        output=result.output if result.status is ResultStatus.OK else b"", log=log_text)

    def _unpacked_copy(self, raw):
        shared = self._unpacked.get(raw)
        if shared is not None and not shared.failed:
            self._unpacked.move_to_end(raw)
            return shared.subscribe()
        root = os.path.join(self.run_dir, fidmod.to_text(raw))
        d = self.packages.io.run(_read_all, self.packages.path(raw))

        def unpack(data):
            _, manifest = packagemod.unpack(data)
            return self.packages.io.run(_unpack_to, data, root).addCallback(lambda r: (r, manifest))

        d.addCallback(unpack)
        shared = self._unpacked[raw] = _Shared(d)
        while len(self._unpacked) > MAX_UNPACKED:
            old, _ = self._unpacked.popitem(last=False)
            self._remove_copy(old)
        return shared.subscribe()

    def _package_removed(self, raw, reason):
        if self._unpacked.pop(raw, None) is not None:
            self._remove_copy(raw)

    def _remove_copy(self, raw):
        root = os.path.join(self.run_dir, fidmod.to_text(raw))
        self.packages.io.run(shutil.rmtree, root, True).addErrback(lambda f: None)

    @defer.inlineCallbacks
    def _ready(self):
        if self._executor is None:
            self._executor = self.executor_factory()
            self._starting = _Shared(self._executor.start())
        yield self._starting.subscribe()
        return self._executor

    def stop(self):
        return self._executor.stop() if self._executor is not None else defer.succeed(None)


class _Shared:
    """One outcome many callers wait for: ``subscribe()`` gives each its own Deferred."""

    def __init__(self, d):
        self._done = False
        self._result = None
        self._waiters = []
        d.addBoth(self._settle)

    def _settle(self, result):
        self._done, self._result = True, result
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            self._fire(w)
        return None  # consumed here; every subscriber gets its own copy

    def _fire(self, w):
        if isinstance(self._result, Failure):
            w.errback(self._result)
        else:
            w.callback(self._result)

    @property
    def failed(self):
        return self._done and isinstance(self._result, Failure)

    def subscribe(self):
        w = defer.Deferred()
        if self._done:
            self._fire(w)
        else:
            self._waiters.append(w)
        return w


def _trace_id(message):
    return next((t.value for t in message.ext if t.type == TlvType.TRACE_ID and len(t.value) == 16), b"")


def _result(status, log=b""):
    return m.Result(status=int(status), queue_us=0, fetch_us=0, boot_us=0, exec_us=0, output=b"", log=log)

