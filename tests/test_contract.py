"""
OrbEscrow on an in-process chain (web3's EthereumTesterProvider: eth-tester on
py-evm): funding, the withdrawal delay, cumulative vouchers, fraud, batches,
events, and the committed artifact against a fresh compile.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

from eth_account import Account
from eth_account.messages import encode_typed_data
from twisted.trial import unittest
from web3 import EthereumTesterProvider, Web3

from orb.pay import contract
from orb.pay.contract import EscrowError, Voucher, deploy_escrow, error_selector, load_artifact, paid_by_host

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = ROOT / "contracts"
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
DELAY_S = 600
FID = bytes(range(32))
FID2 = bytes(range(1, 33))
FID3 = bytes(range(2, 34))
PRICE = 1_000  # wei per request
# Runtime code 0x60006000fd (REVERT(0, 0)) behind a constructor that returns it:
# a host contract that refuses every ether transfer.
REJECTING_HOST_INITCODE = "0x600580600b6000396000f360006000fd"


def sign(key, escrow, voucher):
    """The tests' own EIP-712 signer (orb.pay.voucher is the node's)."""
    return Account.sign_typed_data(key, full_message=escrow.typed_data(voucher)).signature


class Chain:
    """A fresh chain with an escrow, an owner, two trusted signers and two hosts."""

    def __init__(self, delay_s=DELAY_S):
        self.w3 = Web3(EthereumTesterProvider())
        self.tester = self.w3.provider.ethereum_tester
        accounts = self.w3.eth.accounts
        self.deployer, self.owner, self.host, self.host2, self.submitter, self.stranger = accounts[:6]
        self.escrow = deploy_escrow(self.w3, self.deployer, delay_s)
        self.tracker = Account.create()
        self.caller = Account.create()
        self.outsider = Account.create()

    def now(self):
        return self.w3.eth.get_block("pending")["timestamp"]

    def travel(self, seconds):
        """Move the chain's clock forward (eth-tester mines a block at the new time)."""
        self.tester.time_travel(self.now() + seconds)

    def balance(self, who):
        return self.w3.eth.get_balance(who)

    def fund(self, fid=FID, value_wei=10**18, price=PRICE, epoch_price=0, mib_price=0, signers=None):
        if signers is None:
            signers = [self.tracker.address, self.caller.address]
        return self.escrow.fund(self.owner, fid, value_wei=value_wei, price_per_request_wei=price,
                                price_per_epoch_wei=epoch_price, price_per_mib_wei=mib_price,
                                signers=signers)

    def voucher(self, requests=0, fid=FID, host=None, signer=None, bytes_=0, epochs=0, expiry=None):
        signer = signer or self.tracker
        v = Voucher(fid=fid, host=host or self.host, signer=signer.address, requests=requests,
                    bytes=bytes_, epochs=epochs, expiry=self.now() + 3600 if expiry is None else expiry)
        return v, sign(signer.key, self.escrow, v)

    def claim(self, v, sig):
        """Submit from a third account; returns (amount paid to the host, receipt)."""
        before = self.balance(v.host)
        receipt = self.escrow.claim(self.submitter, v, sig)
        return self.balance(v.host) - before, receipt

    def events(self, receipt):
        return self.escrow.events(receipt)

    def hostile_host(self):
        """A deployed ReentrantHost (contracts/ReentrantHost.sol)."""
        art = load_artifact("ReentrantHost")
        factory = self.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
        tx = factory.constructor().transact({"from": self.deployer})
        address = self.w3.eth.wait_for_transaction_receipt(tx)["contractAddress"]
        return self.w3.eth.contract(address=address, abi=art["abi"])

    def send(self, fn):
        return self.w3.eth.wait_for_transaction_receipt(fn.transact({"from": self.deployer}))

    def names(self, receipt):
        return [name for name, _ in self.events(receipt)]


