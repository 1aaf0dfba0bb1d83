"""
Phase 2 of payments (RFC 10.10): which routed calls a tracker counts, the
payout address a host binds with its first VOUCHER_ASK, VOUCHER_ASK ->
VOUCHERS and its paging, the RFC's vector on the wire, and a host that asks
its home tracker over the in-memory network and keeps what it is given.
"""

import os

import attrs
from eth_utils import to_checksum_address
from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from orb.pay import voucher as V
from orb.pay.book import VoucherBook
from orb.pay.tally import Tally
from orb.peer.payments import Payout
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol import spec
from orb.protocol.codes import ErrorCode, ResultStatus
from orb.protocol.session import node_id_for
from orb.protocol.token import TokenError
from orb.tracker import payments as P
from orb.tracker.router import Answer, Router
from tests import test_router as R
from tests._memnet import PORT, MemoryNet

SIGNER_KEY = bytes.fromhex("11" * 32)
HOST_KEY = bytes.fromhex("22" * 32)
OTHER_KEY = bytes.fromhex("33" * 32)
DOMAIN = V.Domain(chain_id=31337, contract="0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC")
HOST = V.address_of(HOST_KEY)
OTHER = V.address_of(OTHER_KEY)
FID_RAW = fidmod.fid_for(b"orb test vector")
FID32 = FID_RAW[1:]
HOST_ID = b"\x07" * 32  # the replica's node id
TRACKER_ID = b"\x09" * 32


def inline(fn, *args, **kw):
    """run_in_thread for tests: run now, a fired Deferred."""
    return defer.maybeDeferred(fn, *args, **kw)


def result(kind=ResultStatus.OK, output=b"12345"):
    return m.Result(status=int(kind), queue_us=0, fetch_us=0, boot_us=0, exec_us=1, output=output, log=b"")


def answer(kind=ResultStatus.OK, replica=HOST_ID, output=b"12345", **kw):
    return Answer(result(kind, output), replica, **kw)


class FakeRecord:
    """The asking host's session as the tracker's handler sees it."""

    def __init__(self, node_id=HOST_ID):
        self.node_id = node_id
        self.sent, self.refused = [], []

    def send(self, message, response_to=0):
        self.sent.append((message, response_to))

    def refuse(self, request_id, code, text):
        self.refused.append((request_id, ErrorCode(code), text))


def ask(payout=HOST, fid=b"", after=b""):
    return m.VoucherAsk(payout=bytes.fromhex(payout[2:]), fid=fid, after=after)


