"""A host's automatic claims (orb.pay.claimer) on an in-process chain, time from a Clock."""

import os

from eth_account import Account
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from web3 import Web3

from orb.pay import chain as C
from orb.pay import contract
from orb.pay import voucher as V
from orb.pay.book import VoucherBook
from orb.pay.claimer import AutoClaimer, ClaimPolicy
from orb.pay.tap import deploy_escrow_in_process
from orb.protocol import fid as fidmod

FID = fidmod.fid_for(b"claimer test")
PRICE = 10**12  # wei a request


class ClaimerTests(SynchronousTestCase):
    def setUp(self):
        keys = C.dev_keys(3)
        chain = C.Chain(keys)
        escrow = deploy_escrow_in_process(chain, keys[0], 60)
        self.w3 = Web3(type(chain.provider)(chain.tester))
        self.escrow = contract.Escrow(self.w3, escrow["address"])
        self.owner, self.host = Account.from_key(keys[1]), Account.from_key(keys[2])
        self.signer = Account.create()
        self.domain = V.Domain(chain_id=chain.chain_id, contract=self.escrow.address)
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.book = VoucherBook(os.path.join(self.mktemp(), "vouchers.sqlite"), clock=self.clock)
        self.addCleanup(self.book.close)

    def claimer(self, **policy):
        return AutoClaimer(self.book, self.escrow, self.host, self.domain, self.clock,
                           ClaimPolicy(**{"min_claim_wei": 1000 * PRICE, "max_age_s": 3600, **policy}),
                           run_in_thread=lambda f, *a: defer.maybeDeferred(f, *a))

    def fund(self, raw_fid=FID):
        self.escrow.fund(self.owner, raw_fid, value_wei=10**18, price_per_request_wei=PRICE,
                         signers=[self.signer.address])

    def give(self, requests, raw_fid=FID):
        v = V.Voucher(fid=V.fid_bytes32(raw_fid), host=self.host.address, signer=self.signer.address,
                      requests=requests, bytes=0, epochs=0, expiry=2**40)
        self.book.add(V.sign(self.domain, v, self.signer.key))

    def test_claims_when_worth_it(self):
        """Owed value past the threshold is claimed at the next check; nothing more is sent until it grows."""
        self.fund()
        self.give(999)
        claimer = self.claimer()
        self.assertIsNone(self.successResultOf(claimer.check()))
        self.give(1500)
        before = self.w3.eth.get_balance(self.host.address)
        result = self.successResultOf(claimer.check())
        self.assertEqual((result.reason, result.claimed, result.paid_wei), ("value", 1, 1500 * PRICE))
        fee = result.gas_used * self.w3.eth.get_transaction_receipt(result.tx)["effectiveGasPrice"]
        self.assertEqual(self.w3.eth.get_balance(self.host.address) - before, 1500 * PRICE - fee)
        self.assertIsNone(self.successResultOf(claimer.check()))

    def test_claims_old_vouchers(self):
        """A small amount owed for max_age_s is claimed anyway."""
        self.fund()
        self.give(5)
        claimer = self.claimer()
        self.assertIsNone(self.successResultOf(claimer.check()))
        self.clock.advance(3600)
        result = self.successResultOf(claimer.check())
        self.assertEqual((result.reason, result.paid_wei), ("age", 5 * PRICE))

    def test_unfunded_left_out(self):
        """Vouchers for a fid nobody funded are not sent, whatever their age."""
        self.give(10**6)
        self.clock.advance(10**6)
        self.assertIsNone(self.successResultOf(self.claimer().check()))
        self.assertEqual(len(self.book.claimable()), 1)

    def test_already_paid_not_resent(self):
        """A voucher the escrow already paid (someone else submitted it) costs no transaction."""
        self.fund()
        self.give(5000)
        [entry] = self.book.claimable()
        self.escrow.claim(self.owner, entry.signed.voucher, entry.signed.signature)
        self.clock.advance(10**5)
        self.assertIsNone(self.successResultOf(self.claimer().check()))
        self.assertEqual(self.book.claimable(), [])  # settled: not looked at again

    def test_loop_survives_failures(self):
        """The periodic loop logs a failed claim and claims at a later tick."""
        self.fund()
        self.give(5000)
        claimer = self.claimer(interval_s=60)
        real_paid = self.escrow.paid
        self.escrow.paid = lambda *a: (_ for _ in ()).throw(ConnectionError("node down"))
        claimer.start()
        self.addCleanup(claimer.stop)
        self.clock.advance(60)
        self.assertEqual(len(self.flushLoggedErrors(ConnectionError)), 1)
        self.assertIsNone(claimer.last_result)
        self.escrow.paid = real_paid
        self.clock.advance(60)
        self.assertEqual(claimer.last_result.paid_wei, 5000 * PRICE)
