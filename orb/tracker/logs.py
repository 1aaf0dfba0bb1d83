# -*- test-case-name: tests.test_logs -*-
"""
LOGS at a tracker (RFC 10.7): the owner asks once, every replica answers.

The tracker refuses early what no host would answer: a fid that is not
deployed (``not_found``), an ``owner_key`` that is not the owner of the
function's registry record or a signature that does not verify
(``denied``), an ``issued_at`` outside the window of its clock or a spent
nonce (``out_of_range``, ``denied``; orb.net.logauth). It then forwards
the same signed LOGS, unchanged, to each verified replica of the function
it can reach (``channel(node_id)``: a session, or None), at most
MAX_REPLICAS of them, each with FORWARD_TIMEOUT_S, and merges the
LOG_LINES that come back (``merge``): in time order, at most the request's
limit, ``more`` when any replica said more or the merge left entries out.

A replica that cannot be reached, refuses or answers something that is
not its own LOG_LINES for this request is skipped, and the number skipped
is logged (at most a few lines per function a minute). Only when every replica asked fails does the owner get an
ERROR: the replicas' common code if they agree (all ``denied``, say),
else ``busy``. A replica that answers ``denied`` may have kept no owner
key (a store from before OFFER carried one): the tracker sends it the
function's OFFER again, with ``owner_key``, at most once per
REMIND_INTERVAL_S per replica and function, so that its next answer is
right. A function with no reachable replica has no logs to give:
LOG_LINES with no entries. At most MAX_FANOUTS requests are forwarded at
once, at most MAX_FANOUTS_PER_SESSION of one session; more are refused
``busy``.
"""

from twisted.internet import defer

from orb.net.adapter import RemoteError
from orb.net.logauth import ReplayCache, check_logs
from orb.net.logs import RemoteLogLimit, escape, orb_logger
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode
from orb.protocol.federation import MAX_REPLICAS
from orb.protocol.messages import MessageType

log = orb_logger()

FORWARD_TIMEOUT_S = 5.0
MAX_FANOUTS = 32
MAX_FANOUTS_PER_SESSION = 4
SKIPPED_LINES_PER_S = 1 / 20  # "replicas skipped" log lines per function (a burst of 3)
REMIND_INTERVAL_S = 300.0
MAX_REMINDED = 1024


def merge(answers, limit):
    """One LOG_LINES' (entries, more) from the replicas' ``answers`` ((entries, more) each, entries oldest first).

    A replica that said ``more`` holds entries after its last one that the others' later entries would
    jump over, so the merge stops at the earliest such last entry; it never cuts between two entries of the
    same ``time_us`` (the next request asks for what ended after the last time_us given)."""
    cut = None
    more = False
    for entries, said_more in answers:
        if said_more:
            more = True
            if entries:
                last = entries[-1].time_us
                cut = last if cut is None else min(cut, last)
    merged = sorted((e for entries, _ in answers for e in entries if cut is None or e.time_us <= cut),
                    key=lambda e: (e.time_us, e.node_id))
    if len(merged) > limit:
        more = True
        boundary = merged[limit].time_us
        kept = [e for e in merged[:limit] if e.time_us < boundary]
        merged = kept or merged[:limit]
    return merged, more


def _session_channel(table):
    def channel(node_id):
        record = table.get(node_id)
        return record if record is not None and record.ready else None

    return channel