class PaymentsTests(SynchronousTestCase):
    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.clock = task.Clock()
        self.clock.advance(1_800_000_000)
        self.verified = []
        self.payments = self.open()

    def open(self):
        tally = Tally(os.path.join(self.dir, "tally.sqlite"), SIGNER_KEY, DOMAIN, clock=self.clock,
                      expiry_s=P.VOUCHER_EXPIRY_S)
        p = P.Payments(self.clock, tally, P.Bindings(os.path.join(self.dir, "payouts.sqlite")), local_id=TRACKER_ID,
                       epoch_s=3600, verified_since=lambda t: [x for x, at in self.verified if at >= t],
                       run_in_thread=inline)
        self.addCleanup(p.close)
        return p

    def bind(self, record=None, payout=HOST):
        record = record or FakeRecord()
        self.payments.on_voucher_ask(record, ask(payout), 1)
        return record

    def vouchers(self, record):
        (message, _), = record.sent[-1:]
        return message

    def test_an_ok_run_counts_one_request_and_its_bytes(self):
        """A routed run answered ok by a host counts one request and input + output bytes for its address."""
        self.bind()
        self.payments.call_ran(FID_RAW, answer(), b"\x01" * 32, 100)
        self.assertEqual(self.payments.tally.counters(FID32, HOST), (1, 105, 0))

    def test_failures_refusals_and_cache_hits_count_nothing(self):
        """Error, timeout, busy, not_found, denied, internal, cached and refused calls earn nothing."""
        self.bind()
        for kind in (ResultStatus.ERROR, ResultStatus.TIMEOUT, ResultStatus.BUSY, ResultStatus.NOT_FOUND,
                     ResultStatus.DENIED, ResultStatus.INTERNAL, ResultStatus.REFUSED, ResultStatus.MEMORY):
            self.payments.call_ran(FID_RAW, answer(kind), None, 10)
        self.payments.call_ran(FID_RAW, answer(cached=True, attempts=0), None, 10)
        self.payments.call_ran(FID_RAW, answer(attempts=0), None, 10)
        self.payments.call_ran(FID_RAW, answer(refusal=int(ErrorCode.TOO_LARGE)), None, 10)
        self.payments.call_ran(FID_RAW, answer(replica=None), None, 10)
        self.assertEqual(self.payments.tally.counters(FID32, HOST), (0, 0, 0))
        self.assertEqual(self.payments.counts["calls_counted"], 0)

    def test_a_host_calling_itself_earns_nothing(self):
        """A call whose caller key hashes to the replica's node id is not counted."""
        caller_key = b"\x05" * 32
        self.payments.on_voucher_ask(FakeRecord(node_id_for(caller_key)), ask(), 1)
        self.payments.call_ran(FID_RAW, answer(replica=node_id_for(caller_key)), caller_key, 10)
        self.assertEqual(self.payments.tally.counters(FID32, HOST), (0, 0, 0))
        self.assertEqual(self.payments.counts["self_calls"], 1)

    def test_the_trackers_own_runs_earn_nothing(self):
        """A call the tracker ran itself (hosting while no peer can) is not counted."""
        self.payments.call_ran(FID_RAW, answer(replica=TRACKER_ID), None, 10)
        self.assertEqual(self.payments.counts["calls_counted"], 0)

    def test_runs_before_the_first_ask_are_kept_for_the_address_it_binds(self):
        """Calls served before a host bound its payout address are added to that address at its first ask."""
        for _ in range(3):
            self.payments.call_ran(FID_RAW, answer(), None, 0)
        self.assertEqual(self.payments.tally.counters(FID32, HOST), (0, 0, 0))
        record = self.bind()
        [entry] = self.vouchers(record).vouchers
        self.assertEqual((entry.requests, entry.bytes), (3, 15))

    def test_unbound_counters_are_bounded(self):
        """What hosts without a payout address earned is kept for at most max_unbound (fid, host) pairs."""
        self.payments.max_unbound = 2
        for n in range(4):
            self.payments.call_ran(fidmod.fid_for(b"f%d" % n), answer(), None, 0)
        self.assertEqual(self.payments.counts["unbound_dropped"], 2)

    def test_the_first_ask_binds_the_address_and_another_is_denied(self):
        """A second address from the same node id is ERROR(denied); the binding survives a restart."""
        self.bind()
        other = FakeRecord()
        self.payments.on_voucher_ask(other, ask(OTHER), 2)
        self.assertEqual([(r, c) for r, c, _ in other.refused], [(2, ErrorCode.DENIED)])
        self.assertIn(HOST, other.refused[0][2])
        self.payments.close()
        self.payments = self.open()
        again = FakeRecord()
        self.payments.on_voucher_ask(again, ask(OTHER), 3)
        self.assertEqual([c for _, c, _ in again.refused], [ErrorCode.DENIED])
        self.assertEqual(self.payments.payout_of(HOST_ID), HOST)

    def test_vouchers_verify_and_pay_the_bound_address(self):
        """VOUCHERS carries the domain and signer; each entry recovers to the tracker's address."""
        self.bind()
        for _ in range(10_000):
            self.payments.call_ran(FID_RAW, answer(output=b""), None, 0)
        record = self.bind()
        msg = self.vouchers(record)
        self.assertEqual(record.sent[-1][1], 1)
        self.assertEqual((msg.chain_id, to_checksum_address(msg.signer)), (31337, V.address_of(SIGNER_KEY)))
        [e] = msg.vouchers
        v = V.Voucher(fid=e.fid32, host=HOST, signer=V.address_of(SIGNER_KEY), requests=e.requests, bytes=e.bytes,
                      epochs=e.epochs, expiry=e.expiry)
        V.SignedVoucher(domain=DOMAIN, voucher=v, signature=e.signature).verify(now=self.clock.seconds())
        self.assertEqual((e.requests, e.expiry), (10_000, int(self.clock.seconds()) + 7 * 86400))

    def test_all_asks_page_by_64_and_skip_unchanged_vouchers(self):
        """70 funded fids: 64 then 6 (more = 1, then 0); asked again, nothing changed; one fid asked: re-signed."""
        self.bind()
        fids = [fidmod.fid_for(b"fn %d" % n) for n in range(70)]
        for f in fids:
            self.payments.call_ran(f, answer(), None, 0)
        record = FakeRecord()
        self.payments.on_voucher_ask(record, ask(), 1)
        first = self.vouchers(record)
        self.assertEqual((len(first.vouchers), first.more), (64, 1))
        self.assertEqual([e.fid32 for e in first.vouchers], sorted(f[1:] for f in fids)[:64])
        self.payments.on_voucher_ask(record, ask(after=first.vouchers[-1].fid32), 2)
        second = self.vouchers(record)
        self.assertEqual((len(second.vouchers), second.more), (6, 0))
        self.payments.on_voucher_ask(record, ask(), 3)
        self.assertEqual(self.vouchers(record).vouchers, ())
        self.payments.on_voucher_ask(record, ask(fid=fids[0]), 4)
        self.assertEqual(len(self.vouchers(record).vouchers), 1)

    def test_epochs_count_only_hosts_that_passed_a_challenge(self):
        """An epoch is counted for a (fid, host) that passed a challenge since the last epoch tick, not others."""
        self.bind()
        fid_text = fidmod.to_text(FID_RAW)
        self.clock.advance(3600)
        self.verified = [((fid_text, HOST_ID), self.clock.seconds() - 7200)]  # before this epoch: no
        self.payments.epoch_tick()
        self.assertEqual(self.payments.tally.counters(FID32, HOST)[2], 0)
        self.clock.advance(1800)
        self.verified = [((fid_text, HOST_ID), self.clock.seconds())]
        self.clock.advance(1800)
        self.payments.epoch_tick()
        self.assertEqual(self.payments.tally.counters(FID32, HOST)[2], 1)

    def test_no_voucher_leaves_before_the_binding_is_stored(self):
        """If the payout address cannot be stored, the ask is ERROR(internal), nothing is signed, and it is not bound."""
        self.payments.call_ran(FID_RAW, answer(), None, 0)

        def broken(node_id, address, now):
            raise OSError("disk full")

        self.payments.bindings.bind = broken
        record = FakeRecord()
        self.payments.on_voucher_ask(record, ask(), 1)
        self.flushLoggedErrors(OSError)
        self.assertEqual(([c for _, c, _ in record.refused], record.sent), ([ErrorCode.INTERNAL], []))
        self.assertIsNone(self.payments.payout_of(HOST_ID))

    def test_one_ask_at_a_time_per_host(self):
        """A VOUCHER_ASK while the same host's previous one is being signed is refused busy."""
        pending = defer.Deferred()
        self.payments._in_thread = lambda fn, *a: pending
        self.payments.on_voucher_ask(FakeRecord(), ask(), 1)
        second = FakeRecord()
        self.payments.on_voucher_ask(second, ask(), 2)
        self.assertEqual([c for _, c, _ in second.refused], [ErrorCode.BUSY])

    def test_an_unfundable_fid_is_invalid(self):
        """A VOUCHER_ASK naming a malformed fid, or the zero address, is ERROR(invalid) and binds nothing."""
        record = FakeRecord()
        self.payments.on_voucher_ask(record, ask(fid=b"\x01\x02"), 1)
        self.payments.on_voucher_ask(record, ask(payout="0x" + "00" * 20), 2)
        self.assertEqual([c for _, c, _ in record.refused], [ErrorCode.INVALID, ErrorCode.INVALID])
        self.assertIsNone(self.payments.payout_of(HOST_ID))


