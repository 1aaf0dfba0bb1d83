# -*- test-case-name: tests.test_router -*-
"""
Calls through a tracker (RFC 10.1, 10.2, 10.5, 10.6): the gateway's
``POST /f/<fid>`` and INVOKE sent to a tracker both come here.

Choosing.  The candidates are the function's verified replicas; when none
of them can take the call (no channel, or at its concurrency cap), its
*cold* replicas: placed and accepted but not verified yet, which may have to
fetch the package first (Replication.cold_replicas). Among those with a free
slot the router takes one by power-of-two-choices on the one cost
(orb.tracker.routing): RTT × (outstanding + 1) × (1000 + load) / 1000, where
``outstanding`` is the calls this tracker has in flight on the replica.

Backpressure.  At most ``max_per_replica`` calls are in flight on one
replica. A call whose candidates are all at their cap waits in one FIFO
queue of at most ``max_queue`` calls, until a slot frees on one of them or
its deadline passes; with the queue full it is answered RESULT ``busy`` at
once, with ``retry_after_s`` in the Answer.

Retries.  A replica that fails before it could have started the call (no
channel, the request could not be sent, ERROR busy / rate_limited /
not_found / shutdown, RESULT busy / not_found / refused) is skipped for the
next one. ERROR too_large or out_of_range is about the request, not the
replica: INVOKE's caller gets the same ERROR.
Once the request was sent, a lost session or a timeout may have left the
function half run: the call goes to another replica only if the manifest
says ``idempotent``; otherwise the answer is RESULT ``internal`` saying so.

Hedging (idempotent functions only).  Once the request has been out longer
than the replica's recent p95 latency for this function (a window of the
last LATENCY_WINDOW answers, used from MIN_HEDGE_SAMPLES on; until then the
window of the function over all its replicas), a second
request goes to another replica with a free slot. The first RESULT wins;
the other request's Deferred is cancelled, which sends CANCEL to its host.
Hedges draw on a budget: each call adds HEDGE_RATIO of a token, up to
HEDGE_BURST, and a hedge takes one. Under overload every call runs past its
p95, and hedging them all would double the work exactly when there is no
room for it ("The Tail at Scale"; gRPC's retry throttling).

Input.  An input over the manifest's ``max_input_bytes`` (RFC 9.7) is
refused before routing (ERROR too_large to INVOKE).

Deadlines.  ``deadline_s`` (INVOKE's ``deadline_ms``; 0 or None means the
manifest's ``timeout_ms``) is the caller's whole budget, counted from when
the call reached the router. Each INVOKE sent carries what is left of it;
the router waits that plus REQUEST_MARGIN_S, plus COLD_FETCH_ALLOWANCE_S
for a cold replica (fetch and boot never count against the caller). A
deadline past MAX_DEADLINE_S is refused (ERROR ``out_of_range`` to INVOKE).

Cache.  For a ``pure``, public function an ``ok`` answer is kept in the
result cache (orb.tracker.cache) and served from there, marked ``cached``;
a call identical to one still running waits for that run's answer (within
its own deadline) instead of starting another.

Private functions.  A call of a function whose manifest says
``visibility = "private"`` is checked by ``tokens`` (orb.tracker.tokens)
before routing: a refused one is RESULT ``denied`` whose log starts with
the reason (``token_required: ...``, ``token_expired: ...``, RFC 9.11). The
INVOKE sent on carries the ``caller`` TLV, the key the binding was checked
against. Private calls are never cached.

Suspects.  A replica that answered a canary call wrong (orb.tracker.canary,
``is_suspect``) is offered no calls until its penalty is over.

Cancel.  A caller's CANCEL for an INVOKE it sent here cancels the routed
call, and so does the loss of its session: CANCEL goes on to the replica.
"""

import collections
import math
import random

import attrs
from twisted.internet import defer, error
from twisted.python.failure import Failure

from orb.net.adapter import RemoteError, RequestTimeout
from orb.net.logs import orb_logger
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode, ResultStatus, TlvType
from orb.protocol.manifest import MAX_INPUT_BYTES, MAX_TIMEOUT_MS
from orb.protocol.messages import TRACE_ID_BYTES, MessageType, trace_id_of
from orb.protocol.token import TokenError
from orb.tracker.cache import ResultCache, cache_key
from orb.tracker.routing import choose

