# -*- test-case-name: tests.test_logs -*-
"""
The host's log of recent calls, and LOGS (RFC 10.7).

``CallLog`` keeps, in memory, the last MAX_ENTRIES_PER_FID finished calls
of each function this host ran: when each ended, its status, exec time,
trace id and the tail of its stderr (at most MAX_LOG_ENTRY_BYTES, the
end kept). It is fed by ``Invocations.finished_listeners`` (``record``).
Bounds: MAX_FIDS functions (the one written to longest ago is forgotten
first), MAX_TOTAL_BYTES over all entries (the oldest entry of the function
written to longest ago goes first). Entry times are strictly increasing
per function, so ``since_us`` (exclusive) never splits two calls. A
package that leaves the store takes its log with it. A restart forgets
every log.

LOGS is answered only for a function this host holds, and only to its
owner: ``owner_key`` is the key the OFFER named for it (kept with the
package), the signature verifies, ``issued_at`` is within the window of
this host's clock and the nonce is new (orb.net.logauth). Then LOG_LINES
carries the entries that ended after ``since_us``, oldest first, at most
``max_entries`` (0 or more than MAX_LOG_ENTRIES: MAX_LOG_ENTRIES), with
``more`` = 1 when some were left out. Every refusal is an ERROR with its
code: ``not_found`` (not held here), ``denied`` (not the owner key, a bad
signature, a spent nonce), ``out_of_range`` (issued_at too far from this
host's clock).
"""

import collections

from orb.net.logauth import ReplayCache, check_logs
from orb.net.logs import orb_logger
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode
from orb.protocol.messages import MessageType, trace_id_of  # noqa: F401  (re-exported)

log = orb_logger()

MAX_ENTRIES_PER_FID = 200
MAX_FIDS = 1024
MAX_TOTAL_BYTES = 16 * 1024 * 1024
ENTRY_OVERHEAD_BYTES = 96  # what an entry costs besides its log and trace id


def _cost(entry):
    return ENTRY_OVERHEAD_BYTES + len(entry.log) + len(entry.trace_id)


class CallLog:
    """Recent calls per fid, and the LOGS handler; see the module docstring."""

    def __init__(self, clock, node_id, packages, *, max_entries_per_fid=MAX_ENTRIES_PER_FID, max_fids=MAX_FIDS,
                 max_total_bytes=MAX_TOTAL_BYTES, replays=None):
        self.clock = clock
        self.node_id = node_id
        self.packages = packages  # held(fid) is packages.get(fid); owner(fid) its owner key
        self.max_entries_per_fid = max_entries_per_fid
        self.max_fids = max_fids
        self.max_total_bytes = max_total_bytes
        self.replays = replays if replays is not None else ReplayCache(clock)
        self._logs = collections.OrderedDict()  # fid -> deque of LogEntry, the least recently written first
        self.total_bytes = 0

    def handlers(self):
        return {MessageType.LOGS: self.on_logs}

    # --- keeping -------------------------------------------------------------------------

    def record(self, fid_raw, result, trace_id, ended_s):
        """A call of ``fid_raw`` ended with ``result`` (an m.Result) at ``ended_s``: keep it (the listener)."""
        entries = self._logs.pop(fid_raw, None)
        if entries is None:
            entries = collections.deque()
        self._logs[fid_raw] = entries  # now the most recently written
        time_us = max(0, int(ended_s * 1_000_000))
        if entries and time_us <= entries[-1].time_us:
            time_us = entries[-1].time_us + 1  # strictly increasing: since_us never splits two calls
        trace = trace_id if isinstance(trace_id, bytes) and len(trace_id) <= 16 else b""
        entry = m.LogEntry(self.node_id, time_us, result.status & 0xFF, min(result.exec_us, 2**32 - 1), trace,
                           result.log[-m.MAX_LOG_ENTRY_BYTES:])
        entries.append(entry)
        self.total_bytes += _cost(entry)
        if len(entries) > self.max_entries_per_fid:
            self.total_bytes -= _cost(entries.popleft())
        while len(self._logs) > self.max_fids:
            self.forget(next(iter(self._logs)))
        while self.total_bytes > self.max_total_bytes and self._logs:
            oldest_fid = next(iter(self._logs))
            oldest = self._logs[oldest_fid]
            self.total_bytes -= _cost(oldest.popleft())
            if not oldest:
                del self._logs[oldest_fid]

    def forget(self, fid_raw, reason=None):
        """Drop the log of ``fid_raw`` (its package left the store: a removed_listener)."""
        entries = self._logs.pop(fid_raw, None)
        if entries:
            self.total_bytes -= sum(_cost(e) for e in entries)

    def entries_after(self, fid_raw, since_us, limit):
        """(the entries of ``fid_raw`` that ended after ``since_us``, oldest first, at most ``limit``; more)."""
        found = [e for e in self._logs.get(fid_raw, ()) if e.time_us > since_us]
        return found[:limit], len(found) > limit

    def __len__(self):
        return sum(len(v) for v in self._logs.values())

    # --- LOGS ----------------------------------------------------------------------------

    def on_logs(self, record, message, request_id):
        fid = message.fid
        try:
            fidmod.check(fid)
        except fidmod.FidError:
            record.refuse(request_id, ErrorCode.NOT_FOUND, "LOGS of something that is not a fid")
            return
        if self.packages.get(fid) is None:
            record.refuse(request_id, ErrorCode.NOT_FOUND, "this host does not hold the function")
            return
        refusal = check_logs(message, self.packages.owner(fid), self.clock.seconds())
        if refusal is None:
            refusal = self.replays.admit(message.owner_key, message.nonce, message.issued_at)
        if refusal is not None:
            log.debug("LOGS of {fid} from {peer} refused: {why}", fid=fidmod.to_text(fid)[:16], peer=record.name,
                      why=refusal.text)
            record.refuse(request_id, refusal.code, refusal.text)
            return
        limit = min(message.max_entries or m.MAX_LOG_ENTRIES, m.MAX_LOG_ENTRIES)
        entries, more = self.entries_after(fid, message.since_us, limit)
        record.send(m.LogLines(fid=fid, entries=tuple(entries), more=int(more)), response_to=request_id)