class RouterRunListenerTests(SynchronousTestCase):
    """The router tells its run listeners once per run on a replica, with the caller's key."""

    def setUp(self):
        self.clock = task.Clock()
        self.runs = []
        self.peer = R.Peer(R.node(1))

    def router(self, **manifest):
        channel = R.Channel(self.clock, R.node(1), auto=lambda msg: R.ok(b"out"))
        router = Router(self.clock, None, R.Registry(R.Function(**manifest)), R.Replication([self.peer]),
                        channel=lambda node_id: channel)
        router.run_listeners.append(lambda *a: self.runs.append(a))
        return router

    def test_a_run_is_told_once_with_its_caller(self):
        """An ok call: one run, its Answer names the replica, with the caller's key and the input size."""
        router = self.router()
        self.successResultOf(router.call(R.FID_RAW, b"abc", caller=b"\x05" * 32))
        [(fid, ans, caller, nbytes, authorized)] = self.runs
        self.assertEqual((fid, ans.replica, caller, nbytes, authorized), (R.FID_RAW, R.node(1), b"\x05" * 32, 3, False))

    def test_cached_answers_are_no_run(self):
        """A pure function's second identical call is served from the cache: no second run is told."""
        router = self.router(pure=True)
        self.successResultOf(router.call(R.FID_RAW, b"abc"))
        cached = self.successResultOf(router.call(R.FID_RAW, b"abc"))
        self.assertTrue(cached.cached)
        self.assertEqual(len(self.runs), 1)


    def test_identical_pure_calls_sharing_a_run_are_one_run(self):
        """Two identical calls of a pure function while the first runs: one run is told, not two."""
        channel = R.Channel(self.clock, R.node(1))
        router = Router(self.clock, None, R.Registry(R.Function(pure=True)), R.Replication([self.peer]),
                        channel=lambda node_id: channel)
        router.run_listeners.append(lambda *a: self.runs.append(a))
        first, second = router.call(R.FID_RAW, b"abc"), router.call(R.FID_RAW, b"abc")
        [(_, _, d)] = channel.sent
        d.callback(R.ok(b"out"))
        self.successResultOf(first), self.successResultOf(second)
        self.assertEqual(len(self.runs), 1)

    def test_invoke_from_the_host_itself_is_not_counted(self):
        """INVOKE over the replica's own session: the router passes its key, payments sees a self-call."""
        payments = P.Payments(self.clock, Tally(":memory:", SIGNER_KEY, DOMAIN, clock=self.clock),
                              P.Bindings(":memory:"), run_in_thread=inline)
        self.addCleanup(payments.close)
        host_key = b"\x05" * 32
        host = R.Peer(node_id_for(host_key))
        channel = R.Channel(self.clock, host.node_id, auto=lambda msg: R.ok(b"out"))
        router = Router(self.clock, None, R.Registry(R.Function()), R.Replication([host]),
                        channel=lambda node_id: channel)
        router.run_listeners.append(payments.call_ran)
        caller = R.Record()
        caller.remote = attrs.make_class("Remote", ["public_key"])(host_key)
        router.on_invoke(caller, m.Invoke(fid=R.FID_RAW, deadline_ms=1000, token=b"", input=b"x"), 1)
        stranger = R.Record()
        stranger.remote = attrs.make_class("Remote", ["public_key"])(b"\x06" * 32)
        router.on_invoke(stranger, m.Invoke(fid=R.FID_RAW, deadline_ms=1000, token=b"", input=b"y"), 1)
        owner = R.Record()
        owner.remote = attrs.make_class("Remote", ["public_key"])(R.Function.owner)
        router.on_invoke(owner, m.Invoke(fid=R.FID_RAW, deadline_ms=1000, token=b"", input=b"z"), 1)
        self.assertEqual((len(caller.sent), len(stranger.sent), len(owner.sent)), (1, 1, 1))
        self.assertEqual([r.status_kind for r, _ in caller.sent + stranger.sent + owner.sent], [ResultStatus.OK] * 3)
        self.assertEqual((payments.counts["self_calls"], payments.counts["calls_unauthorized"],
                          payments.counts["calls_counted"]), (1, 1, 1))