log = orb_logger()

MAX_DEADLINE_S = MAX_TIMEOUT_MS / 1000  # the longest a function may run; a longer deadline is refused: ERROR(out_of_range)
REQUEST_MARGIN_S = 1.0  # the router waits for a RESULT this long past the caller's deadline
COLD_FETCH_ALLOWANCE_S = 30.0  # ... and this much more from a cold replica, which fetches first
DEFAULT_MAX_PER_REPLICA = 32  # calls this tracker has in flight on one replica
DEFAULT_MAX_QUEUE = 256  # calls waiting for a free slot, in all
RETRY_AFTER_S = 1.0  # the hint given with "busy"
LATENCY_WINDOW = 64  # answers kept per (function, replica), and per function, for the p95
MIN_HEDGE_SAMPLES = 8  # no hedging on fewer
MAX_LATENCY_WINDOWS = 4096  # (function, replica) pairs tracked; least recently used dropped
MAX_HEDGES = 1  # extra requests per call
EWMA_DECAY = 0.25  # a faster answer moves a replica's peak EWMA this share of the way down (routing.py)
HEDGE_RATIO = 0.05  # hedges are at most 5% of calls (plus the burst) ...
HEDGE_BURST = 20.0  # ... and at most this many at once after a quiet spell
MAX_CALLERS_CALLS = 4096  # INVOKEs received and not yet answered, over all sessions (for CANCEL)
RETRY_BEFORE_START = (ResultStatus.BUSY, ResultStatus.NOT_FOUND, ResultStatus.REFUSED)
REFUSALS_PASSED_ON = (int(ErrorCode.TOO_LARGE), int(ErrorCode.OUT_OF_RANGE))  # about the request, not the replica
ERRORS_BEFORE_START = (int(ErrorCode.BUSY), int(ErrorCode.RATE_LIMITED), int(ErrorCode.NOT_FOUND),
                       int(ErrorCode.SHUTDOWN))

DEFAULT_DEADLINE_S = 10.0  # kept for callers that name it; the manifest's timeout is the default budget


def result(status, text=""):
    return m.Result(status=int(status), queue_us=0, fetch_us=0, boot_us=0, exec_us=0, output=b"",
                    log=text.encode("utf-8"))


@attrs.frozen
class Answer:
    """A call's RESULT, the replica that gave it (None: none did), and the time spent at the tracker."""

    result: m.Result
    replica: bytes | None = None
    network_us: int = 0
    cached: bool = False  # served from the tracker's result cache (RFC 10.6), not by a run
    route: str = "direct"  # how the replica was reached: "direct" (its session here), "relay" (RFC 10.3)
    attempts: int = 1  # requests sent to replicas, hedges and retries included (0: none, e.g. cached)
    retry_after_s: float | None = None  # with RESULT busy: when trying again makes sense
    refusal: int = 0  # an ErrorCode when the call was refused, not run: out_of_range (a bad deadline), too_large
    # (the replica's input cap); INVOKE's caller gets ERROR(refusal) rather than the RESULT


def deadline_problem(deadline_s):
    """Why ``deadline_s`` (seconds, None or 0 for the default) is refused, or None."""
    if deadline_s is None:
        return None
    if not math.isfinite(deadline_s) or deadline_s < 0:
        return "the deadline must be a finite, non-negative number of seconds"
    if deadline_s > MAX_DEADLINE_S:
        return f"a deadline of {deadline_s:g} s is past the maximum of {MAX_DEADLINE_S:g} s"
    return None


class _Direct:
    """The default channel: the tracker's own session with the replica."""

    route = "direct"

    def __init__(self, record):
        self.record = record

    def request(self, message, timeout_s):
        return self.record.request(message, timeout_s=timeout_s)


@attrs.define(eq=False)
class _Attempt:
    node_id: bytes
    route: str
    sent_at: float
    cold: bool
    deferred: defer.Deferred | None = None
    may_have_started: bool = True  # False: the request failed before it was sent