class LogsFanout:
    """The tracker's LOGS handler; see the module docstring."""

    def __init__(self, clock, registry, replication, table, channel=None, timeout_s=FORWARD_TIMEOUT_S,
                 replays=None):
        self.clock = clock
        self.registry = registry
        self.replication = replication  # replicas(fid text): the verified live hosts
        self.table = table
        self.channel = channel if channel is not None else _session_channel(table)
        self.timeout_s = timeout_s
        self.replays = replays if replays is not None else ReplayCache(clock)
        self.in_flight = 0
        self._per_session = {}  # node id of the asking session -> its requests being forwarded
        self._log_limit = RemoteLogLimit(clock, SKIPPED_LINES_PER_S, 3)
        self._reminded = {}  # (fid, node id) -> when its OFFER was last sent again, the oldest first

    def handlers(self):
        return {MessageType.LOGS: self.on_logs}

    def on_logs(self, record, message, request_id):
        try:
            fid = fidmod.to_text(message.fid)
        except fidmod.FidError:
            record.refuse(request_id, ErrorCode.NOT_FOUND, "LOGS of something that is not a fid")
            return
        function = self.registry.function(fid)
        if function is None:
            record.refuse(request_id, ErrorCode.NOT_FOUND, f"no function {fid[:20]}... is deployed")
            return
        refusal = check_logs(message, function.owner, self.clock.seconds())
        asker = record.node_id
        if refusal is None and (self.in_flight >= MAX_FANOUTS
                                or self._per_session.get(asker, 0) >= MAX_FANOUTS_PER_SESSION):
            record.refuse(request_id, ErrorCode.BUSY, "too many log requests at this tracker; try again shortly")
            return
        if refusal is None:
            refusal = self.replays.admit(message.owner_key, message.nonce, message.issued_at)
        if refusal is not None:
            record.refuse(request_id, refusal.code, refusal.text)
            return
        self.in_flight += 1
        self._per_session[asker] = self._per_session.get(asker, 0) + 1
        d = self.gather(function, message)

        def done():
            self.in_flight -= 1
            left = self._per_session.pop(asker) - 1
            if left:
                self._per_session[asker] = left

        def answer(outcome):
            done()
            if isinstance(outcome, m.LogLines):
                record.send(outcome, response_to=request_id)
            else:
                record.refuse(request_id, *outcome)

        def failed(failure):
            done()
            log.failure("gathering the logs of {fid}", failure, fid=fid[:16])
            record.refuse(request_id, ErrorCode.INTERNAL, "the tracker failed gathering the logs")

        d.addCallbacks(answer, failed)

    @defer.inlineCallbacks
    def gather(self, function, message):
        """The merged LogLines of ``function``'s replicas, or (code, text) when every one asked failed."""
        fid = function.fid
        limit = min(message.max_entries or m.MAX_LOG_ENTRIES, m.MAX_LOG_ENTRIES)
        hosts = [p.node_id for p in self.replication.replicas(fid)][:MAX_REPLICAS]
        asked, failures = [], []
        for node_id in hosts:
            channel = self.channel(node_id)
            if channel is None:
                failures.append((ErrorCode.BUSY, "not reachable from this tracker"))
                continue
            asked.append((node_id, channel.request(message, timeout_s=self.timeout_s)))
        results = yield defer.DeferredList([d for _, d in asked], consumeErrors=True)
        answers = []
        for (node_id, _), (ok, value) in zip(asked, results):
            problem = _check_answer(node_id, message, limit, value) if ok else _failure_code(value)
            if problem is None:
                answers.append((value.entries, bool(value.more)))
            else:
                failures.append(problem)
                if problem[0] == ErrorCode.DENIED:
                    self.remind_owner(function, node_id)
        if failures and self._log_limit.allow(fid):
            log.info("logs of {fid}: {failed} of {total} replicas skipped ({why})", fid=fid[:16],
                     failed=len(failures), total=len(hosts), why=escape(failures[0][1], 120))
        if hosts and not answers:
            codes = {code for code, _ in failures}
            if len(codes) == 1 and codes != {ErrorCode.BUSY}:
                code = codes.pop()
                return code, f"every replica refused: {failures[0][1]}"
            return ErrorCode.BUSY, f"no replica of the function answered ({len(hosts)} asked); try again shortly"
        entries, more = merge(answers, limit)
        return m.LogLines(fid=message.fid, entries=tuple(entries), more=int(more))


    def remind_owner(self, function, node_id):
        """OFFER ``function`` (with its owner_key) again to a replica that refused its owner: see the docstring."""
        now = self.clock.seconds()
        key = (function.fid, node_id)
        if self.table is None or now - self._reminded.get(key, -REMIND_INTERVAL_S) < REMIND_INTERVAL_S:
            return
        record, peer = self.table.get(node_id), self.registry.peer(node_id)
        if record is None or not record.ready or peer is None:
            return
        self._reminded.pop(key, None)
        self._reminded[key] = now
        while len(self._reminded) > MAX_REMINDED:
            self._reminded.pop(next(iter(self._reminded)))
        self.replication.offer(function, peer)


def _check_answer(node_id, message, limit, answer):
    """None if ``answer`` is replica ``node_id``'s own LOG_LINES for ``message``, else (code, why not)."""
    if not isinstance(answer, m.LogLines) or answer.fid != message.fid:
        return ErrorCode.INTERNAL, "answered something other than LOG_LINES of the function"
    if len(answer.entries) > limit:
        return ErrorCode.INTERNAL, "answered more entries than asked for"
    last = message.since_us
    for entry in answer.entries:
        if entry.node_id != node_id or entry.time_us <= last:
            return ErrorCode.INTERNAL, "answered entries of another node, out of order, or not after since_us"
        last = entry.time_us
    return None


def _failure_code(failure):
    if failure.check(RemoteError):
        try:
            code = ErrorCode(failure.value.code)
        except ValueError:
            code = ErrorCode.UNSPECIFIED
        return code, failure.value.text[:200]
    return ErrorCode.BUSY, failure.getErrorMessage()[:200]