class ArtifactTests(unittest.TestCase):
    def test_committed_artifact_matches_a_fresh_compile(self):
        """Editing OrbEscrow.sol without recompiling fails: the committed ABI and bytecode equal the pinned solc's output."""
        node = shutil.which("node")
        solc = CONTRACTS / "node_modules" / "solc"
        if node is None or not solc.is_dir():
            if os.environ.get("CI"):
                self.fail("node or contracts/node_modules/solc missing: ./dev.sh setup installs them")
            raise unittest.SkipTest("node or the pinned solc is missing (run ./dev.sh setup)")
        done = subprocess.run([node, str(CONTRACTS / "compile.js"), "--check"], capture_output=True,
                              text=True, timeout=300, cwd=str(CONTRACTS))
        self.assertEqual(done.returncode, 0, done.stderr[-2000:])

    def test_artifact_records_the_pinned_compiler_and_evm(self):
        """The artifact says which solc and EVM version made it, and they are the pinned ones."""
        pinned = json.loads((CONTRACTS / "package.json").read_text())["dependencies"]["solc"]
        for name in ("OrbEscrow", "PerReceiptBaseline", "ReentrantHost"):
            art = load_artifact(name)
            self.assertTrue(art["solcVersion"].startswith(pinned + "+"), art["solcVersion"])
            self.assertEqual(art["evmVersion"], "shanghai")
            self.assertGreater(len(art["deployedBytecode"]), 2)

    def test_contract_digest_is_the_eip712_digest_signers_compute(self):
        """A voucher signed with eth-account's EIP-712 encoding is the digest the contract recovers from."""
        c = Chain()
        v, _ = c.voucher(requests=7, bytes_=9, epochs=3)
        signable = encode_typed_data(full_message=c.escrow.typed_data(v))
        expected = Web3.keccak(b"\x19" + signable.version + signable.header + signable.body)
        self.assertEqual(c.escrow.voucher_digest(v), bytes(expected))


class LocalAccountTests(unittest.TestCase):
    def test_local_key_deploys_funds_and_claims(self):
        """A wallet key the node does not hold (eth-account LocalAccount) deploys, funds and claims: its transactions are signed locally."""
        c = Chain()
        wallet, host_wallet = Account.create(), Account.create()
        for who in (wallet, host_wallet):
            c.w3.eth.wait_for_transaction_receipt(c.w3.eth.send_transaction(
                {"from": c.deployer, "to": who.address, "value": 10**18}))
        escrow = deploy_escrow(c.w3, wallet, 60)
        self.assertEqual(escrow.withdraw_delay_s(), 60)
        escrow.fund(wallet, FID, value_wei=10**6, price_per_request_wei=PRICE, signers=[c.tracker.address])
        self.assertEqual(escrow.funds(FID).owner, wallet.address)
        v = Voucher(fid=FID, host=host_wallet.address, signer=c.tracker.address, requests=5, expiry=c.now() + 60)
        before = c.balance(host_wallet.address)
        r = escrow.claim(host_wallet, v, sign(c.tracker.key, escrow, v))
        fee = r["gasUsed"] * r["effectiveGasPrice"]
        self.assertEqual(c.balance(host_wallet.address) - before, 5 * PRICE - fee)
        with self.assertRaises(EscrowError) as e:
            escrow.top_up(host_wallet, FID, value_wei=1)
        self.assertEqual(e.exception.name, "NotOwner")


