# -*- test-case-name: tests.test_pay_tracker -*-
"""
The tracker's payment signer (RFC 10.10): it counts the calls it routed
per (fid, host), the uptime epochs of the hosts that passed their
integrity challenges, and signs cumulative EIP-712 vouchers over those
counters when a host asks (VOUCHER_ASK -> VOUCHERS).

What counts (``call_ran``, a Router run listener): a run that ended with
RESULT ``ok`` on a replica; never a cached answer or one shared with an
identical running call (the router tells no run for those), never a failed,
timed-out, refused, busy or not_found call, never a call whose caller is
the host itself (its key hashes to the replica's node id), nor one whose
caller the owner did not authorize (the router's ``authorized``: the
owner's own key, a capability token of the owner, or a manifest whose
``payment.callers`` is "any"), so that a host calling its own function
through a fresh key earns nothing, nor one this tracker ran itself, nor
one run on a host while it is *suspended* (it answered a canary call
wrong, orb.tracker.canary: ``suspended``), whose epochs do not count
either. ``bytes`` grows by the input and output sizes.

Payout addresses. The first VOUCHER_ASK from a node id binds its payout
address here, for good (SQLite, surviving restarts); a different address
later is ERROR(denied), so the same calls are never paid to two addresses.
Until a host binds, what it earns is kept in memory (bounded) and moved to
the tally at its first ask.

The tally (orb.pay.tally) counts in memory on the reactor thread; its
flushes and every signature run in a thread (``run_in_thread``), one job
per host at a time.
"""

from __future__ import annotations

import os
import sqlite3
import threading

from eth_utils import to_checksum_address
from twisted.internet import defer

from orb.net.logs import orb_logger
from orb.pay import voucher as V
from orb.pay.book import _open_private
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode, ResultStatus
from orb.protocol.messages import MessageType
from orb.protocol.session import node_id_for

log = orb_logger()

