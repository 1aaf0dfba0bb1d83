"""
The payment gate (orb.tracker.funding, RFC 10.10.2): a function whose
manifest says payment.required is answered payment_required once its
escrow deposit, less what the tracker counted and has not seen claimed,
cannot pay for one more call. The escrow is a fake here; tests.test_pay_live
reads a real one.
"""

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from orb.pay.contract import FundInfo, Paid
from orb.pay.tally import Tally
from orb.protocol.codes import ResultStatus
from orb.tracker import funding as F
from orb.tracker import payments as P
from orb.tracker.router import Router
from tests import test_router as R
from tests.test_pay_tracker import DOMAIN, FID32, FID_RAW, HOST, HOST_ID, SIGNER_KEY, answer, inline

PRICE = 1000
OWNER = "0x" + "ab" * 20


class Chain:
    """The escrow's state as a read sees it; ``reads`` counts them; ``fail`` makes them raise."""

    def __init__(self, balance=0, owner=OWNER, withdrawable_at=0):
        self.info = FundInfo(owner, balance, PRICE, 0, 0, withdrawable_at)
        self.paid = {}
        self.reads = []
        self.fail = False
        self.accepted = True

    def read(self, fid32, hosts):
        self.reads.append((fid32, tuple(hosts)))
        if self.fail:
            raise ConnectionError("the chain is unreachable")
        return self.info, {h: self.paid.get(h, Paid(0, 0, 0)) for h in hosts}, self.accepted


class Threads:
    """run_in_thread whose jobs wait until ``run_all``: the reactor never blocks on a read."""

    def __init__(self):
        self.jobs = []

    def __call__(self, fn, *args):
        d = defer.Deferred()
        self.jobs.append((d, fn, args))
        return d

    def run_all(self):
        jobs, self.jobs = self.jobs, []
        for d, fn, args in jobs:
            try:
                d.callback(fn(*args))
            except Exception as e:
                d.errback(e)


class FundingTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.payments = P.Payments(self.clock, Tally(":memory:", SIGNER_KEY, DOMAIN, clock=self.clock),
                                   P.Bindings(":memory:"), run_in_thread=inline)
        self.addCleanup(self.payments.close)
        self.chain = Chain(balance=3 * PRICE)
        self.threads = Threads()
        self.funding = F.Funding(self.clock, self.payments, self.chain.read, run_in_thread=self.threads)

    def admit(self):
        """The gate's verdict for FID_RAW, running any read it started."""
        got = self.funding.admit(FID_RAW)
        if isinstance(got, defer.Deferred):
            self.threads.run_all()
            return self.successResultOf(got)
        return got

    def serve(self):
        """One authorized call served by HOST_ID: counted by the tracker's tally."""
        self.payments.call_ran(FID_RAW, answer(output=b""), None, 0, True)

    def test_a_deposit_for_three_requests_lets_three_calls_through(self):
        """With 3 x price deposited and nothing claimed yet, the 4th call is refused, saying what is left."""
        for _ in range(3):
            self.assertIsNone(self.admit())
            self.serve()
        refusal = self.admit()
        self.assertIn("payment_required", refusal)
        self.assertIn("0 wei left of 3000", refusal)
        self.assertEqual(len(self.chain.reads), 1)  # the counts since the read were owed at once

    def test_claims_do_not_free_money_and_a_top_up_does(self):
        """Once hosts claim, the balance and the paid counters fall together; a top-up lets calls through again."""
        self.payments.bindings.bind(HOST_ID, HOST, 0)
        self.payments._payout[HOST_ID] = HOST  # bound, as after its first VOUCHER_ASK
        for _ in range(3):
            self.admit()
            self.serve()
        self.chain.paid[HOST] = Paid(3, 0, 0)
        self.chain.info = FundInfo(OWNER, 0, PRICE, 0, 0, 0)
        self.clock.advance(F.TTL_S)
        self.assertIn("payment_required", self.admit())  # the old read, while a new one is made
        self.threads.run_all()
        self.assertIn("payment_required", self.admit())
        self.assertEqual(self.chain.reads[-1], (FID32, (HOST,)))
        self.chain.info = FundInfo(OWNER, 2 * PRICE, PRICE, 0, 0, 0)  # orb fund tops it up
        self.clock.advance(F.TTL_S)
        self.admit()
        self.threads.run_all()
        self.assertIsNone(self.admit())

    def test_unfunded_and_withdrawing_fids_are_refused(self):
        """No deposit, or a withdrawal whose delay has passed: payment_required, each with its own reason."""
        self.chain.info = FundInfo(None, 0, 0, 0, 0, 0)
        self.assertIn("no deposit", self.admit())
        self.chain.info = FundInfo(OWNER, 10 * PRICE, PRICE, 0, 0, int(self.clock.seconds()) + 100)
        self.clock.advance(F.TTL_S)
        self.admit()
        self.threads.run_all()
        self.assertIsNone(self.admit())  # a withdrawal asked for, its delay still running: still paid
        self.clock.advance(100)
        self.admit()
        self.threads.run_all()
        self.assertIn("withdrawing", self.admit())

    def test_a_tracker_the_owner_does_not_pay_through_refuses(self):
        """A funded fid whose owner did not accept this tracker's signer: payment_required, naming the signer."""
        self.chain.accepted = False
        refusal = self.admit()
        self.assertIn("does not accept this tracker's vouchers", refusal)
        self.assertIn(self.payments.signer, refusal)

    def test_a_failed_read_lets_calls_through(self):
        """An unreachable chain is no reason to refuse: the call goes on, and the failure is counted."""
        self.chain.fail = True
        self.assertIsNone(self.admit())
        self.assertEqual(self.funding.counts["read_failures"], 1)
        self.flushLoggedErrors()

    def test_reads_are_shared_bounded_and_cancellable(self):
        """Calls waiting on one fid share one read; reads past the cap queue; a cancelled wait is dropped."""
        waits = [self.funding.admit(FID_RAW) for _ in range(5)]
        self.assertEqual(len(self.threads.jobs), 1)
        others = [self.funding.admit(bytes([1]) + bytes([n]) * 32) for n in range(F.MAX_READS + 3)]
        self.assertEqual(len(self.threads.jobs), F.MAX_READS)  # FID_RAW's and three others'; the rest queued
        waits[0].cancel()
        self.failureResultOf(waits[0], defer.CancelledError)
        while self.threads.jobs:
            self.threads.run_all()
        self.assertEqual([self.successResultOf(d) for d in waits[1:]], [None] * 4)
        self.assertEqual(len(self.chain.reads), F.MAX_READS + 4)
        self.assertEqual([self.successResultOf(d) for d in others], [None] * len(others))
        self.assertEqual(self.funding._waiting, 0)


