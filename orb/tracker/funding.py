# -*- test-case-name: tests.test_funding -*-
"""
Funding checks (RFC 10.10.2): a function whose manifest says
``payment.required`` is answered RESULT ``payment_required`` (the gateway's
HTTP 402) once its escrow deposit cannot pay for one more call.

What "cannot pay" means, read by this tracker alone:

- the fid is not funded (no owner on the escrow), or
- the owner does not accept this tracker's voucher signer (its calls
  would never be paid: the caller should go through a tracker it pays), or
- its owner asked for a withdrawal and the delay has passed (the deposit may
  leave at any moment), or
- the balance, less what this tracker has counted for the fid's hosts and
  not yet seen claimed (``Payments.owed_wei``: its tally's counters less the
  ``paid`` counters the escrow holds for this signer), is below the price of
  a request (at least 1 wei).

The escrow is read in a thread, never on the reactor: ``funds(fid)``,
``isSigner(fid, signer)`` and ``paid(fid, host, signer)`` for the hosts
counted (at most MAX_HOSTS_READ), all at one block.
A read is kept TTL_S seconds; a call arriving after that is judged on the
old read while a new one runs. The first call of a fid waits for the first
read. The tally's counters are current at every call, so calls counted
since the read are owed at once: a deposit for N requests lets about N calls
through this tracker, not N plus whatever runs until the next read.

A read that fails (the chain is unreachable) lets calls through for TTL_S:
the owner asked to be stopped when its money runs out, not when this
tracker cannot see the chain. Other trackers' counts are not seen here; the
escrow caps every claim at the balance (``Underpaid``), so hosts served
through several trackers may find a deposit spent before this tracker does.

Bounds: MAX_ENTRIES reads kept (least recently used dropped), MAX_READS
reads at once, MAX_WAITING calls waiting for a first read (past it a call
is let through and counted ``unread``).
"""

from __future__ import annotations

import collections

import attrs
from twisted.internet import defer

from orb.net.logs import orb_logger
from orb.pay import voucher as V
from orb.protocol import fid as fidmod

log = orb_logger()

TTL_S = 10.0
MAX_ENTRIES = 10_000
MAX_READS = 4
MAX_WAITING = 10_000
MAX_HOSTS_READ = 64


@attrs.define
class _Read:
    info: object  # orb.pay.contract.FundInfo, or None when the read failed
    paid: dict  # payout address -> orb.pay.contract.Paid for this tracker's signer
    at: float
    accepted: bool = True  # the owner accepts this tracker's signer


def escrow_reader(escrow, signer):
    """A blocking ``read(fid32, hosts) -> (FundInfo, {host: Paid}, accepted)`` over an orb.pay.contract.Escrow."""

    def read(fid32, hosts):
        block = escrow.w3.eth.block_number  # one block for every read: a claim cannot land between them
        return (escrow.funds(fid32, block), {h: escrow.paid(fid32, h, signer, block) for h in hosts[:MAX_HOSTS_READ]},
                escrow.is_signer(fid32, signer, block))

    return read