class FundingTests(unittest.TestCase):
    def setUp(self):
        self.c = Chain()

    def test_first_funder_becomes_owner(self):
        """Funding a fid makes the funder its owner, with its deposit, prices and signers, and says so in events."""
        c = self.c
        r = c.fund(value_wei=5 * 10**17, epoch_price=7, mib_price=11)
        self.assertEqual(c.names(r), ["Funded", "PricesChanged", "SignersChanged"])
        info = c.escrow.funds(FID)
        self.assertEqual((info.owner, info.balance_wei, info.price_per_request_wei, info.price_per_epoch_wei,
                          info.price_per_mib_wei, info.withdrawable_at), (c.owner, 5 * 10**17, PRICE, 7, 11, 0))
        self.assertTrue(c.escrow.is_signer(FID, c.tracker.address))
        self.assertTrue(c.escrow.is_signer(FID, c.caller.address))
        self.assertFalse(c.escrow.is_signer(FID, c.outsider.address))
        self.assertEqual(c.balance(c.escrow.address), 5 * 10**17)

    def test_only_the_owner_funds_again(self):
        """Someone else cannot re-fund (and so re-price or add signers to) a funded fid."""
        c = self.c
        c.fund()
        with self.assertRaises(EscrowError) as e:
            c.escrow.fund(c.stranger, FID, value_wei=1, price_per_request_wei=10**9,
                          signers=[c.outsider.address])
        self.assertEqual(e.exception.name, "NotOwner")
        self.assertFalse(c.escrow.is_signer(FID, c.outsider.address))

    def test_top_up(self):
        """The owner tops up; the balance grows and ToppedUp reports it; a stranger cannot."""
        c = self.c
        c.fund(value_wei=100)
        r = c.escrow.top_up(c.owner, FID, value_wei=50)
        self.assertEqual(c.events(r), [("ToppedUp", {"fid": FID, "amount": 50, "balance": 150})])
        self.assertEqual(c.escrow.funds(FID).balance_wei, 150)
        with self.assertRaises(EscrowError) as e:
            c.escrow.top_up(c.stranger, FID, value_wei=1)
        self.assertEqual(e.exception.name, "NotOwner")
        with self.assertRaises(EscrowError) as e:
            c.escrow.top_up(c.owner, FID2, value_wei=1)
        self.assertEqual(e.exception.name, "Unfunded")

    def test_owner_raises_prices_tops_up_and_adds_signers(self):
        """Funding again as the owner adds ether, raises prices and accepts more signers, each with its event."""
        c = self.c
        c.fund(value_wei=100)
        r = c.escrow.fund(c.owner, FID, value_wei=10, price_per_request_wei=PRICE * 2,
                          signers=[c.outsider.address])
        self.assertEqual(c.names(r), ["ToppedUp", "PricesChanged", "SignersChanged"])
        self.assertEqual(c.escrow.funds(FID).price_per_request_wei, PRICE * 2)
        self.assertTrue(c.escrow.is_signer(FID, c.outsider.address))
        self.assertTrue(c.escrow.is_signer(FID, c.tracker.address))

    def test_prices_cannot_drop_under_hosts(self):
        """An owner cannot cut the price of work already served: a lower price is refused until a withdrawal."""
        c = self.c
        c.fund()
        with self.assertRaises(EscrowError) as e:
            c.escrow.fund(c.owner, FID, value_wei=0, price_per_request_wei=PRICE - 1)
        self.assertEqual(e.exception.name, "PriceDecrease")

    def test_removed_signer_is_refused(self):
        """After the owner removes a signer, its vouchers are refused with SignerNotAccepted."""
        c = self.c
        c.fund()
        r = c.escrow.remove_signers(c.owner, FID, [c.caller.address])
        self.assertEqual(c.events(r), [("SignersChanged", {"fid": FID, "signers": [c.caller.address],
                                                           "accepted": False})])
        v, sig = c.voucher(requests=5, signer=c.caller)
        with self.assertRaises(EscrowError) as e:
            c.claim(v, sig)
        self.assertEqual(e.exception.name, "SignerNotAccepted")

    def test_withdrawal_waits_for_the_delay_and_claims_go_on(self):
        """The owner gets the unspent balance only after the delay; hosts claim meanwhile; then the fid is unfunded and vouchers are refused."""
        c = self.c
        c.fund(value_wei=10**6)
        with self.assertRaises(EscrowError) as e:
            c.escrow.withdraw(c.owner, FID)
        self.assertEqual(e.exception.name, "WithdrawalNotRequested")
        r = c.escrow.request_withdrawal(c.owner, FID)
        (name, args), = c.events(r)
        self.assertEqual(name, "WithdrawalRequested")
        self.assertEqual(c.escrow.funds(FID).withdrawable_at, args["withdrawableAt"])
        with self.assertRaises(EscrowError) as e:
            c.escrow.withdraw(c.owner, FID)
        self.assertEqual(e.exception.name, "WithdrawalTooEarly")
        v, sig = c.voucher(requests=100)
        self.assertEqual(c.claim(v, sig)[0], 100 * PRICE)
        c.travel(DELAY_S + 1)
        v, sig = c.voucher(requests=150)  # past the delay, before withdraw: still paid
        self.assertEqual(c.claim(v, sig)[0], 50 * PRICE)
        with self.assertRaises(EscrowError) as e:
            c.escrow.withdraw(c.stranger, FID)
        self.assertEqual(e.exception.name, "NotOwner")
        before = c.balance(c.owner)
        r = c.escrow.withdraw(c.owner, FID)
        rest = 10**6 - 150 * PRICE
        self.assertEqual(c.events(r), [("Withdrawn", {"fid": FID, "owner": c.owner, "amount": rest})])
        gas = r["gasUsed"] * r["effectiveGasPrice"]
        self.assertEqual(c.balance(c.owner) - before, rest - gas)
        info = c.escrow.funds(FID)
        self.assertFalse(info.funded)
        self.assertEqual(info.balance_wei, 0)
        self.assertFalse(c.escrow.is_signer(FID, c.tracker.address))
        v, sig = c.voucher(requests=200)
        with self.assertRaises(EscrowError) as e:
            c.claim(v, sig)
        self.assertEqual(e.exception.name, "Unfunded")

    def test_refunding_after_withdrawal_starts_clean(self):
        """A withdrawn fid can be funded anew (by anyone); old signers are forgotten and paid counters kept."""
        c = Chain(delay_s=0)
        c.fund(value_wei=10**6)
        c.claim(*c.voucher(requests=10))
        c.escrow.request_withdrawal(c.owner, FID)
        c.escrow.withdraw(c.owner, FID)
        c.escrow.fund(c.stranger, FID, value_wei=10**6, price_per_request_wei=PRICE,
                      signers=[c.outsider.address])
        self.assertFalse(c.escrow.is_signer(FID, c.tracker.address))
        self.assertEqual(c.escrow.funds(FID).owner, c.stranger)
        self.assertEqual(c.claim(*c.voucher(requests=10, signer=c.outsider))[0], 10 * PRICE)

    def test_cancel_withdrawal(self):
        """A cancelled withdrawal cannot be executed later without a new request."""
        c = self.c
        c.fund()
        c.escrow.request_withdrawal(c.owner, FID)
        r = c.escrow.cancel_withdrawal(c.owner, FID)
        self.assertEqual(c.names(r), ["WithdrawalCancelled"])
        c.travel(DELAY_S + 1)
        with self.assertRaises(EscrowError) as e:
            c.escrow.withdraw(c.owner, FID)
        self.assertEqual(e.exception.name, "WithdrawalNotRequested")