class AuthorizedCallerTests(SynchronousTestCase):
    """Only calls from callers the owner authorized earn (RFC 10.10): a host's fresh key earns nothing."""

    def setUp(self):
        self.clock = task.Clock()
        self.payments = P.Payments(self.clock, Tally(":memory:", SIGNER_KEY, DOMAIN, clock=self.clock),
                                   P.Bindings(":memory:"), run_in_thread=inline)
        self.addCleanup(self.payments.close)
        self.host = R.Peer(node_id_for(b"\x05" * 32))

    def router(self, **manifest):
        channel = R.Channel(self.clock, self.host.node_id, auto=lambda msg: R.ok(b"out"))
        router = Router(self.clock, None, R.Registry(R.Function(**manifest)), R.Replication([self.host]),
                        channel=lambda node_id: channel)
        router.tokens = _Tokens()
        router.run_listeners.append(self.payments.call_ran)
        return router

    def test_a_host_calling_through_a_fresh_key_earns_nothing(self):
        """A host's call of its own function through a key the owner never authorized is served, not counted."""
        router = self.router()
        fresh = os.urandom(32)
        for _ in range(5):
            self.assertEqual(self.successResultOf(router.call(R.FID_RAW, b"in", caller=fresh)).result.status_kind,
                             ResultStatus.OK)
        self.successResultOf(router.call(R.FID_RAW, b"in"))  # anonymous (a gateway call without a token)
        self.assertEqual((self.payments.counts["calls_counted"], self.payments.counts["calls_unauthorized"]), (0, 6))
        self.assertEqual(self.payments.tally.keys(), [])

    def test_the_owner_and_token_holders_earn_the_host_a_count(self):
        """The owner's own key and a caller showing the owner's token are authorized: both calls count."""
        router = self.router()
        self.successResultOf(router.call(R.FID_RAW, b"in", caller=R.Function.owner))
        self.successResultOf(router.call(R.FID_RAW, b"in", caller=os.urandom(32), token=b"good"))
        self.assertEqual(self.payments.counts["calls_counted"], 2)

    def test_a_bad_token_on_a_public_function_is_denied(self):
        """A public function's caller that shows a token the owner did not sign is refused, not served free."""
        answer = self.successResultOf(self.router().call(R.FID_RAW, b"in", caller=os.urandom(32), token=b"forged"))
        self.assertEqual(answer.result.status_kind, ResultStatus.DENIED)
        self.assertEqual(self.payments.counts["calls_counted"], 0)

    def test_an_owner_paying_for_any_caller_pays_strangers_but_not_the_host(self):
        """payment.callers = "any": a stranger's call counts; the host's own key still earns nothing."""
        router = self.router(payment={"required": False, "callers": "any"})
        self.successResultOf(router.call(R.FID_RAW, b"in", caller=os.urandom(32)))
        self.successResultOf(router.call(R.FID_RAW, b"in"))
        self.successResultOf(router.call(R.FID_RAW, b"in", caller=b"\x05" * 32))
        self.assertEqual((self.payments.counts["calls_counted"], self.payments.counts["self_calls"]), (2, 1))