class Router:
    def __init__(self, clock, table, registry, replication, *, channel=None, rng=None, cache=None,
                 max_per_replica=DEFAULT_MAX_PER_REPLICA, max_queue=DEFAULT_MAX_QUEUE):
        self.clock = clock
        self.table = table
        self.registry = registry
        self.replication = replication
        self.call_listeners = []  # (fid text, latency s, ok) after each INVOKE answered here
        # (fid raw, Answer, caller key or None, input bytes, authorized) once per run on a replica; authorized:
        # the owner authorized the caller (RFC 10.10: its key, its token, or a manifest paying for any caller)
        self.run_listeners = []
        self.answer_listeners = []  # (fid raw, input, Answer) once per run on a replica: canary checks remember
        self.channel = channel or self._direct_channel
        self.rng = rng or random.Random()
        self.cache = cache if cache is not None else ResultCache(clock)
        self.max_per_replica = max_per_replica
        self.max_queue = max_queue
        self._outstanding = {}  # node id -> requests in flight on it (no entry: 0)
        self._latency = collections.OrderedDict()  # (fid bytes, node id) -> deque of seconds
        self._ewma = collections.OrderedDict()  # (fid bytes, node id) -> peak EWMA of its call latency, ms
        self._queue = collections.deque()  # _Call waiting for a free slot, oldest first
        self._callers = {}  # (caller's record, its request id) -> Deferred of the routed call
        self._runs = {}  # cache key -> the _Call running it, for pure functions (identical calls share it)
        self._by_caller = {}  # caller's record -> set of its request ids in _callers
        self.counts = collections.Counter()  # what figures() reports
        self.hedge_tokens = HEDGE_BURST  # the hedge budget (module docstring)
        self.tokens = None  # orb.tracker.tokens.Tokens: checks calls of private functions (None: refuses them)
        self.is_gone = lambda fid: False  # past its owner's sunset (RFC 9.10): set by the wiring (Names)
        self.is_suspect = lambda node_id: False  # answered a canary wrong: offered no calls (orb.tracker.canary)
        # fid raw -> None (go on), a refusal text, or a Deferred of either: a manifest with payment.required
        # whose escrow cannot pay is answered payment_required (orb.tracker.funding; None: no escrow to read)
        self.payment_gate = None
        self.require_payment = False  # --require-funding: gate every function, whatever its manifest says

    def handlers(self):
        return {MessageType.INVOKE: self.on_invoke, MessageType.CANCEL: self.on_cancel}

    def _direct_channel(self, node_id):
        record = self.table.get(node_id)
        if record is None or not record.ready:
            return None
        return _Direct(record)

    # --- bookkeeping ------------------------------------------------------------------

    def outstanding(self, node_id):
        return self._outstanding.get(node_id, 0)

    def queued(self):
        return len(self._queue)

    def figures(self):
        """What the router has done and holds, for /metrics and the dashboard: counters since start and gauges."""
        counters = ("calls", "cached", "shared", "sent", "retries", "hedges", "hedges_over_budget", "queued",
                    "queue_full")
        return {**{k: self.counts[k] for k in counters},
                "queue_length": len(self._queue), "outstanding": sum(self._outstanding.values()),
                "cache_entries": len(self.cache), "cache_bytes": self.cache.size_bytes}

    def has_slot(self, node_id):
        return self.outstanding(node_id) < self.max_per_replica

    def _take(self, node_id):
        self._outstanding[node_id] = self.outstanding(node_id) + 1

    def _release(self, node_id):
        left = self.outstanding(node_id) - 1
        if left > 0:
            self._outstanding[node_id] = left
        else:
            self._outstanding.pop(node_id, None)
        for _ in range(len(self._queue)):  # FIFO: the oldest call that can use the slot takes it
            if not self.has_slot(node_id):
                return
            call = next((c for c in self._queue if c.waits_for(node_id)), None)
            if call is None:
                return
            self._queue.remove(call)
            call.woken()

    def observe_latency(self, fid_raw, node_id, seconds):
        """A RESULT came ``seconds`` after its INVOKE went to ``node_id``: into its window and the function's,
        and into the replica's peak EWMA (up at once to a slower answer, a quarter of the way down to a faster)."""
        key = (fid_raw, node_id)
        ms = seconds * 1000
        old = self._ewma.pop(key, None)
        if old is None and len(self._ewma) >= MAX_LATENCY_WINDOWS:
            self._ewma.popitem(last=False)
        self._ewma[key] = ms if old is None or ms >= old else old + EWMA_DECAY * (ms - old)
        for key in ((fid_raw, node_id), (fid_raw, None)):
            window = self._latency.pop(key, None)
            if window is None:
                window = collections.deque(maxlen=LATENCY_WINDOW)
                if len(self._latency) >= MAX_LATENCY_WINDOWS:
                    self._latency.popitem(last=False)
            window.append(seconds)
            self._latency[key] = window

    def latency_ms(self, fid_raw):
        """node id -> its peak EWMA call latency for ``fid_raw`` in ms, or None: what ``choose`` ranks by."""
        ewma = self._ewma
        return lambda node_id: ewma.get((fid_raw, node_id))

    def p95_s(self, fid_raw, node_id):
        """
        The replica's recent p95 latency for the function; with fewer than
        MIN_HEDGE_SAMPLES answers from it, the p95 over all the function's
        replicas; None with fewer than that too.
        """
        for key in ((fid_raw, node_id), (fid_raw, None)):
            window = self._latency.get(key)
            if window is not None and len(window) >= MIN_HEDGE_SAMPLES:
                ordered = sorted(window)
                return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
        return None

    # --- the wire ---------------------------------------------------------------------

    def on_invoke(self, record, message, request_id):
        problem = deadline_problem(message.deadline_ms / 1000)
        if problem is not None:
            record.refuse(request_id, ErrorCode.OUT_OF_RANGE, problem)
            return
        if len(self._callers) >= MAX_CALLERS_CALLS:
            record.refuse(request_id, ErrorCode.BUSY, "this tracker has too many calls in flight; try another")
            return
        # The caller a token is bound to: the session's key. (Trackers do not forward INVOKE to each other, so
        # a caller TLV here is never trusted: a node claiming the tracker role could name any key in it.)
        caller = getattr(getattr(record, "remote", None), "public_key", None)
        d = self.call(message.fid, message.input, message.deadline_ms / 1000 or None, message.token,
                      trace_id_of(message), caller=caller)
        key = (record, request_id)
        if not d.called:
            self._callers[key] = d
            self._by_caller.setdefault(record, set()).add(request_id)

        started = self.clock.seconds()

        def answered(answer):
            self._forget_caller(key)
            if answer.refusal:
                record.refuse(request_id, answer.refusal, answer.result.log.decode("utf-8", "replace"))
                return
            result = answer.result
            if answer.replica is not None:  # say which host ran it (RFC 11.5, TLV replica)
                result = attrs.evolve(result, ext=result.ext + (m.Tlv(int(TlvType.REPLICA), answer.replica),))
            record.send(result, response_to=request_id)
            try:
                fid_text = fidmod.to_text(message.fid)
            except fidmod.FidError:
                return
            for listener in self.call_listeners:  # the figures behind /metrics and the dashboard
                listener(fid_text, self.clock.seconds() - started, result.status_kind is ResultStatus.OK)

        def cancelled(failure):
            failure.trap(defer.CancelledError)
            self._forget_caller(key)

        d.addCallbacks(answered, cancelled)

    def on_cancel(self, record, message, request_id):
        """The caller withdraws its INVOKE ``message.request_id``: stop the routed call (RFC 10.5)."""
        d = self._callers.get((record, message.request_id))
        if d is not None:
            d.cancel()

    def session_lost(self, record):
        """A caller went away: cancel every call it had routed here."""
        for request_id in list(self._by_caller.get(record, ())):
            d = self._callers.get((record, request_id))
            if d is not None:
                d.cancel()
        self._by_caller.pop(record, None)

    def _forget_caller(self, key):
        if self._callers.pop(key, None) is None:
            return
        ids = self._by_caller.get(key[0])
        if ids is not None:
            ids.discard(key[1])
            if not ids:
                del self._by_caller[key[0]]

    # --- calls ------------------------------------------------------------------------

    def call(self, fid_raw, data, deadline_s=None, token=b"", trace_id=b"", caller=None):
        """
        Run ``fid_raw`` once on its best replica: Deferred[Answer], never an
        errback. Cancelling the Deferred withdraws the call (CANCEL to the
        replicas it is running on). ``caller`` is the caller's Ed25519 key
        when known (INVOKE's session), for the run listeners (payments).
        """
        self.counts["calls"] += 1
        self.hedge_tokens = min(HEDGE_BURST, self.hedge_tokens + HEDGE_RATIO)
        try:
            fid = fidmod.to_text(fid_raw)
        except fidmod.FidError:
            return defer.succeed(Answer(result(ResultStatus.NOT_FOUND, "not a fid"), attempts=0))
        problem = deadline_problem(deadline_s)
        if problem is not None:
            return defer.succeed(Answer(result(ResultStatus.INTERNAL, problem), attempts=0,
                                        refusal=int(ErrorCode.OUT_OF_RANGE)))
        function = self.registry.function(fid)
        if function is None:
            return defer.succeed(Answer(result(ResultStatus.NOT_FOUND, f"no function {fid} is deployed"), attempts=0))
        if self.is_gone(fid):
            return defer.succeed(Answer(result(ResultStatus.GONE, f"{fid} is past the sunset its owner set"),
                                        attempts=0))
        manifest = function.manifest_json()
        cap = manifest.get("max_input_bytes", MAX_INPUT_BYTES)
        if len(data) > cap:
            return defer.succeed(Answer(result(ResultStatus.INTERNAL, f"an input of {len(data)} bytes is over the "
                                                                      f"function's max_input_bytes of {cap}"),
                                        attempts=0, refusal=int(ErrorCode.TOO_LARGE)))
        private = manifest.get("visibility", "public") != "public"
        # A public function's caller may show a token too: checked, it makes the call authorized (RFC 10.10).
        checked = bool(token) and self.tokens is not None
        if private or checked:
            denied = self._check_token(fid, token, caller)
            if denied is not None:
                return defer.succeed(Answer(result(ResultStatus.DENIED, denied), attempts=0))
        payment = manifest.get("payment") or {}
        authorized = (payment.get("callers") == "any" or checked
                      or (caller is not None and caller == function.owner))
        required = payment.get("required") or self.require_payment
        gate = self.payment_gate(fid_raw) if required and self.payment_gate is not None else None
        if gate is None:
            return self._route(fid, fid_raw, data, manifest, deadline_s, token, trace_id, caller, private, authorized)

        def decided(problem):
            if problem is not None:
                self.counts["payment_required"] += 1
                return Answer(result(ResultStatus.PAYMENT_REQUIRED, problem), attempts=0)
            return self._route(fid, fid_raw, data, manifest, deadline_s, token, trace_id, caller, private, authorized)

        return (defer.succeed(gate) if isinstance(gate, str) else gate).addCallback(decided)

    def _route(self, fid, fid_raw, data, manifest, deadline_s, token, trace_id, caller, private, authorized):
        """The rest of ``call``, once the call is let through: the cache, an identical run, or a new run."""
        cacheable = bool(manifest.get("pure")) and not private
        if cacheable:
            hit = self.cache.get(fid_raw, data)
            if hit is not None:
                cached, replica = hit
                self.counts["cached"] += 1
                return defer.succeed(Answer(cached, replica, cached=True, attempts=0))
        budget_s = min(deadline_s or manifest["timeout_ms"] / 1000, MAX_DEADLINE_S)
        trace = (m.Tlv(int(TlvType.TRACE_ID), trace_id),) if len(trace_id) == TRACE_ID_BYTES else ()
        if private and caller is not None:
            trace += (m.Tlv(int(TlvType.CALLER), caller),)
        key = cache_key(fid_raw, data) if cacheable else None
        running = self._runs.get(key) if cacheable else None
        if running is not None:  # the same pure call is running: its answer is ours too
            self.counts["shared"] += 1
            return running.subscribe(budget_s)
        call = _Call(self, fid, fid_raw, data, token, trace, budget_s, bool(manifest.get("idempotent")),
                     cacheable)
        if cacheable:
            self._runs[key] = call
            call.run_key = key
        if self.run_listeners or self.answer_listeners:  # once per run: not for cached answers nor shared runs
            call.deferred.addCallback(self._ran, fid_raw, caller, data, authorized)
        call.next_replica()
        return call.deferred if call.done else call.subscribe(budget_s, first=True)


    def _check_token(self, fid, token, caller):
        """None if ``token`` lets ``caller`` call private ``fid``, else the RESULT ``denied`` log text."""
        if self.tokens is None:
            return "token_required: this tracker checks no capability tokens"
        try:
            self.tokens.check(fid, token, caller)
        except TokenError as e:
            self.counts["denied"] += 1
            return f"{e.reason}: {e.text}"
        return None

    def _ran(self, answer, fid_raw, caller, data, authorized):
        calls = [(f, (fid_raw, answer, caller, len(data), authorized)) for f in self.run_listeners]
        calls += [(f, (fid_raw, data, answer)) for f in self.answer_listeners]
        for listener, args in calls:
            try:
                listener(*args)
            except Exception:
                log.failure("a run listener failed")
        return answer