class ClaimTests(unittest.TestCase):
    def setUp(self):
        self.c = Chain()
        self.c.fund(epoch_price=50_000, mib_price=2**20 * 3)  # 3 wei a byte

    def test_cumulative_vouchers_pay_the_difference(self):
        """Each newer voucher pays only the requests, bytes and epochs beyond the last one paid."""
        c = self.c
        paid, r = c.claim(*c.voucher(requests=100, bytes_=1000, epochs=1))
        self.assertEqual(paid, 100 * PRICE + 3000 + 50_000)
        self.assertEqual(c.events(r), [("Claimed", {
            "fid": FID, "host": c.host, "signer": c.tracker.address, "requests": 100, "bytes_": 1000,
            "epochs": 1, "amount": paid})])
        paid, _ = c.claim(*c.voucher(requests=250, bytes_=1500, epochs=3))
        self.assertEqual(paid, 150 * PRICE + 1500 + 100_000)
        p = c.escrow.paid(FID, c.host, c.tracker.address)
        self.assertEqual((p.requests, p.bytes, p.epochs), (250, 1500, 3))
        self.assertEqual(c.escrow.funds(FID).balance_wei, 10**18 - (250 * PRICE + 4500 + 150_000))

    def test_each_signer_is_its_own_channel(self):
        """Vouchers from two signers for the same host are paid independently (a tracker and a caller key)."""
        c = self.c
        self.assertEqual(c.claim(*c.voucher(requests=10))[0], 10 * PRICE)
        self.assertEqual(c.claim(*c.voucher(requests=10, signer=c.caller))[0], 10 * PRICE)

    def test_replayed_voucher_pays_nothing(self):
        """Submitting the same voucher twice pays once; the replay changes nothing and emits nothing."""
        c = self.c
        v, sig = c.voucher(requests=100)
        c.claim(v, sig)
        self.assertEqual(c.escrow.contract.functions.claim(v.as_tuple(), sig).call({"from": c.submitter}), 0)
        paid, r = c.claim(v, sig)
        self.assertEqual(paid, 0)
        self.assertEqual(c.events(r), [])

    def test_lower_count_voucher_pays_nothing(self):
        """An older (lower) voucher submitted after a newer one pays 0 and does not roll the counters back."""
        c = self.c
        old = c.voucher(requests=100)
        new = c.voucher(requests=300)
        c.claim(*new)
        self.assertEqual(c.claim(*old)[0], 0)
        self.assertEqual(c.escrow.paid(FID, c.host, c.tracker.address).requests, 300)

    def test_stale_counter_pays_nothing_while_a_fresh_one_pays(self):
        """A voucher lower in requests but higher in epochs pays the epochs only."""
        c = self.c
        c.claim(*c.voucher(requests=100, epochs=1))
        paid, _ = c.claim(*c.voucher(requests=50, epochs=2))
        self.assertEqual(paid, 50_000)
        p = c.escrow.paid(FID, c.host, c.tracker.address)
        self.assertEqual((p.requests, p.epochs), (100, 2))

    def test_forged_signature_pays_nothing(self):
        """A voucher naming a trusted signer but signed by another key reverts BadSignature and pays nothing."""
        c = self.c
        v, _ = c.voucher(requests=10**6)
        forged = sign(c.outsider.key, c.escrow, v)
        before = c.balance(c.host)
        with self.assertRaises(EscrowError) as e:
            c.claim(v, forged)
        self.assertEqual(e.exception.name, "BadSignature")
        self.assertEqual(c.balance(c.host), before)

    def test_tampered_voucher_pays_nothing(self):
        """Raising the request count of a signed voucher breaks its signature."""
        c = self.c
        v, sig = c.voucher(requests=10)
        bumped = Voucher(fid=v.fid, host=v.host, signer=v.signer, requests=10**6, expiry=v.expiry)
        with self.assertRaises(EscrowError) as e:
            c.claim(bumped, sig)
        self.assertEqual(e.exception.name, "BadSignature")
        other_host = Voucher(fid=v.fid, host=c.host2, signer=v.signer, requests=10, expiry=v.expiry)
        with self.assertRaises(EscrowError) as e:
            c.claim(other_host, sig)
        self.assertEqual(e.exception.name, "BadSignature")

    def test_malleable_and_malformed_signatures_are_refused(self):
        """The high-s twin of a valid signature, a short one, and a bad v are all BadSignature."""
        c = self.c
        v, sig = c.voucher(requests=10)
        r, s, recid = sig[:32], int.from_bytes(sig[32:64], "big"), sig[64]
        twin = r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - recid])
        for bad in (twin, sig[:64], sig[:64] + b"\x01", sig + b"\x00"):
            with self.assertRaises(EscrowError) as e:
                c.claim(v, bad)
            self.assertEqual(e.exception.name, "BadSignature")
        self.assertEqual(c.claim(v, sig)[0], 10 * PRICE)

    def test_signer_the_owner_did_not_accept(self):
        """A correctly signed voucher from a key the owner never accepted (e.g. the host's own) reverts SignerNotAccepted."""
        c = self.c
        with self.assertRaises(EscrowError) as e:
            c.claim(*c.voucher(requests=10, signer=c.outsider))
        self.assertEqual(e.exception.name, "SignerNotAccepted")
        self.assertEqual(e.exception.error_args, (FID, c.outsider.address))

    def test_expired_voucher(self):
        """A voucher past its expiry reverts Expired."""
        c = self.c
        v, sig = c.voucher(requests=10, expiry=c.now() + 60)
        c.travel(120)
        with self.assertRaises(EscrowError) as e:
            c.claim(v, sig)
        self.assertEqual(e.exception.name, "Expired")

    def test_unfunded_fid(self):
        """A voucher for a fid nobody funded reverts Unfunded."""
        c = self.c
        with self.assertRaises(EscrowError) as e:
            c.claim(*c.voucher(requests=10, fid=FID2))
        self.assertEqual(e.exception.name, "Unfunded")

    def test_claim_is_capped_by_the_balance(self):
        """A claim owing more than the deposit pays what is left, reports the shortfall, and leaves the fid at 0."""
        c = Chain()
        c.fund(value_wei=5 * PRICE)
        paid, r = c.claim(*c.voucher(requests=8))
        self.assertEqual(paid, 5 * PRICE)
        self.assertEqual(c.names(r), ["Underpaid", "Claimed"])
        self.assertEqual(c.events(r)[0][1]["unpaid"], 3 * PRICE)
        self.assertEqual(c.escrow.funds(FID).balance_wei, 0)
        self.assertEqual(c.balance(c.escrow.address), 0)
        c.escrow.top_up(c.owner, FID, value_wei=100 * PRICE)
        self.assertEqual(c.claim(*c.voucher(requests=10))[0], 2 * PRICE)

    def test_host_refusing_ether_is_credited(self):
        """A host contract that rejects ether does not block the claim: the amount waits as credit."""
        c = self.c
        tx = c.w3.eth.send_transaction({"from": c.deployer, "data": REJECTING_HOST_INITCODE})
        bad_host = c.w3.eth.wait_for_transaction_receipt(tx)["contractAddress"]
        _, r = c.claim(*c.voucher(requests=4, host=bad_host))
        self.assertEqual(c.names(r), ["Claimed", "CreditDeferred"])
        self.assertEqual(c.escrow.credit(bad_host), 4 * PRICE)
        with self.assertRaises(EscrowError) as e:
            c.escrow.withdraw_credit(c.host)
        self.assertEqual(e.exception.name, "NoCredit")


