# -*- test-case-name: tests.test_pay_tracker -*-
"""
A host's pay (RFC 10.10): every ``ask_every_s``, and sooner once it has
served ``ask_after_calls`` calls, it sends VOUCHER_ASK with its payout
address to its home tracker (Homing's primary) and to every other tracker
it has an outbound session with (a call may be routed, and a challenge
made, by a tracker that is not its home), pages through each VOUCHERS
answer, and keeps each voucher in its VoucherBook (orb.pay.book), which an
AutoClaimer (orb.pay.claimer) claims from. A tracker that signs no vouchers
(ERROR unsupported) is not asked again.

A voucher is refused (logged, not kept) when it is for another chain or
escrow than ours, when it does not pay our address, when its signature does
not recover to the signer the VOUCHERS names, or when that signer is not
the address this tracker announced first (pinned per tracker node id, trust
on first use; the tracker record should carry it, a later change). The book
is written in a thread; asks run one at a time.
"""

from __future__ import annotations

from eth_utils import to_checksum_address
from twisted.internet import defer

from orb.net.logs import orb_logger
from orb.pay import voucher as V
from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode

log = orb_logger()

ASK_EVERY_S = 60.0
ASK_AFTER_CALLS = 1000
ASK_TIMEOUT_S = 60.0
MAX_PAGES = 64  # VOUCHERS pages followed in one round (64 x 64 vouchers)


class Payout:
    def __init__(self, clock, homing, book, address, domain, *, run_in_thread=None, ask_after_calls=ASK_AFTER_CALLS,
                 ask_every_s=ASK_EVERY_S):
        self.clock = clock
        self.homing = homing
        self.book = book
        self.address = to_checksum_address(address)
        self.domain = domain  # the escrow we claim on: vouchers for another are refused
        if run_in_thread is None:
            from twisted.internet.threads import deferToThread as run_in_thread
        self._in_thread = run_in_thread
        self.ask_after_calls = ask_after_calls
        self.ask_every_s = ask_every_s
        self.signers = {}  # tracker node id -> its signer address (pinned at its first VOUCHERS)
        self.unpaying = set()  # tracker node ids that answered ERROR(unsupported): they sign no vouchers
        self._calls = 0
        self._asking = False
        self.counts = {"asks": 0, "stored": 0, "refused": 0, "denied": 0}

    def call_finished(self, fid_raw, result, trace_id, ended_s):
        """Invocations' finished listener: ask early once enough calls were served."""
        self._calls += 1
        if self._calls >= self.ask_after_calls:
            self.ask()

    def trackers(self):
        """The tracker sessions to ask: the home tracker first, then the other outbound tracker sessions."""
        primary = self.homing.primary
        found = [primary] if primary is not None and primary.ready else []
        for record in self.homing.table.outbound(trackers=True):
            if record.ready and record not in found:
                found.append(record)
        return [r for r in found if r.node_id not in self.unpaying]

    def ask(self):
        """One round of VOUCHER_ASK to each tracker: a Deferred of how many vouchers were stored (None: not now)."""
        trackers = self.trackers()
        if self._asking or not trackers:
            return defer.succeed(None)
        self._asking = True
        self._calls = 0
        self.counts["asks"] += 1
        d = defer.gatherResults([self._page(t, b"", 0, 0) for t in trackers], consumeErrors=True)

        def done(result):
            self._asking = False
            return result

        d.addCallback(sum)
        d.addBoth(done)
        return d

    def _page(self, tracker, after, pages, stored):
        ask = m.VoucherAsk(payout=bytes.fromhex(self.address[2:]), fid=b"", after=after)
        d = tracker.request(ask, timeout_s=ASK_TIMEOUT_S)

        def answered(answer):
            vouchers = self._accept(tracker.node_id, answer)
            d2 = self._in_thread(self._store, vouchers) if vouchers else defer.succeed(0)

            def next_page(n):
                if answer.more and answer.vouchers and pages + 1 < MAX_PAGES:
                    return self._page(tracker, answer.vouchers[-1].fid32, pages + 1, stored + n)
                return stored + n

            return d2.addCallback(next_page)

        def failed(failure):
            from orb.net.adapter import RemoteError

            if failure.check(RemoteError) and failure.value.code == ErrorCode.UNSUPPORTED:
                self.unpaying.add(tracker.node_id)
                log.info("tracker {peer} signs no vouchers: not asked again", peer=tracker.name)
                return stored
            if failure.check(RemoteError):
                self.counts["denied"] += 1
                log.warn("tracker {peer} refused our VOUCHER_ASK: {why}", peer=tracker.name,
                         why=failure.value.text[:300])
                return stored
            log.info("VOUCHER_ASK to {peer} failed: {why}", peer=tracker.name, why=failure.getErrorMessage()[:200])
            return stored

        d.addCallbacks(answered, failed)
        return d

    def _accept(self, tracker_id, answer):
        """The answer's vouchers that may be kept (signatures are checked in the thread, by the book)."""
        try:
            signer = to_checksum_address(answer.signer)
            domain = V.Domain(chain_id=answer.chain_id, contract=to_checksum_address(answer.contract))
        except (ValueError, V.VoucherError):
            self.counts["refused"] += len(answer.vouchers)
            return []
        if domain != self.domain:
            log.warn("tracker {peer} signs for chain {chain} escrow {escrow}, not ours: its vouchers are ignored",
                     peer=tracker_id.hex()[:16], chain=answer.chain_id, escrow=domain.contract)
            self.counts["refused"] += len(answer.vouchers)
            return []
        pinned = self.signers.setdefault(tracker_id, signer)
        if pinned != signer:
            log.warn("tracker {peer} signed as {signer}, not {pinned} as before: its vouchers are ignored",
                     peer=tracker_id.hex()[:16], signer=signer, pinned=pinned)
            self.counts["refused"] += len(answer.vouchers)
            return []
        out = []
        for e in answer.vouchers:
            try:
                voucher = V.Voucher(fid=e.fid32, host=self.address, signer=signer, requests=e.requests,
                                    bytes=e.bytes, epochs=e.epochs, expiry=e.expiry)
                out.append(V.SignedVoucher(domain=domain, voucher=voucher, signature=e.signature))
            except V.VoucherError:
                self.counts["refused"] += 1
        return out

    def _store(self, vouchers):
        """In a thread: each voucher into the book (which verifies it); how many were stored."""
        stored = 0
        for s in vouchers:
            try:
                if self.book.add(s, host=self.address):
                    stored += 1
            except V.VoucherError as e:  # a bad signature, a stale counter, a full book
                self.counts["refused"] += 1
                log.warn("voucher for {fid} from {signer} refused: {why}", fid=s.voucher.fid.hex()[:16],
                         signer=s.voucher.signer, why=str(e)[:200])
        self.counts["stored"] += stored
        return stored