class Funding:
    """``admit(fid_raw)``: the router's payment gate (None, a refusal text, or a Deferred of either)."""

    def __init__(self, clock, payments, read, *, run_in_thread=None, ttl_s=TTL_S, max_entries=MAX_ENTRIES,
                 max_reads=MAX_READS, max_waiting=MAX_WAITING):
        self.clock = clock
        self.payments = payments
        self._read = read
        if run_in_thread is None:
            from twisted.internet.threads import deferToThread as run_in_thread
        self._in_thread = run_in_thread
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.max_reads = max_reads
        self.max_waiting = max_waiting
        self._reads = collections.OrderedDict()  # fid32 -> _Read, least recently used first
        self._reading = set()  # fid32 with a read under way
        self._queued = collections.OrderedDict()  # fid32 waiting for a free read slot
        self._waiters = {}  # fid32 -> [Deferred] of calls waiting for its first read
        self._waiting = 0
        self.counts = collections.Counter()

    def admit(self, fid_raw):
        try:
            fid32 = V.fid_bytes32(fid_raw)
        except (fidmod.FidError, V.VoucherError):
            return "this fid has no on-chain form, so no escrow can pay for it"
        read = self._reads.get(fid32)
        if read is not None:
            self._reads.move_to_end(fid32)
            if self.clock.seconds() - read.at >= self.ttl_s:
                self._want(fid32)
            return self._verdict(fid32, read)
        if self._waiting >= self.max_waiting:
            self.counts["unread"] += 1
            return None
        self._want(fid32)
        waiters = self._waiters.setdefault(fid32, [])

        def cancel(d):
            if d in waiters:
                waiters.remove(d)
                self._waiting -= 1

        d = defer.Deferred(canceller=cancel)
        waiters.append(d)
        self._waiting += 1
        return d

    def _verdict(self, fid32, read):
        info = read.info
        if info is None:
            self.counts["unknown"] += 1
            return None
        if not info.funded:
            return "payment_required: the function's owner has no deposit in the escrow for it (orb fund)"
        if not read.accepted:
            return ("payment_required: the function's owner does not accept this tracker's vouchers "
                    f"({self.payments.signer}), so no call through it is paid: call through a tracker it accepts, "
                    "or the owner adds this one (orb fund --signer)")
        if info.withdrawable_at and self.clock.seconds() >= info.withdrawable_at:
            return ("payment_required: the function's owner is withdrawing its deposit; no more calls are paid "
                    "(orb fund tops it up again)")
        left = info.balance_wei - self.payments.owed_wei(fid32, info, read.paid)
        if left < max(1, info.price_per_request_wei):
            return (f"payment_required: the function's deposit is spent ({max(0, left)} wei left of "
                    f"{info.balance_wei}, {info.price_per_request_wei} wei a request); its owner must top it up "
                    "(orb fund)")
        return None

    # --- reads (one thread job per fid, MAX_READS at once) -------------------------------------

    def _want(self, fid32):
        if fid32 in self._reading or fid32 in self._queued:
            return
        if len(self._reading) >= self.max_reads:
            if len(self._queued) >= self.max_entries:
                dropped, _ = self._queued.popitem(last=False)
                self.counts["unread"] += self._release(dropped, None)  # its waiting calls go on, unjudged
            self._queued[fid32] = None
            return
        self._start(fid32)

    def _start(self, fid32):
        self._reading.add(fid32)
        hosts = self.payments.hosts_of(fid32)
        self.counts["reads"] += 1
        d = defer.maybeDeferred(self._in_thread, self._read, fid32, hosts)
        d.addCallbacks(lambda got: self._done(fid32, _Read(got[0], got[1], self.clock.seconds(), got[2])),
                       lambda failure: self._failed(fid32, failure))

    def _failed(self, fid32, failure):
        self.counts["read_failures"] += 1
        log.warn("reading the escrow for {fid} failed: {error}", fid=fid32.hex()[:16],
                 error=failure.getErrorMessage()[:200])
        self._done(fid32, _Read(None, {}, self.clock.seconds()))

    def _done(self, fid32, read):
        self._reading.discard(fid32)
        self._reads[fid32] = read
        self._reads.move_to_end(fid32)
        while len(self._reads) > self.max_entries:
            self._reads.popitem(last=False)
        if self._waiters.get(fid32):
            self._release(fid32, self._verdict(fid32, read))
        while self._queued and len(self._reading) < self.max_reads:
            self._start(self._queued.popitem(last=False)[0])

    def _release(self, fid32, verdict):
        """Answer every call waiting for ``fid32``'s first read with ``verdict``: how many there were."""
        waiters = self._waiters.pop(fid32, [])
        self._waiting -= len(waiters)
        for d in waiters:
            d.callback(verdict)
        return len(waiters)

    def status(self):
        return {"funding_reads_kept": len(self._reads), **{f"funding_{k}": v for k, v in self.counts.items()}}