class ReentrancyTests(unittest.TestCase):
    def setUp(self):
        self.c = Chain()
        self.c.fund(value_wei=10**6)
        self.h = self.c.hostile_host()

    def test_host_reentering_claim_is_paid_once(self):
        """A host contract that submits the same voucher again from inside its payment gets 0 the second time."""
        c, h = self.c, self.h
        v, sig = c.voucher(requests=100, host=h.address)
        c.send(h.functions.arm(c.escrow.address, c.escrow.contract.encode_abi("claim", [v.as_tuple(), sig])))
        _, r = c.claim(v, sig)
        self.assertTrue(h.functions.reentered().call())
        self.assertTrue(h.functions.innerOk().call())
        self.assertEqual(int.from_bytes(h.functions.innerReturn().call(), "big"), 0)
        self.assertEqual(h.functions.received().call(), 100 * PRICE)
        self.assertEqual(c.balance(h.address), 100 * PRICE)
        self.assertEqual(c.balance(c.escrow.address), 10**6 - 100 * PRICE)
        self.assertEqual(c.names(r), ["Claimed"])

    def test_host_reentering_batch_is_paid_once(self):
        """A host contract that replays the whole batch from inside its payment gets nothing more."""
        c, h = self.c, self.h
        pairs = [c.voucher(requests=10, host=h.address, signer=s) for s in (c.tracker, c.caller)]
        vs, sigs = [v for v, _ in pairs], [s for _, s in pairs]
        data = c.escrow.contract.encode_abi("claimBatch", [[v.as_tuple() for v in vs], sigs])
        c.send(h.functions.arm(c.escrow.address, data))
        r = c.escrow.claim_batch(c.submitter, vs, sigs)
        self.assertTrue(h.functions.innerOk().call())
        self.assertEqual(c.balance(h.address), 20 * PRICE)
        self.assertEqual(c.escrow.funds(FID).balance_wei, 10**6 - 20 * PRICE)
        self.assertEqual(c.names(r), ["Claimed", "Claimed"])

    def test_refused_payment_waits_as_credit(self):
        """A host that refuses ether is credited instead; later it takes the credit with withdrawCredit."""
        c, h = self.c, self.h
        c.send(h.functions.setRefuse(True))
        _, r = c.claim(*c.voucher(requests=3, host=h.address))
        self.assertEqual(c.names(r), ["Claimed", "CreditDeferred"])
        self.assertEqual((c.escrow.credit(h.address), c.balance(h.address)), (3 * PRICE, 0))
        c.send(h.functions.setRefuse(False))
        r = c.send(h.functions.poke(c.escrow.address, c.escrow.contract.encode_abi("withdrawCredit", [])))
        self.assertEqual(c.events(r), [("CreditWithdrawn", {"to": h.address, "amount": 3 * PRICE})])
        self.assertEqual((c.escrow.credit(h.address), c.balance(h.address)), (0, 3 * PRICE))


