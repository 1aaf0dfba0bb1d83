# -*- test-case-name: tests.test_invoke_host -*-
"""
INVOKE and CANCEL at a host (RFC 10.2, 10.5): run a stored function once in
the jail and answer RESULT.

- **Refusals** answer the INVOKE with ERROR, before any work: a
  ``deadline_ms`` over MAX_DEADLINE_MS is ``out_of_range``; an input over
  the executor's input cap is ``too_large``.
- **Deadline.** ``deadline_ms`` 0 means the manifest's ``timeout_ms``, and
  no call runs longer than that.  The budget counts the time the call
  waits in the executor's queue and the time it runs, never the time to
  fetch and unpack the package or to boot the jail (the zygote and the
  call's jail): those are bounded on their own (FETCH_WAIT_MAX_S,
  ``ExecConfig.boot_max_s``) and reported in ``fetch_us``/``boot_us``.
- **Cold replica.** A package this host accepted by OFFER and is still
  downloading is waited for (``downloads(fid)``, at most
  FETCH_WAIT_MAX_S); a package neither held nor downloading, or whose
  download failed, is RESULT ``not_found`` (the caller tries another
  replica).  A full executor is RESULT ``busy``, and so is a host holding
  ``max_in_flight`` calls; an executor that cannot isolate untrusted code
  is ``refused``.
- **CANCEL** from the session (or relayed caller) that sent the INVOKE
  withdraws it: it leaves the queue, or its jail child is killed; no
  RESULT is sent.  A lost session withdraws all of its calls.  A CANCEL
  naming no call of that session's is ignored.
- The package runs from an unpacked, read-only copy made once per fid
  (at most MAX_UNPACKED kept; the least recently used goes first, and a
  package that leaves the store takes its copy with it).
- Status and timings are the executor's (orb.exec): what the host saw,
  never what the function wrote.  RESULT carries, in microseconds,
  ``queue_us`` (the executor's queue), ``fetch_us`` (waiting for the
  download, then unpacking), ``boot_us`` (starting the zygote if this call
  waited for it, plus the call's jail setup) and ``exec_us``.
- After every call that ran (every RESULT but ``not_found``, ``busy`` and
  ``refused``; never a cancelled call) each of ``finished_listeners`` is
  called with ``(fid_raw, result, trace_id, ended_s)``: ``trace_id`` is
  the INVOKE's 16-byte TRACE_ID TLV, or b"".  A listener that raises is
  logged and changes nothing.

- **Private functions** (manifest ``visibility = "private"``): every
  INVOKE's ``token`` is checked by ``tokens`` (orb.peer.tokens) once the
  manifest is known, before the call runs: a refusal is RESULT ``denied``
  whose log starts with the reason (``token_expired: ...``, RFC 9.11). A
  call a tracker sent is bound to its ``caller`` TLV, a direct call to the
  session's key. Public functions ignore ``token``.
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
from orb.protocol.codes import ErrorCode, ResultStatus
from orb.protocol.manifest import MAX_TIMEOUT_MS
from orb.protocol.messages import MessageType, trace_id_of
from orb.protocol.token import TokenError

log = orb_logger()

MAX_UNPACKED = 64
MAX_U32 = 2**32 - 1
MAX_DEADLINE_MS = MAX_TIMEOUT_MS  # the longest a function may run: a longer deadline_ms is refused out_of_range
MAX_IN_FLIGHT = 1024  # calls held at once (waiting for a download, queued or running), all callers
FETCH_WAIT_MAX_S = 120.0  # how long a call waits for a download this host has under way
# RESULTs that say the call never ran here: no finished_listeners for them.
_NOT_RUN = (ResultStatus.NOT_FOUND, ResultStatus.BUSY, ResultStatus.REFUSED, ResultStatus.DENIED,
            ResultStatus.GONE, ResultStatus.PAYMENT_REQUIRED)


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
    """The INVOKE and CANCEL handlers of a host.  ``executor_factory()``
    makes the jail's Executor (started on the first call); ``run_dir``
    holds unpacked copies; ``downloads(fid)`` is a Deferred[bool] (hosted
    or not) for a package whose download is under way, else None."""

    def __init__(self, clock, packages, run_dir, executor_factory, *, downloads=None,
                 max_in_flight=MAX_IN_FLIGHT, fetch_wait_max_s=FETCH_WAIT_MAX_S, tokens=None):
        self.clock = clock
        self.packages = packages
        self.run_dir = run_dir
        self.executor_factory = executor_factory
        self.downloads = downloads
        self.is_gone = lambda fid: False  # past its owner's sunset (RFC 9.10): set by the wiring (Deprecations)
        self.max_in_flight = max_in_flight
        self.fetch_wait_max_s = fetch_wait_max_s
        self.finished_listeners = []  # callables(fid_raw, m.Result, trace_id, ended_s)
        self.tokens = tokens  # orb.peer.tokens.HostTokens; None: private functions are refused
        self.secrets_for = None  # fid_raw -> the call's secrets, a dict (orb.peer.secrets, RFC 9.12)
        self._executor = None
        self._starting = None
        self._calls = {}  # session record -> {request_id: Deferred of the call}
        self._in_flight = 0
        self._unpacked = collections.OrderedDict()  # fid -> Deferred[(dir, manifest json)]
        packages.removed_listeners.append(self._package_removed)

    def handlers(self):
        return {MessageType.INVOKE: self.on_invoke, MessageType.CANCEL: self.on_cancel}

    def __len__(self):
        """Calls held: waiting for a download, queued or running."""
        return self._in_flight

    def load_permille(self):
        """The executor's running + queued calls against its capacity (1000: the next call is busy)."""
        executor = self._executor
        if executor is None:
            return 0
        return min(1000, (executor.running + executor.queued) * 1000 // max(1, executor.capacity))

    # --- the wire ---------------------------------------------------------------------

    def on_invoke(self, record, message, request_id):
        received = self.clock.seconds()
        if message.deadline_ms > MAX_DEADLINE_MS:
            record.refuse(request_id, ErrorCode.OUT_OF_RANGE,
                          f"deadline_ms {message.deadline_ms} is over this host's maximum of {MAX_DEADLINE_MS}")
            return
        cap = self._get_executor().config.input_max_bytes
        if len(message.input) > cap:
            record.refuse(request_id, ErrorCode.TOO_LARGE,
                          f"input of {len(message.input)} bytes is over this host's {cap}-byte cap")
            return
        calls = self._calls.get(record)
        if calls is not None and request_id in calls:
            record.refuse(request_id, ErrorCode.UNEXPECTED, "request_id names a call already in flight")
            return
        if self._in_flight >= self.max_in_flight:
            record.send(_result(ResultStatus.BUSY, log=f"this host holds {self._in_flight} calls".encode()),
                        response_to=request_id)
            return
        caller = self.tokens.caller_for(record, message) if self.tokens is not None else None
        d = self.invoke(message, received, caller)
        if not d.called:
            self._calls.setdefault(record, {})[request_id] = d
            self._in_flight += 1
            d.addBoth(self._forget, record, request_id)
        trace_id = trace_id_of(message)

        def answer(result):
            record.send(result, response_to=request_id)
            if result.status not in _NOT_RUN:
                self._finished(message.fid, result, trace_id)

        def failed(failure):
            if failure.check(defer.CancelledError):
                return  # withdrawn by CANCEL or a lost session: no RESULT
            log.failure("invoking {fid}", failure, fid=message.fid.hex()[:16])
            answer(_result(ResultStatus.INTERNAL, log=b"the host failed for reasons of its own"))

        d.addCallbacks(answer, failed)

    def on_cancel(self, record, message, request_id):
        """CANCEL: withdraw this session's INVOKE ``message.request_id``, if it is still held."""
        d = self._calls.get(record, {}).get(message.request_id)
        if d is not None:
            d.cancel()

    def session_lost(self, record):
        """A caller's session is gone: withdraw all of its calls."""
        calls = self._calls.pop(record, None)
        if calls:
            log.info("session {peer} lost; cancelling its {n} calls", peer=record.name, n=len(calls))
            for d in list(calls.values()):
                d.cancel()

    def _forget(self, outcome, record, request_id):
        self._in_flight -= 1
        calls = self._calls.get(record)
        if calls is not None:
            calls.pop(request_id, None)
            if not calls:
                del self._calls[record]
        return outcome

    def _finished(self, fid_raw, result, trace_id):
        ended_s = self.clock.seconds()
        for listener in list(self.finished_listeners):
            try:
                listener(fid_raw, result, trace_id, ended_s)
            except Exception:
                log.failure("a finished-call listener failed")

    # --- one call -------------------------------------------------------------------

    @defer.inlineCallbacks
    def invoke(self, message, received, caller=None):
        """Run one INVOKE (checked by on_invoke); fires with its RESULT.
        Cancelling the Deferred withdraws the call wherever it is."""
        raw = message.fid
        if self.is_gone(raw):
            return _result(ResultStatus.GONE, log=b"the function is past the sunset its owner set")
        if self.packages.get(raw) is None:
            waiting = self.downloads(raw) if self.downloads is not None else None
            if waiting is None:
                return _result(ResultStatus.NOT_FOUND, log=b"this host does not hold the function")
            try:
                hosted = yield waiting.addTimeout(self.fetch_wait_max_s, self.clock)
            except defer.TimeoutError:
                hosted = False
            if not hosted or self.packages.get(raw) is None:
                return _result(ResultStatus.NOT_FOUND, log=b"this host could not fetch the function")
        fid_text = fidmod.to_text(raw)
        root, manifest = yield self._unpacked_copy(raw)
        if manifest.get("visibility", "public") != "public":
            denied = self._check_token(raw, message.token, caller)
            if denied is not None:
                return _result(ResultStatus.DENIED, log=denied.encode("utf-8"))
        fetch_s = self.clock.seconds() - received  # waiting for the download, then unpacking
        timeout_s = manifest["timeout_ms"] / 1000
        if message.deadline_ms:
            timeout_s = min(timeout_s, message.deadline_ms / 1000)
        started = self.clock.seconds()
        executor = yield self._ready()
        zygote_boot_s = self.clock.seconds() - started
        from orb.exec import RuntimeSpec

        spec = RuntimeSpec(runtime=manifest["runtime"], entry=manifest["entry"], memory_mb=manifest["memory_mb"],
                           timeout_s=timeout_s,
                           reuse=manifest["isolation"] if manifest["runtime"] == "python" else "per-call")
        # The whole budget: the executor counts its queue time against it,
        # and the zygote starts the call's clock once its jail is up.
        values = self.secrets_for(raw) if self.secrets_for is not None else {}
        extra = {"secrets": values} if values else {}  # only through the call's context, never kept here
        result = yield executor.invoke(fid_text, root, spec, message.input, deadline_s=timeout_s,
                                       request_id=f"invoke-{received:.6f}", **extra)
        del values, extra
        log_text = result.log or (result.message.encode("utf-8") if result.status is not ResultStatus.OK else b"")
        return m.Result(status=int(result.status), queue_us=_us(result.queue_ms), fetch_us=_us(fetch_s * 1000),
                        boot_us=_us(zygote_boot_s * 1000 + result.boot_ms), exec_us=_us(result.exec_ms),
                        output=result.output if result.status is ResultStatus.OK else b"", log=log_text)

    def _check_token(self, raw, token, caller):
        """None if ``token`` lets ``caller`` call private ``raw``, else the RESULT ``denied`` log text."""
        if self.tokens is None:
            return "token_required: this host checks no capability tokens"
        try:
            self.tokens.check(raw, token, caller)
        except TokenError as e:
            log.info("refused a call of {fid}: {reason}", fid=fidmod.to_text(raw)[:16], reason=e.reason)
            return f"{e.reason}: {e.text}"
        return None

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

    def _get_executor(self):
        """The executor, made (not started) on first use."""
        if self._executor is None:
            self._executor = self.executor_factory()
        return self._executor

    @defer.inlineCallbacks
    def _ready(self):
        executor = self._get_executor()
        if self._starting is None:
            self._starting = _Shared(executor.start())
        yield self._starting.subscribe()
        return executor

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


def _result(status, log=b""):
    return m.Result(status=int(status), queue_us=0, fetch_us=0, boot_us=0, exec_us=0, output=b"", log=log)