class _Tokens:
    """Accepts the token b"good" for any caller (the token rules are tests.test_token's)."""

    def check(self, fid, token, caller):
        if token != b"good":
            raise TokenError("forged", "the token's signature is not the owner's")


class WireVectorTests(SynchronousTestCase):
    def test_the_vouchers_vector_verifies(self):
        """The VOUCHERS vector of Appendix A carries the RFC 10.10 voucher, and its signature is the signer's."""
        [msg] = [msg for name, msg, _, _ in spec.sample_messages() if name == "vouchers"]
        [e] = msg.vouchers
        v = V.Voucher(fid=e.fid32, host=HOST, signer=to_checksum_address(msg.signer), requests=e.requests,
                      bytes=e.bytes, epochs=e.epochs, expiry=e.expiry)
        domain = V.Domain(chain_id=msg.chain_id, contract=to_checksum_address(msg.contract))
        self.assertEqual(domain.separator().hex(),
                         "9b384c9db2fe2ae7146eec8352aec52c7beea2c67bc527777c4d9f3db0c91061")
        self.assertEqual(v.struct_hash().hex(), "048bb753f3222b0bc6c6f3b51392ddc85466173bfd4920290d8d604d562ca51f")
        self.assertEqual(v.digest(domain).hex(), "555e0ab5c28f762e6a673256335ab8b8dcbce8937155652c261b7d73ae2a7228")
        self.assertEqual(V.SignedVoucher(domain=domain, voucher=v, signature=e.signature).recover(),
                         V.address_of(SIGNER_KEY))
        self.assertEqual(e.fid32, FID32)
        with open(spec.RFC_PATH, encoding="utf-8") as f:
            rfc = f.read()
        for text in ("10.10. Payments and Vouchers", "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A",
                     "555e0ab5c28f762e6a673256335ab8b8dcbce8937155652c261b7d73ae2a7228", e.signature.hex()):
            self.assertIn(text, rfc)

    def test_round_trip_and_bounds(self):
        """VOUCHER_ASK and VOUCHERS decode to what was encoded; 65 vouchers, a 31-byte cursor or 21-byte address are refused."""
        entry = m.VoucherEntry(FID32, 1, 2, 3, 4, b"\x1b" * 65)
        msg = m.Vouchers(chain_id=1, contract=b"\xcc" * 20, signer=b"\x19" * 20, vouchers=(entry,) * 64, more=1)
        self.assertEqual(m.decode_body(m.MessageType.VOUCHERS, msg.encode_body()), msg)
        a = ask(fid=FID_RAW, after=FID32)
        self.assertEqual(m.decode_body(m.MessageType.VOUCHER_ASK, a.encode_body()), a)
        self.assertRaises(ValueError, attrs.evolve, msg, vouchers=(entry,) * 65)
        self.assertRaises(ValueError, attrs.evolve, a, after=b"\x00" * 31)
        self.assertRaises(ValueError, attrs.evolve, a, payout=b"\x00" * 21)