class BatchTests(unittest.TestCase):
    def setUp(self):
        self.c = Chain()
        for fid in (FID, FID2, FID3):
            self.c.fund(fid=fid)

    def test_batch_of_fids_and_signers(self):
        """One batch pays every (fid, signer) voucher of two hosts, each host the sum of its own."""
        c = self.c
        vs, sigs = [], []
        for fid in (FID, FID2, FID3):
            for signer, n in ((c.tracker, 100), (c.caller, 7)):
                v, s = c.voucher(requests=n, fid=fid, signer=signer)
                vs.append(v)
                sigs.append(s)
        v, s = c.voucher(requests=42, fid=FID2, host=c.host2)
        vs.append(v)
        sigs.append(s)
        b1, b2 = c.balance(c.host), c.balance(c.host2)
        r = c.escrow.claim_batch(c.submitter, vs, sigs)
        self.assertEqual(c.balance(c.host) - b1, 3 * 107 * PRICE)
        self.assertEqual(c.balance(c.host2) - b2, 42 * PRICE)
        self.assertEqual(c.names(r), ["Claimed"] * 7)
        self.assertEqual(c.escrow.paid(FID3, c.host, c.caller.address).requests, 7)
        # Replaying the whole batch pays nothing and emits nothing.
        b1 = c.balance(c.host)
        r = c.escrow.claim_batch(c.submitter, vs, sigs)
        self.assertEqual((c.balance(c.host), c.events(r)), (b1, []))

    def test_batch_skips_bad_entries_and_pays_the_rest(self):
        """Forged, unaccepted, expired, unfunded and stale vouchers in a batch are skipped; the good ones are paid."""
        c = self.c
        good, good_sig = c.voucher(requests=10)
        stale, stale_sig = c.voucher(requests=5)
        forged, _ = c.voucher(requests=10**6, fid=FID2)
        forged_sig = sign(c.outsider.key, c.escrow, forged)
        unaccepted = c.voucher(requests=10**6, fid=FID2, signer=c.outsider)
        expired = c.voucher(requests=10**6, fid=FID3, expiry=c.now() + 30)
        unfunded = c.voucher(requests=10**6, fid=b"\x09" * 32)
        good2 = c.voucher(requests=20, fid=FID3, host=c.host2)
        c.travel(60)
        vs = [good, forged, unaccepted[0], expired[0], unfunded[0], good2[0], stale]
        sigs = [good_sig, forged_sig, unaccepted[1], expired[1], unfunded[1], good2[1], stale_sig]
        b1, b2 = c.balance(c.host), c.balance(c.host2)
        r = c.escrow.claim_batch(c.submitter, vs, sigs)
        self.assertEqual(c.balance(c.host) - b1, 10 * PRICE)
        self.assertEqual(c.balance(c.host2) - b2, 20 * PRICE)
        skipped = [(a["index"], bytes(a["reason"])) for n, a in c.events(r) if n == "ClaimSkipped"]
        abi = c.escrow.artifact["abi"]
        self.assertEqual(skipped, [(1, error_selector("BadSignature", abi)),
                                   (2, error_selector("SignerNotAccepted", abi)),
                                   (3, error_selector("Expired", abi)),
                                   (4, error_selector("Unfunded", abi))])
        self.assertEqual([n for n, _ in c.events(r) if n == "Claimed"], ["Claimed"] * 2)

    def test_batch_needs_one_signature_per_voucher(self):
        """A batch whose vouchers and signatures differ in number reverts LengthMismatch."""
        c = self.c
        v, s = c.voucher(requests=1)
        with self.assertRaises(Exception) as e:
            c.escrow.contract.functions.claimBatch([v.as_tuple()], []).call()
        self.assertEqual(c.escrow._translate(e.exception).name, "LengthMismatch")
        with self.assertRaises(ValueError):
            c.escrow.claim_batch(c.submitter, [v], [])

    def test_a_batch_costs_less_than_its_claims_one_by_one(self):
        """Ten vouchers for one host cost less gas in one batch than in ten claims (one transfer, one base fee)."""
        c = self.c
        pairs = [c.voucher(requests=10, fid=fid, signer=s) for fid in (FID, FID2, FID3)
                 for s in (c.tracker, c.caller)]
        batch = c.escrow.claim_batch(c.submitter, [v for v, _ in pairs], [s for _, s in pairs])["gasUsed"]
        singles = 0
        for fid in (FID, FID2, FID3):
            for s in (c.tracker, c.caller):
                singles += c.claim(*c.voucher(requests=20, fid=fid, signer=s))[1]["gasUsed"]
        self.assertLess(batch, singles)


