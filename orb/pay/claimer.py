# -*- test-case-name: tests.test_pay_claimer -*-
"""
A host's automatic claims: every ``interval_s`` look at the voucher book
and, when what is owed is worth a transaction, submit the latest vouchers
in one ``claimBatch``.

A batch is sent when any of these holds:
- what the vouchers would pay, at the fid's current prices and net of
  what the escrow already paid for each (fid, host, signer), reaches
  ``min_claim_wei``;
- a voucher has been owed for ``max_age_s`` (a host that serves little is
  still paid, eventually);
- a voucher expires within ``expiry_margin_s``.

Vouchers of unfunded fids are left out (the escrow would skip them). Every
chain call runs in a thread (``run_in_thread``, ``deferToThread`` by
default); the reactor only schedules. One check runs at a time; a failed
check is logged and the loop goes on.

Phase 2 wires one ``AutoClaimer`` into the peer, with the peer's wallet
and voucher book (see the report of issue 14 phase 1).
"""

from __future__ import annotations

import attrs
from twisted.internet import defer, task
from twisted.logger import Logger

MIB = 2**20

log = Logger()


@attrs.frozen
class ClaimPolicy:
    min_claim_wei: int = 10**15  # 0.001 ether: worth a ~100k-gas transaction at a few gwei
    max_age_s: float = 6 * 3600.0
    expiry_margin_s: float = 1800.0
    interval_s: float = 60.0
    batch_max: int = 50


@attrs.frozen
class ClaimResult:
    tx: str
    gas_used: int
    paid_wei: int
    claimed: int
    skipped: tuple  # indexes in the batch the escrow skipped
    reason: str  # "value", "age" or "expiry"


def owed_wei(voucher, paid, funds):
    """What ``voucher`` would pay now: counters beyond ``paid`` times ``funds``' prices (before the balance cap)."""
    return (max(0, voucher.requests - paid.requests) * funds.price_per_request_wei
            + max(0, voucher.bytes - paid.bytes) * funds.price_per_mib_wei // MIB
            + max(0, voucher.epochs - paid.epochs) * funds.price_per_epoch_wei)


class AutoClaimer:
    """Claims ``book``'s vouchers for ``domain`` on ``escrow`` (an orb.pay.contract.Escrow), paying gas from ``account``."""

    def __init__(self, book, escrow, account, domain, clock, policy=ClaimPolicy(), run_in_thread=None):
        self.book = book
        self.escrow = escrow
        self.account = account
        self.domain = domain
        self.clock = clock
        self.policy = policy
        if run_in_thread is None:
            from twisted.internet.threads import deferToThread as run_in_thread
        self._run_in_thread = run_in_thread
        self._busy = False
        self._loop = None
        self.last_result = None

    def start(self):
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._loop.start(self.policy.interval_s, now=False)

    def stop(self):
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def _tick(self):
        d = self.check()
        d.addErrback(lambda f: log.failure("automatic claim failed; trying again in {interval_s} s", f,
                                           interval_s=self.policy.interval_s))
        return None  # the loop never waits on, nor stops for, a claim

    def check(self):
        """One look at the book: a Deferred of the ClaimResult, or None when nothing was due (or a check runs)."""
        if self._busy:
            return defer.succeed(None)
        self._busy = True
        d = self._run_in_thread(self._check_blocking, self.clock.seconds())

        def done(result):
            if result is not None:
                self.last_result = result
                log.info("claimed {claimed} voucher(s) ({reason}): {paid_wei} wei paid, gas {gas_used}, tx {tx}",
                         claimed=result.claimed, reason=result.reason, paid_wei=result.paid_wei,
                         gas_used=result.gas_used, tx=result.tx)
            return result

        d.addBoth(lambda r: (setattr(self, "_busy", False), r)[1])
        d.addCallback(done)
        return d

    def _check_blocking(self, now):
        """In a thread: decide, and claim if due."""
        policy = self.policy
        entries = self.book.claimable(domain=self.domain, limit=policy.batch_max, now=now)
        if not entries:
            return None
        funds_of = {}
        due, settled, total, reason = [], [], 0, None
        for e in entries:
            v = e.signed.voucher
            if v.fid not in funds_of:
                funds_of[v.fid] = self.escrow.funds(v.fid)
            funds = funds_of[v.fid]
            if not funds.funded:
                continue
            paid = self.escrow.paid(v.fid, v.host, v.signer)
            if all(p >= c for p, c in zip((paid.requests, paid.bytes, paid.epochs), v.counters())):
                settled.append(e.signed)  # paid already (someone else submitted it): stop looking at it
                continue
            owed = owed_wei(v, paid, funds)
            if owed == 0:
                continue
            due.append(e)
            total += owed
            since = e.pending_since if e.pending_since is not None else e.received_at
            if reason is None and v.expiry - now <= policy.expiry_margin_s:
                reason = "expiry"
            if reason is None and now - since >= policy.max_age_s:
                reason = "age"
        if settled:
            self.book.mark_claimed(settled, None)
        if not due:
            return None
        if total >= policy.min_claim_wei:
            reason = reason or "value"
        if reason is None:
            return None
        receipt = self.escrow.claim_batch(self.account, [e.signed.voucher for e in due],
                                          [e.signed.signature for e in due])
        events = self.escrow.events(receipt)
        paid = sum(ev["amount"] for name, ev in events if name == "Claimed")
        skipped = tuple(int(ev["index"]) for name, ev in events if name == "ClaimSkipped")
        tx = "0x" + bytes(receipt["transactionHash"]).hex()
        self.book.mark_claimed([e.signed for i, e in enumerate(due) if i not in skipped], tx)
        return ClaimResult(tx=tx, gas_used=receipt["gasUsed"], paid_wei=paid, claimed=len(due) - len(skipped),
                           skipped=skipped, reason=reason)