class WiredTests(SynchronousTestCase):
    """A tracker with payments and a host with a Payout, on the in-memory network."""

    def setUp(self):
        self.net = MemoryNet()
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.tracker = self.net.tracker("10.1.0.1")
        tally = Tally(os.path.join(self.dir, "tally.sqlite"), SIGNER_KEY, DOMAIN, clock=self.net.clock)
        self.payments = P.Payments(self.net.clock, tally, P.Bindings(os.path.join(self.dir, "payouts.sqlite")),
                                   local_id=self.tracker.node_id, run_in_thread=inline)
        self.addCleanup(self.payments.close)
        self.tracker.table.handlers.update(self.payments.handlers())
        self.peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)], outbound_peers=0, outbound_trackers=1)
        self.book = VoucherBook(os.path.join(self.dir, "book.sqlite"), clock=self.net.clock)
        self.addCleanup(self.book.close)
        self.payout = Payout(self.net.clock, self.peer.homing, self.book, HOST, DOMAIN, run_in_thread=inline)
        self.net.run(2)

    def served(self, n, fid=FID_RAW):
        for _ in range(n):
            self.payments.call_ran(fid, answer(replica=self.peer.node_id, output=b""), None, 0)

    def test_the_host_asks_and_keeps_its_vouchers(self):
        """The host's VOUCHER_ASK binds its address; the vouchers it gets land in its book, newest kept."""
        self.served(5)
        d = self.payout.ask()
        self.net.run(1)
        self.assertEqual(self.successResultOf(d), 1)
        self.served(2)
        d = self.payout.ask()
        self.net.run(1)
        self.assertEqual(self.successResultOf(d), 1)
        [entry] = self.book.latest()
        self.assertEqual(entry.signed.voucher.requests, 7)
        self.assertEqual(self.payments.payout_of(self.peer.node_id), HOST)

    def test_a_host_with_another_address_is_denied_and_keeps_nothing(self):
        """A second payout address from the same host is refused; nothing is stored."""
        self.served(1)
        d = self.payout.ask()
        self.net.run(1)
        self.assertEqual(self.successResultOf(d), 1)
        other_book = VoucherBook(os.path.join(self.dir, "other.sqlite"), clock=self.net.clock)
        self.addCleanup(other_book.close)
        other = Payout(self.net.clock, self.peer.homing, other_book, OTHER, DOMAIN, run_in_thread=inline)
        d = other.ask()
        self.net.run(1)
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual((other.counts["denied"], len(other_book)), (1, 0))

    def test_vouchers_not_for_us_are_refused(self):
        """A voucher whose signer changed since the tracker's first answer is refused, and so is one for another escrow."""
        self.served(1)
        d = self.payout.ask()
        self.net.run(1)
        self.successResultOf(d)
        self.payout.signers[self.tracker.node_id] = OTHER  # as if the tracker had announced another signer
        self.served(1)
        d = self.payout.ask()
        self.net.run(1)
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual(self.payout.counts["refused"], 1)
        elsewhere = Payout(self.net.clock, self.peer.homing, self.book, HOST,
                           V.Domain(chain_id=1, contract=DOMAIN.contract), run_in_thread=inline)
        self.served(1)
        d = elsewhere.ask()
        self.net.run(1)
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual(elsewhere.counts["refused"], 1)

    def test_a_voucher_signed_for_another_host_is_refused(self):
        """An entry whose signature is over another host's voucher does not recover to the signer: refused, not kept."""
        signer = V.address_of(SIGNER_KEY)
        theirs = V.sign(DOMAIN, V.Voucher(fid=FID32, host=OTHER, signer=signer, requests=5, bytes=0, epochs=0,
                                          expiry=2_000_000_000), SIGNER_KEY)
        v = theirs.voucher
        answer_msg = m.Vouchers(chain_id=DOMAIN.chain_id, contract=bytes.fromhex(DOMAIN.contract[2:]),
                                signer=bytes.fromhex(signer[2:]), more=0,
                                vouchers=(m.VoucherEntry(v.fid, v.requests, v.bytes, v.epochs, v.expiry,
                                                         theirs.signature),))
        stored = self.payout._store(self.payout._accept(self.tracker.node_id, answer_msg))
        self.assertEqual((stored, self.payout.counts["refused"], len(self.book)), (0, 1, 0))

    def test_ping_and_error_floods_earn_nothing(self):
        """Hundreds of PINGs and ERRORs from a host count no request, byte or epoch."""
        record = self.peer.table.get(self.tracker.node_id)
        for n in range(200):
            if n % 50 == 0:
                self.net.run(0.5)
            record.request(m.Ping(nonce=n))
            record.send(m.Error(code=int(ErrorCode.INTERNAL), ref_request_id=0, text="noise"))
        self.net.run(2)
        self.assertEqual(self.payments.tally.keys(), [])
        self.assertEqual(self.payments.counts["calls_counted"], 0)

    def test_a_tracker_without_payments_answers_unsupported(self):
        """VOUCHER_ASK to a tracker that signs no vouchers is ERROR(unsupported)."""
        from orb.net.adapter import RemoteError

        del self.tracker.table.handlers[m.MessageType.VOUCHER_ASK]
        d = self.peer.table.get(self.tracker.node_id).request(ask())
        self.net.run(1)
        self.assertEqual(self.failureResultOf(d, RemoteError).value.code, ErrorCode.UNSUPPORTED)
        d = self.payout.ask()  # the host's Payout: such a tracker is not asked again
        self.net.run(1)
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual((self.payout.unpaying, self.payout.trackers()), ({self.tracker.node_id}, []))

    def test_every_tracker_session_is_asked(self):
        """A host with sessions to two paying trackers gets vouchers from both (each signs what it routed)."""
        t2 = self.net.tracker("10.1.0.2")
        tally = Tally(os.path.join(self.dir, "tally2.sqlite"), OTHER_KEY, DOMAIN, clock=self.net.clock)
        payments2 = P.Payments(self.net.clock, tally, P.Bindings(os.path.join(self.dir, "payouts2.sqlite")),
                               local_id=t2.node_id, run_in_thread=inline)
        self.addCleanup(payments2.close)
        t2.table.handlers.update(payments2.handlers())
        self.peer.table.dial("10.1.0.2", PORT)
        self.net.run(2)
        self.assertEqual(len(self.payout.trackers()), 2)
        self.served(2)
        payments2.call_ran(FID_RAW, answer(replica=self.peer.node_id), None, 0)
        d = self.payout.ask()
        self.net.run(1)
        self.assertEqual(self.successResultOf(d), 2)
        self.assertEqual(sorted(e.signed.voucher.requests for e in self.book.latest()), [1, 2])

    def test_many_calls_served_ask_early(self):
        """A host that served ask_after_calls calls asks for its vouchers at once, not at the next period."""
        self.payout.ask_after_calls = 3
        self.served(3)
        for _ in range(2):
            self.payout.call_finished(FID_RAW, result(), b"", 0.0)
        self.assertEqual(self.payout.counts["asks"], 0)
        self.payout.call_finished(FID_RAW, result(), b"", 0.0)
        self.net.run(1)
        self.assertEqual(self.payout.counts["asks"], 1)
        self.assertEqual(len(self.book), 1)