class ClaimScanTests(unittest.TestCase):
    """Escrow.claims and paid_by_host: what `orb info` shows as a fid's paid totals."""

    def setUp(self):
        c = self.c = Chain()
        c.fund()
        c.fund(fid=FID2)
        self.start = c.w3.eth.block_number + 1
        c.claim(*c.voucher(requests=10))
        c.claim(*c.voucher(requests=25))
        c.claim(*c.voucher(requests=5, signer=c.caller))
        self.replay = c.voucher(requests=7, host=c.host2)
        c.claim(*self.replay)
        self.batch_block = c.escrow.claim_batch(c.submitter, *zip(
            c.voucher(requests=4, host=c.host2, signer=c.caller),
            c.voucher(requests=30)))["blockNumber"]
        c.claim(*c.voucher(requests=100, fid=FID2))  # another fid: never counted

    def test_totals_across_hosts_and_signers(self):
        """Per host: each signer's latest cumulative requests summed over signers, the wei received, the claims."""
        c = self.c
        scan = c.escrow.claims(FID)
        self.assertFalse(scan.truncated)
        self.assertEqual(scan.to_block, c.w3.eth.block_number)
        self.assertEqual([(x.host, x.signer, x.requests) for x in scan.claims], [
            (c.host, c.tracker.address, 10), (c.host, c.tracker.address, 25), (c.host, c.caller.address, 5),
            (c.host2, c.tracker.address, 7), (c.host2, c.caller.address, 4), (c.host, c.tracker.address, 30)])
        self.assertEqual([x.amount_wei for x in scan.claims], [p * PRICE for p in (10, 15, 5, 7, 4, 5)])
        self.assertTrue(all(x.tx.startswith("0x") and len(x.tx) == 66 for x in scan.claims))
        self.assertEqual(scan.claims[-1].block, self.batch_block)
        self.assertEqual(paid_by_host(scan.claims), [
            contract.HostPaid(c.host, 35, 0, 0, 35 * PRICE, 4, self.batch_block),
            contract.HostPaid(c.host2, 11, 0, 0, 11 * PRICE, 2, self.batch_block)])
        # The wei the scan finds is what left the fid's balance.
        self.assertEqual(sum(x.amount_wei for x in scan.claims), 10**18 - c.escrow.funds(FID).balance_wei)

    def test_replayed_and_stale_vouchers_add_nothing(self):
        """A replayed voucher, or a lower one, claimed again leaves the paid totals as they were."""
        c = self.c
        before = paid_by_host(c.escrow.claims(FID).claims)
        c.claim(*self.replay)
        c.claim(*c.voucher(requests=3, host=c.host2))
        scan = c.escrow.claims(FID)
        self.assertEqual(len(scan.claims), 6)
        self.assertEqual(paid_by_host(scan.claims), before)

    def test_scan_is_chunked(self):
        """The scan asks the node for at most LOG_CHUNK_BLOCKS blocks at a time, and finds the same claims."""
        c = self.c
        whole = c.escrow.claims(FID)
        ranges = []
        get_logs = c.w3.eth.get_logs

        def counting(params):
            ranges.append((params["fromBlock"], params["toBlock"]))
            return get_logs(params)

        self.patch(c.w3.eth, "get_logs", counting)
        self.patch(contract, "LOG_CHUNK_BLOCKS", 2)
        scan = c.escrow.claims(FID)
        self.assertEqual(scan, whole)
        latest = c.w3.eth.block_number
        self.assertEqual(ranges, [(b, min(b + 1, latest)) for b in range(0, latest + 1, 2)])
        ranges.clear()
        self.assertEqual(c.escrow.claims(FID, from_block=self.start, to_block=self.start + 2).claims,
                         whole.claims[:3])
        self.assertEqual(ranges, [(self.start, self.start + 1), (self.start + 2, self.start + 2)])

    def test_scan_is_capped_at_whole_blocks(self):
        """Past MAX_CLAIM_EVENTS the scan stops at a block boundary, says it was truncated, and can go on from there."""
        c = self.c
        self.patch(contract, "MAX_CLAIM_EVENTS", 5)
        scan = c.escrow.claims(FID)
        # The 5th and 6th claims share the batch's block: both are left for the next scan.
        self.assertTrue(scan.truncated)
        self.assertEqual(len(scan.claims), 4)
        self.assertEqual(scan.to_block, self.batch_block - 1)
        rest = c.escrow.claims(FID, from_block=scan.to_block + 1)
        self.assertFalse(rest.truncated)
        self.assertEqual([x.requests for x in rest.claims], [4, 30])
        self.patch(contract, "MAX_CLAIM_EVENTS", 6)
        self.assertFalse(c.escrow.claims(FID).truncated)

    def test_unclaimed_fid_has_no_claims(self):
        """A fid nobody claimed for scans to nothing, not to another fid's claims."""
        scan = self.c.escrow.claims(FID3)
        self.assertEqual((scan.claims, scan.truncated, paid_by_host(scan.claims)), ((), False, []))