class FullQueueTests(SynchronousTestCase):
    def test_a_fid_dropped_from_a_full_read_queue_lets_its_calls_through(self):
        """Past the queue's bound the oldest queued fid's waiting calls go on unjudged, never left hanging."""
        clock = task.Clock()
        payments = P.Payments(clock, Tally(":memory:", SIGNER_KEY, DOMAIN, clock=clock), P.Bindings(":memory:"),
                              run_in_thread=inline)
        self.addCleanup(payments.close)
        threads = Threads()
        funding = F.Funding(clock, payments, Chain(balance=0).read, run_in_thread=threads, max_reads=1,
                            max_entries=2)
        first, second, third, fourth = (funding.admit(bytes([1]) + bytes([n]) * 32) for n in range(4))
        self.assertNoResult(first)
        self.assertNoResult(third)
        self.assertIsNone(self.successResultOf(second))  # dropped when the fourth came: let through
        self.assertEqual(funding.counts["unread"], 1)
        while threads.jobs:
            threads.run_all()
        for d in (first, third, fourth):
            self.assertIn("deposit is spent", self.successResultOf(d))


class RouterGateTests(SynchronousTestCase):
    """The router asks the gate only for manifests with payment.required, before the result cache."""

    def setUp(self):
        self.clock = task.Clock()
        self.channel = R.Channel(self.clock, R.node(1), auto=lambda msg: R.ok(b"out"))
        self.verdict = None
        self.asked = []

    def router(self, **manifest):
        router = Router(self.clock, None, R.Registry(R.Function(**manifest)), R.Replication([R.Peer(R.node(1))]),
                        channel=lambda node_id: self.channel)
        router.payment_gate = lambda fid: self.asked.append(fid) or self.verdict
        return router

    def test_a_spent_deposit_is_payment_required_and_nothing_runs(self):
        """The gate's refusal is RESULT payment_required with its text; no replica is sent the call."""
        router = self.router(pure=True, idempotent=True, payment={"required": True, "callers": "authorized"})
        self.assertEqual(self.successResultOf(router.call(R.FID_RAW, b"in")).result.status_kind, ResultStatus.OK)
        self.verdict = "payment_required: the function's deposit is spent"
        got = self.successResultOf(router.call(R.FID_RAW, b"in"))  # the same pure call: the cache is not asked
        self.assertEqual((got.result.status_kind, got.result.log), (ResultStatus.PAYMENT_REQUIRED,
                                                                    self.verdict.encode()))
        self.assertEqual((len(self.channel.sent), router.counts["payment_required"]), (1, 1))

    def test_a_waiting_gate_holds_the_call_and_a_function_not_asking_is_not_gated(self):
        """A gate still reading delays the call until it says go; a manifest without payment.required is never gated."""
        self.verdict = defer.Deferred()
        router = self.router(payment={"required": True, "callers": "any"})
        d = router.call(R.FID_RAW, b"in")
        self.assertNoResult(d)
        self.assertEqual(self.channel.sent, [])
        self.verdict.callback(None)
        self.assertEqual(self.successResultOf(d).result.status_kind, ResultStatus.OK)
        plain = self.router()
        self.successResultOf(plain.call(R.FID_RAW, b"in"))
        self.assertEqual(len(self.asked), 1)