class OptionTests(SynchronousTestCase):
    def parse(self, module, *argv):
        from twisted.python import usage

        options = module.Options()
        try:
            options.parseOptions(["--data-dir", self.mktemp(), "--listen", "tcp:0:interface=127.0.0.1", *argv])
        except SystemExit as e:
            raise usage.UsageError(str(e)) from None
        return options

    def test_payments_are_off_unless_eth_rpc_is_given(self):
        """Without --eth-rpc neither daemon pays nor is paid; --escrow, --wallet alone are refused."""
        from twisted.python import usage

        from orb.peer import tap as peer_tap
        from orb.tracker import tap as tracker_tap

        self.assertIsNone(self.parse(tracker_tap)["payments"])
        self.assertIsNone(self.parse(peer_tap)["payout"])
        self.assertRaises(usage.UsageError, self.parse, tracker_tap, "--escrow", DOMAIN.contract)
        self.assertRaises(usage.UsageError, self.parse, peer_tap, "--wallet", "w.json")

    def test_payment_options_are_checked(self):
        """A bad URL, address, threshold, or an epoch shorter than the challenge interval is refused."""
        from twisted.python import usage

        from orb.peer import tap as peer_tap
        from orb.tracker import tap as tracker_tap

        url = "http://127.0.0.1:8545"
        config = self.parse(tracker_tap, "--eth-rpc", url, "--escrow", DOMAIN.contract.lower(), "--epoch", "600")
        self.assertEqual((config["payments"].escrow, config["payments"].epoch_s), (DOMAIN.contract, 600.0))
        self.assertFalse(config["payments"].require_funding)
        self.assertTrue(self.parse(tracker_tap, "--eth-rpc", url, "--require-funding")["payments"].require_funding)
        for argv in (("--eth-rpc", "ftp://x"), ("--eth-rpc", url, "--escrow", "0x12"),
                     ("--eth-rpc", url, "--epoch", "60"), ("--require-funding",)):
            self.assertRaises(usage.UsageError, self.parse, tracker_tap, *argv)
        payout = self.parse(peer_tap, "--eth-rpc", url, "--claim-threshold-wei", "5", "--claim-every", "2")["payout"]
        self.assertEqual((payout.claim_threshold_wei, payout.claim_every_s, payout.ask_every_s), (5, 2.0, 60.0))
        self.assertTrue(payout.wallet.endswith(os.path.join("private", "wallet.json")))
        self.assertRaises(usage.UsageError, self.parse, peer_tap, "--eth-rpc", url, "--claim-threshold-wei", "-1")