class EventCoverageTests(unittest.TestCase):
    def test_every_event_in_the_abi_is_emitted_by_some_state_change(self):
        """A session of funding, claims, a refused transfer and its credit, a skipped batch entry and a withdrawal emits every event the contract declares."""
        c = Chain(delay_s=0)
        seen = set()

        def note(receipt):
            seen.update(c.names(receipt))

        note(c.fund(value_wei=50 * PRICE))
        note(c.escrow.top_up(c.owner, FID, value_wei=PRICE))
        note(c.escrow.remove_signers(c.owner, FID, [c.caller.address]))
        note(c.escrow.request_withdrawal(c.owner, FID))
        note(c.escrow.cancel_withdrawal(c.owner, FID))
        h = c.hostile_host()
        c.send(h.functions.setRefuse(True))
        note(c.claim(*c.voucher(requests=1, host=h.address))[1])
        c.send(h.functions.setRefuse(False))
        note(c.send(h.functions.poke(c.escrow.address, c.escrow.contract.encode_abi("withdrawCredit", []))))
        v, s = c.voucher(requests=1, signer=c.caller)
        note(c.escrow.claim_batch(c.submitter, [v], [s]))
        note(c.claim(*c.voucher(requests=100))[1])
        note(c.escrow.request_withdrawal(c.owner, FID))
        note(c.escrow.withdraw(c.owner, FID))
        declared = {e["name"] for e in c.escrow.artifact["abi"] if e["type"] == "event"}
        self.assertEqual(declared - seen, set())