VOUCHER_EXPIRY_S = 7 * 86400
DEFAULT_EPOCH_S = 3600.0
FLUSH_INTERVAL_S = 30.0
MAX_UNBOUND = 100_000  # (host, fid) counters kept for hosts that have not bound a payout address
MAX_BINDINGS = 1_000_000
MAX_SIGNING_JOBS = 2  # VOUCHER_ASKs being signed at once, over all hosts
MAX_SUSPENDED = 10_000  # hosts suspended at once (a wrong canary answer)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS payout (
    node_id BLOB PRIMARY KEY,
    address TEXT NOT NULL,
    bound_at REAL NOT NULL
);
"""


class Bindings:
    """node id -> payout address, in SQLite. Read once at start; ``bind`` blocks (call it in a thread)."""

    def __init__(self, path):
        if path != ":memory:":
            _open_private(path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(_SCHEMA)

    def load(self):
        with self._lock:
            return {bytes(n): a for n, a in self._conn.execute("SELECT node_id, address FROM payout")}

    def bind(self, node_id, address, now):
        with self._lock:
            self._conn.execute("INSERT OR IGNORE INTO payout (node_id, address, bound_at) VALUES (?,?,?)",
                               (node_id, address, now))

    def close(self):
        with self._lock:
            self._conn.close()


def open_payments(data_dir, key, domain, clock, **kw):
    """The Payments of a tracker whose data dir is ``data_dir`` (tally.sqlite, payouts.sqlite there)."""
    from orb.pay.tally import Tally

    tally = Tally(os.path.join(data_dir, "tally.sqlite"), key, domain, clock=clock, expiry_s=VOUCHER_EXPIRY_S)
    return Payments(clock, tally, Bindings(os.path.join(data_dir, "payouts.sqlite")), **kw)


class Payments:
    """Counting, payout bindings, and VOUCHER_ASK. ``local_id`` is the tracker's own node id."""

    def __init__(self, clock, tally, bindings, *, local_id=b"", epoch_s=DEFAULT_EPOCH_S, verified_since=None,
                 run_in_thread=None, max_unbound=MAX_UNBOUND):
        self.clock = clock
        self.tally = tally
        self.signer = tally.signer
        self.domain = tally.domain
        self.bindings = bindings
        self.escrow = None  # orb.pay.contract.Escrow, when the service layer opened the chain (funding checks)
        self.require_funding = False  # --require-funding: every function is gated, not only payment.required ones
        self.local_id = local_id
        self.epoch_s = epoch_s
        self.verified_since = verified_since  # t -> [(fid text, node id)] that passed a challenge at or after t
        if run_in_thread is None:
            from twisted.internet.threads import deferToThread as run_in_thread
        self._in_thread = run_in_thread
        self.max_unbound = max_unbound
        self._payout = bindings.load()  # node id -> checksummed address
        self._fids_of = {}  # address -> set of fid32 it has counters for
        self._hosts_of = {}  # fid32 -> set of payout addresses it has counters for
        for fid32, host in tally.keys():
            self._fids_of.setdefault(host, set()).add(fid32)
            self._hosts_of.setdefault(fid32, set()).add(host)
        self._unbound = {}  # node id -> {fid32: [requests, bytes, epochs]}
        self._unbound_by_fid = {}  # fid32 -> [requests, bytes, epochs] of every unbound host together
        self._unbound_count = 0
        self._last_signed = {}  # (fid32, address) -> counters of the last voucher signed
        self._signing = set()  # node ids with a VOUCHER_ASK being signed
        self._epoch_start = clock.seconds()
        self._suspended = {}  # node id -> until when none of its calls or epochs count
        self.counts = {"calls_counted": 0, "calls_ignored": 0, "self_calls": 0, "calls_unauthorized": 0,
                       "epochs_counted": 0,
                       "vouchers_signed": 0, "asks_refused": 0, "unbound_dropped": 0, "calls_suspended": 0,
                       "epochs_suspended": 0}

    def handlers(self):
        return {MessageType.VOUCHER_ASK: self.on_voucher_ask}

    # --- counting (reactor thread) ----------------------------------------------------------

    def call_ran(self, fid_raw, answer, caller_key, input_bytes, authorized=True):
        """A routed call's run ended (Router.run_listeners): count it if it earns (module docstring)."""
        replica = answer.replica
        if (answer.cached or replica is None or replica == self.local_id or answer.attempts < 1
                or answer.refusal or answer.result.status_kind is not ResultStatus.OK):
            self.counts["calls_ignored"] += 1
            return
        if caller_key is not None and node_id_for(caller_key) == replica:
            self.counts["self_calls"] += 1
            return
        if not authorized:
            self.counts["calls_unauthorized"] += 1
            return
        if self._suspended.get(replica, 0) > self.clock.seconds():
            self.counts["calls_suspended"] += 1
            return
        try:
            fid32 = V.fid_bytes32(fid_raw)
        except (fidmod.FidError, V.VoucherError):
            return
        self._add(fid32, replica, 1, input_bytes + len(answer.result.output), 0)
        self.counts["calls_counted"] += 1

    def epoch_tick(self):
        """Every ``epoch_s``: an epoch for each (fid, host) that passed a challenge since the last tick."""
        start, self._epoch_start = self._epoch_start, self.clock.seconds()
        if self.verified_since is None:
            return
        for node_id in [n for n, until in self._suspended.items() if until <= start]:
            del self._suspended[node_id]  # over before this epoch began
        for fid, node_id in self.verified_since(start):
            if node_id == self.local_id:
                continue
            if node_id in self._suspended:  # suspended during some of this epoch: it earns none of it
                self.counts["epochs_suspended"] += 1
                continue
            try:
                fid32 = V.fid_bytes32(fidmod.from_text(fid))
            except (fidmod.FidError, V.VoucherError):
                continue
            self._add(fid32, node_id, 0, 0, 1)
            self.counts["epochs_counted"] += 1

    def suspended(self, node_id, until):
        """Count none of ``node_id``'s calls until ``until``, nor any epoch that overlaps that time."""
        if node_id not in self._suspended and len(self._suspended) >= MAX_SUSPENDED:
            self._suspended.pop(min(self._suspended, key=self._suspended.get))
        self._suspended[node_id] = max(until, self._suspended.get(node_id, 0))

    def _add(self, fid32, node_id, requests, nbytes, epochs):
        address = self._payout.get(node_id)
        if address is not None:
            self.tally.add(fid32, address, requests, nbytes, epochs)
            self._fids_of.setdefault(address, set()).add(fid32)
            self._hosts_of.setdefault(fid32, set()).add(address)
            return
        row = self._unbound.setdefault(node_id, {}).get(fid32)
        if row is None:
            if self._unbound_count >= self.max_unbound:
                self.counts["unbound_dropped"] += 1
                return
            row = self._unbound[node_id][fid32] = [0, 0, 0]
            self._unbound_count += 1
        row[0] += requests
        row[1] += nbytes
        row[2] += epochs
        total = self._unbound_by_fid.setdefault(fid32, [0, 0, 0])
        total[0] += requests
        total[1] += nbytes
        total[2] += epochs

    def hosts_of(self, fid32):
        """The payout addresses counted for ``fid32`` (a copy)."""
        return sorted(self._hosts_of.get(fid32, ()))

    def owed_wei(self, fid32, info, paid):
        """
        What this tracker has counted for ``fid32`` and not seen paid: the
        counters of every host (bound or not) less ``paid`` (payout address ->
        orb.pay.contract.Paid, this signer's as last read), at ``info``'s prices.
        """
        owed = 0
        rows = [(self.tally.counters(fid32, host), paid.get(host)) for host in self._hosts_of.get(fid32, ())]
        rows.append((tuple(self._unbound_by_fid.get(fid32, (0, 0, 0))), None))
        for (r, b, e), done in rows:
            if done is not None:
                r, b, e = max(0, r - done.requests), max(0, b - done.bytes), max(0, e - done.epochs)
            owed += r * info.price_per_request_wei + e * info.price_per_epoch_wei + b * info.price_per_mib_wei // 2**20
        return owed

    def payout_of(self, node_id):
        return self._payout.get(node_id)

    def flush(self):
        """Write the counters to SQLite, in a thread (periodically; signing flushes too)."""
        return self._in_thread(self.tally.flush)

    # --- VOUCHER_ASK ---------------------------------------------------------------------------

    def on_voucher_ask(self, record, message, request_id):
        node_id = record.node_id
        if message.payout == bytes(20):
            record.refuse(request_id, ErrorCode.INVALID, "the zero address cannot be paid")
            return
        payout = to_checksum_address(message.payout)
        bound = self._payout.get(node_id)
        if bound is not None and bound != payout:
            self.counts["asks_refused"] += 1
            record.refuse(request_id, ErrorCode.DENIED,
                          f"this node's payout address at this tracker is {bound}: the first VOUCHER_ASK bound it "
                          "for good, so that the same calls are never paid twice")
            return
        fid32 = None
        if message.fid:
            try:
                fid32 = V.fid_bytes32(message.fid)
            except (fidmod.FidError, V.VoucherError) as e:
                record.refuse(request_id, ErrorCode.INVALID, f"not a fundable fid: {e}"[:200])
                return
        if node_id in self._signing or len(self._signing) >= MAX_SIGNING_JOBS:
            record.refuse(request_id, ErrorCode.BUSY, "vouchers are being signed; ask again shortly")
            return
        bound_now = defer.succeed(None)
        if bound is None:
            if len(self._payout) >= MAX_BINDINGS:
                record.refuse(request_id, ErrorCode.BUSY, "this tracker binds no more payout addresses")
                return
            bound_now = self._bind(node_id, payout)  # durable before any voucher for it leaves
        self._signing.add(node_id)
        fids = [fid32] if fid32 is not None else sorted(self._fids_of.get(payout, ()))  # copied on this thread
        d = bound_now.addCallback(lambda _: self._in_thread(self._sign_blocking, payout, fids, fid32 is not None,
                                                            message.after or None))

        def answer(result):
            entries, more = result
            record.send(m.Vouchers(chain_id=self.domain.chain_id, contract=bytes.fromhex(self.domain.contract[2:]),
                                   signer=bytes.fromhex(self.signer[2:]), vouchers=tuple(entries), more=int(more)),
                        response_to=request_id)

        def failed(failure):
            log.failure("signing vouchers for {peer}", failure, peer=node_id.hex()[:16])
            record.refuse(request_id, ErrorCode.INTERNAL, "the tracker failed to sign vouchers")

        d.addCallbacks(answer, failed)
        d.addBoth(lambda _: self._signing.discard(node_id))
        return d

    def _bind(self, node_id, payout):
        self._payout[node_id] = payout
        log.info("{peer} is paid at {address}", peer=node_id.hex()[:16], address=payout)
        pending = self._unbound.pop(node_id, {})
        self._unbound_count -= len(pending)
        for fid32, (r, b, e) in pending.items():
            self.tally.add(fid32, payout, r, b, e)
            self._fids_of.setdefault(payout, set()).add(fid32)
            self._hosts_of.setdefault(fid32, set()).add(payout)
            total = self._unbound_by_fid.get(fid32)
            if total is not None:
                total[0], total[1], total[2] = total[0] - r, total[1] - b, total[2] - e
                if total == [0, 0, 0]:
                    del self._unbound_by_fid[fid32]
        d = defer.maybeDeferred(self._in_thread, self.bindings.bind, node_id, payout, self.clock.seconds())

        def unbound(failure):
            self._payout.pop(node_id, None)  # not durable: no voucher goes out, the next ask binds again
            return failure

        return d.addErrback(unbound)

    def _sign_blocking(self, payout, fids, one, after):
        """In a thread: (VoucherEntry list, more). One fid: its voucher, even unchanged. All: those changed
        since last signed, by fid32, after ``after``, at most MAX_VOUCHERS."""
        if one:
            wanted, more = fids, False
        else:
            wanted = []
            more = False
            for f in fids:
                if after is not None and f <= after:
                    continue
                if self._last_signed.get((f, payout)) == self.tally.counters(f, payout):
                    continue
                if len(wanted) == m.MAX_VOUCHERS:
                    more = True
                    break
                wanted.append(f)
        entries = []
        for f in wanted:
            signed = self.tally.sign(f, payout)
            if signed is None:
                continue
            v = signed.voucher
            self._last_signed[(f, payout)] = v.counters()
            self.counts["vouchers_signed"] += 1
            entries.append(m.VoucherEntry(v.fid, v.requests, v.bytes, v.epochs, v.expiry, signed.signature))
        return entries, more

    def close(self):
        self.tally.close()
        self.bindings.close()

    def status(self):
        return {"eth_signer": self.signer, "chain_id": self.domain.chain_id, "escrow": self.domain.contract,
                "require_funding": self.require_funding,
                "payouts": len(self._payout), **self.counts}