class _Call:
    """One call's way through the replicas: choose, send, retry, hedge, answer once."""

    def __init__(self, router, fid, fid_raw, data, token, trace, budget_s, idempotent, cacheable):
        self.router = router
        self.clock = router.clock
        self.fid, self.fid_raw, self.data, self.token, self.trace = fid, fid_raw, data, token, trace
        self.idempotent = idempotent
        self.cacheable = cacheable  # pure and public: an ok answer goes to the result cache
        self.started = self.clock.seconds()
        self.budget_s = budget_s
        self.deferred = defer.Deferred()  # the answer, once (never cancelled: callers hold subscriptions)
        self.subscribers = {}  # Deferred given to a caller -> its deadline timer (None for the first caller)
        self.run_key = None  # its key in router._runs, where identical calls find it (pure functions)
        self.done = False
        self.tried = set()  # node ids asked (or found unusable) in this call
        self.inflight = {}  # node id -> _Attempt
        self.attempts = 0
        self.hedges = 0
        self.why = ""  # the last failure, for the final answer
        self.waiting_for = frozenset()  # node ids whose slot would let a queued call go on
        self._hedge_timer = None
        self._queue_timer = None

    def remaining_s(self):
        return self.budget_s - (self.clock.seconds() - self.started)

    # --- choosing -------------------------------------------------------------------

    def _candidates(self):
        """(verified, cold) replicas not tried yet, each as [(PeerRecord, channel)]."""
        replication = self.router.replication
        verified = replication.replicas(self.fid)
        ids = {p.node_id for p in verified}
        cold_of = getattr(replication, "cold_replicas", None)
        cold = [p for p in (cold_of(self.fid) if cold_of else ()) if p.node_id not in ids]
        out = []
        for group in (verified, cold):
            usable = []
            for peer in group:
                if peer.node_id in self.tried or self.router.is_suspect(peer.node_id):
                    continue
                channel = self.router.channel(peer.node_id)
                if channel is None:
                    self.tried.add(peer.node_id)  # not reachable now: it failed before starting
                    self.why = self.why or "no replica is reachable from this tracker"
                    continue
                usable.append((peer, channel))
            out.append(usable)
        return out

    def next_replica(self):
        try:
            self._next_replica()
        except Exception:
            log.failure("routing a call to {fid}", fid=self.fid[:16])
            self.finish(Answer(result(ResultStatus.INTERNAL, "the tracker failed to route the call"),
                               attempts=self.attempts))

    def _next_replica(self):
        if self.done:
            return
        if self.remaining_s() <= 0:
            if not self.inflight:
                self.finish(Answer(result(ResultStatus.TIMEOUT, "the deadline passed before a replica answered"),
                                   attempts=self.attempts))
            return
        router = self.router
        verified, cold = self._candidates()
        for group, is_cold in ((verified, False), (cold, True)):
            free = [p for p, _ in group if router.has_slot(p.node_id)]
            if free:
                peer = choose(free, router.rng, router.outstanding, router.latency_ms(self.fid_raw))
                self.send(peer.node_id, dict((p.node_id, c) for p, c in group)[peer.node_id], is_cold)
                return
        if self.inflight:
            return  # a hedge or the first request is still out: wait for it
        full = {p.node_id for p, _ in verified + cold}
        if full:
            self._enqueue(full)
            return
        if self.attempts or self.why:
            text = f"every replica failed or was unreachable ({self.why}); try again shortly"
        else:
            text = "no live replica can take the call right now"
        self.finish(Answer(result(ResultStatus.BUSY, text), attempts=self.attempts, retry_after_s=RETRY_AFTER_S))

    def _enqueue(self, node_ids):
        router = self.router
        if len(router._queue) >= router.max_queue:
            router.counts["queue_full"] += 1
            self.finish(Answer(result(ResultStatus.BUSY, "every replica is at its concurrency limit and the "
                                                         "tracker's queue is full; try again shortly"),
                               attempts=self.attempts, retry_after_s=RETRY_AFTER_S))
            return
        self.waiting_for = frozenset(node_ids)
        router._queue.append(self)
        router.counts["queued"] += 1
        self._queue_timer = self.clock.callLater(max(0.0, self.remaining_s()), self._queue_timed_out)

    def waits_for(self, node_id):
        return node_id in self.waiting_for

    def woken(self):
        """A slot freed on one of our replicas (we have left the queue)."""
        self.waiting_for = frozenset()
        if self._queue_timer is not None and self._queue_timer.active():
            self._queue_timer.cancel()
        self._queue_timer = None
        self.next_replica()

    def _queue_timed_out(self):
        self._queue_timer = None
        if self in self.router._queue:
            self.router._queue.remove(self)
        self.finish(Answer(result(ResultStatus.TIMEOUT, "the deadline passed while every replica was at its "
                                                        "concurrency limit"), attempts=self.attempts))

    # --- sending ----------------------------------------------------------------------

    def send(self, node_id, channel, cold):
        router = self.router
        remaining = self.remaining_s()
        self.tried.add(node_id)
        self.attempts += 1
        router.counts["sent"] += 1
        if self.attempts > 1 + self.hedges:
            router.counts["retries"] += 1
        router._take(node_id)
        attempt = _Attempt(node_id, getattr(channel, "route", "direct"), self.clock.seconds(), cold)
        self.inflight[node_id] = attempt
        invoke = m.Invoke(fid=self.fid_raw, deadline_ms=max(1, math.ceil(remaining * 1000)), token=self.token,
                          input=self.data, ext=self.trace)
        timeout_s = remaining + REQUEST_MARGIN_S + (COLD_FETCH_ALLOWANCE_S if cold else 0.0)
        try:
            d = channel.request(invoke, timeout_s)
        except Exception:
            log.failure("sending INVOKE to {peer}", peer=node_id.hex()[:16])
            d = defer.fail(error.ConnectionLost("the channel failed to send"))
        attempt.deferred = d
        attempt.may_have_started = not d.called
        d.addBoth(self._answered, attempt)
        if self.inflight.get(node_id) is attempt:  # still out (not failed at once)
            self._arm_hedge(attempt)

    def _arm_hedge(self, attempt):
        if not self.idempotent or self.hedges >= MAX_HEDGES or len(self.inflight) != 1 or self.done:
            return
        p95 = self.router.p95_s(self.fid_raw, attempt.node_id)
        if p95 is None or p95 >= self.remaining_s():
            return
        if self._hedge_timer is not None and self._hedge_timer.active():
            self._hedge_timer.cancel()
        self._hedge_timer = self.clock.callLater(p95, self._hedge)

    def _hedge(self):
        """The request has been out longer than its replica's p95: ask another replica too."""
        self._hedge_timer = None
        if self.done or len(self.inflight) != 1 or self.remaining_s() <= 0:
            return
        router = self.router
        verified, _ = self._candidates()
        free = [p for p, _ in verified if router.has_slot(p.node_id)]
        if not free:
            return  # hedges never queue
        if router.hedge_tokens < 1:
            router.counts["hedges_over_budget"] += 1
            return
        router.hedge_tokens -= 1
        peer = choose(free, router.rng, router.outstanding, router.latency_ms(self.fid_raw))
        self.hedges += 1
        router.counts["hedges"] += 1
        (first,) = self.inflight.values()
        log.info("hedging a call to {fid}: {slow} is past its p95, asking {other} too", fid=self.fid[:16],
                 slow=first.node_id.hex()[:16], other=peer.node_id.hex()[:16])
        self.send(peer.node_id, dict((p.node_id, c) for p, c in verified)[peer.node_id], False)

    # --- answers ----------------------------------------------------------------------

    def _answered(self, outcome, attempt):
        router = self.router
        self.inflight.pop(attempt.node_id, None)
        router._release(attempt.node_id)
        if self.done:
            return None  # a losing hedge, or a call withdrawn: its Deferred was cancelled
        node = attempt.node_id.hex()[:16]
        if not isinstance(outcome, Failure):
            if outcome.status_kind in RETRY_BEFORE_START:
                self.why = f"replica {node} answered {outcome.status_kind.name.lower()}"
                return self._failed_before_start()
            elapsed = self.clock.seconds() - attempt.sent_at
            router.observe_latency(self.fid_raw, attempt.node_id, elapsed)
            at_host_us = outcome.queue_us + outcome.fetch_us + outcome.boot_us + outcome.exec_us
            network_us = max(0, int(elapsed * 1e6) - at_host_us)
            if self.cacheable:
                router.cache.put(self.fid_raw, self.data, outcome, attempt.node_id)
            return self.finish(Answer(outcome, attempt.node_id, network_us, route=attempt.route,
                                      attempts=self.attempts))
        if outcome.check(error.ConnectionLost, error.ConnectionDone):
            if not attempt.may_have_started:
                self.why = f"replica {node} was not reachable"
                return self._failed_before_start()
            return self._lost_mid_call(attempt, f"replica {node} was lost mid-call")
        if outcome.check(RequestTimeout):
            return self._lost_mid_call(attempt, f"replica {node} did not answer within the deadline", timeout=True)
        refusal = 0
        if outcome.check(RemoteError):
            if outcome.value.code in ERRORS_BEFORE_START:
                self.why = f"replica {node} refused: {outcome.value.text[:120]}"
                return self._failed_before_start()
            why = f"the replica refused the call: {outcome.value.text[:200]}"
            if outcome.value.code in REFUSALS_PASSED_ON:
                refusal = outcome.value.code  # INVOKE's caller gets the same ERROR
        else:
            log.failure("call to {peer}", outcome, peer=node)
            why = "the tracker failed to reach the replica"
        if self.inflight:
            return None
        return self.finish(Answer(result(ResultStatus.INTERNAL, why), attempt.node_id, route=attempt.route,
                                  attempts=self.attempts, refusal=refusal))

    def _failed_before_start(self):
        if not self.inflight:
            self.next_replica()

    def _lost_mid_call(self, attempt, why, timeout=False):
        self.why = why
        if self.inflight:
            return  # the other request may still answer
        if self.idempotent:
            self.next_replica()
            return
        if timeout:
            self.finish(Answer(result(ResultStatus.TIMEOUT, why), attempt.node_id, route=attempt.route,
                               attempts=self.attempts))
            return
        self.finish(Answer(result(ResultStatus.INTERNAL,
                                  f"{why}; the call was not retried because the function is not idempotent "
                                  "(it may have run)"),
                           attempt.node_id, route=attempt.route, attempts=self.attempts))

    def subscribe(self, budget_s, first=False):
        """
        A Deferred[Answer] for one caller: the call's answer; for a caller
        that joined a running call, RESULT timeout if its own ``budget_s``
        runs out first. Cancelling it withdraws this caller; the call stops
        when no caller is left.
        """
        d = defer.Deferred(self._unsubscribe)
        timer = None
        if not first:
            timer = self.clock.callLater(max(0.0, budget_s), self._subscriber_timed_out, d)
        self.subscribers[d] = timer
        return d

    def _subscriber_timed_out(self, d):
        self.subscribers.pop(d, None)
        d.callback(Answer(result(ResultStatus.TIMEOUT, "the deadline passed while an identical call ran"),
                          attempts=0))
        if not self.subscribers:
            self._withdraw()

    def _unsubscribe(self, d):
        timer = self.subscribers.pop(d, None)
        if timer is not None and timer.active():
            timer.cancel()
        if not self.subscribers:
            self._withdraw()

    def finish(self, answer):
        if self.done:
            return
        self._stop()
        self.deferred.callback(answer)
        subscribers, self.subscribers = self.subscribers, {}
        for d, timer in subscribers.items():
            if timer is not None and timer.active():
                timer.cancel()
            d.callback(answer if timer is None else attrs.evolve(answer, attempts=0))

    def _withdraw(self):
        """No caller wants the answer any more: stop everything (CANCEL to the replicas)."""
        if not self.done:
            self._stop()

    def _stop(self):
        self.done = True
        if self.run_key is not None and self.router._runs.get(self.run_key) is self:
            del self.router._runs[self.run_key]
        for timer in (self._hedge_timer, self._queue_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._hedge_timer = self._queue_timer = None
        if self in self.router._queue:
            self.router._queue.remove(self)
        for attempt in list(self.inflight.values()):
            attempt.deferred.cancel()  # CANCEL to its host (orb.net.adapter)
