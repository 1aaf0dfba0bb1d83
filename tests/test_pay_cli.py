"""
The payment verbs, run as real `orb` processes against a real `twistd
orb-chain` started and stopped by each test: orb wallet new|show|balance|
claim|withdraw and orb fund, their --json documents and exit statuses.
"""

import contextlib
import io
import json
import os
import stat

from eth_account import Account
from twisted.internet import defer, threads
from twisted.trial.unittest import SynchronousTestCase, TestCase

from orb.cli import _wallet as W
from orb.pay import chain as C
from orb.pay import client
from orb.pay import voucher as V
from orb.protocol import fid as fidmod

from ._daemons import DaemonTestMixin

FID = fidmod.fid_for(b"orb pay cli test")
FID_TEXT = fidmod.to_text(FID)


def write_raw_wallet(path, private_key_hex):
    """A wallet file holding a dev account's key (the raw format `orb wallet new` writes without a passphrase)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, private_key_hex.encode() + b"\n")
    os.close(fd)
    return path


class HelpTests(SynchronousTestCase):
    def run_help(self, *argv):
        from orb.cli import main

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(main.main([*argv, "--help"]), 0)
        return out.getvalue()

    def test_verbs_take_json_and_list_exit_statuses(self):
        """Every payment verb takes --json and its help lists the payment exit statuses 12 to 16."""
        for argv in (("wallet", "new"), ("wallet", "show"), ("wallet", "balance"), ("wallet", "claim"),
                     ("wallet", "withdraw"), ("wallet", "pay"), ("fund",)):
            out = self.run_help(*argv)
            self.assertIn("--json", out, argv)
            for status in range(12, 17):
                self.assertIn(f"\n  {status}   ", out, argv)
        self.assertIn("--eth-rpc", self.run_help("fund"))


class InfoPaidTests(SynchronousTestCase):
    """`orb info --eth-rpc`'s paid totals, on an in-process chain (tests.test_contract.Chain) behind the CLI's code."""

    def setUp(self):
        from orb.pay.contract import fid_key

        from .test_contract import Chain

        self.c = Chain()
        self.patch(W, "_web3", lambda args: self.c.w3)
        self.key = fid_key(FID)
        self.c.fund(fid=self.key, price=10**12)

    def claim(self, requests, host=None, signer=None):
        self.c.claim(*self.c.voucher(requests=requests, fid=self.key, host=host, signer=signer))

    def info(self, as_json=False):
        """(the document, the printed output) of `orb info FID --eth-rpc ...` past the tracker's answer."""
        import argparse

        from orb.cli import _network

        args = argparse.Namespace(fid=FID_TEXT, eth_rpc="http://chain.invalid", escrow=self.c.escrow.address,
                                  json=as_json)
        doc = {"ok": True, "fid": FID_TEXT, "dns_name": FID_TEXT + ".orb", "gateway_url": "http://t/f/" + FID_TEXT}
        _network.add_funding(args, doc)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(_network.print_info(args, doc), 0)
        return doc, out.getvalue()

    def test_paid_totals_per_host(self):
        """info shows the wei paid, to how many hosts, for how many requests, and one line a host, most paid first."""
        c = self.c
        doc, out = self.info()
        self.assertRegex(out, r"\npaid\s+nothing yet \(no claim up to block \d+\)")
        self.claim(10)
        self.claim(25)
        self.claim(5, signer=c.caller)
        self.claim(7, host=c.host2)
        self.claim(7, host=c.host2)  # a replay: no claim, nothing paid
        doc, out = self.info()
        self.assertIn("\npaid        0.000037 ETH to 2 hosts for 37 requests (4 claims)\n", out)
        self.assertRegex(out, rf"\n {{12}}{c.host}  0\.00003 ETH for 30 requests, 3 claims, last in block \d+\n")
        self.assertRegex(out, rf"\n {{12}}{c.host2}  0\.000007 ETH for 7 requests, 1 claim, last in block \d+\n")
        self.assertLess(out.index(c.host), out.index(c.host2))
        doc, out = self.info(as_json=True)
        self.assertEqual(json.loads(out), doc)
        paid = doc["funding"]["paid"]
        self.assertEqual({k: v for k, v in paid.items() if k != "hosts"}, {
            "total_wei": str(37 * 10**12), "total_eth": "0.000037", "claims": 4, "requests": 37,
            "from_block": 0, "to_block": doc["funding"]["block"], "truncated": False, "underpaid_wei": "0",
            "underpaid_claims": 0})
        self.assertEqual(paid["hosts"][1], {
            "host": c.host2, "requests": 7, "bytes": 0, "epochs": 0, "amount_wei": str(7 * 10**12),
            "amount_eth": "0.000007", "claims": 1, "last_claim_block": paid["hosts"][1]["last_claim_block"]})
        self.assertEqual(doc["funding"]["balance_wei"], str(10**18 - 37 * 10**12))

    def test_a_claim_past_the_deposit_shows_as_underpaid(self):
        """A voucher owing more than the balance is paid what is left; info says how much went unpaid."""
        self.claim(10**6 + 5)  # 1 ETH deposited at 10^12 wei a request pays 10^6 requests
        doc, out = self.info()
        paid = doc["funding"]["paid"]
        self.assertEqual((paid["total_wei"], paid["underpaid_wei"], paid["underpaid_claims"]),
                         (str(10**18), str(5 * 10**12), 1))
        self.assertIn("\nunderpaid   5000000000000 wei owed beyond the deposit in 1 claim(s)", out)

    def test_many_hosts_are_counted_past_ten(self):
        """Past ten hosts, info lists the ten most paid and counts the rest; --json lists them all."""
        for i in range(12):
            self.claim(i + 1, host=Account.create().address)
        doc, out = self.info()
        self.assertIn("0.000078 ETH to 12 hosts for 78 requests (12 claims)", out)
        self.assertEqual(out.count(" ETH for "), 10)
        self.assertIn("for 12 requests", out)
        self.assertNotIn("for 2 requests", out)
        self.assertIn("and 2 more hosts (--json lists them all)", out)
        self.assertEqual(len(doc["funding"]["paid"]["hosts"]), 12)

    def test_truncated_scan_says_so(self):
        """When the claims are too many to read, info counts those up to a block and says it did."""
        from orb.pay import contract

        self.claim(1)
        self.claim(2)
        self.patch(contract, "MAX_CLAIM_EVENTS", 1)
        doc, out = self.info()
        self.assertTrue(doc["funding"]["paid"]["truncated"])
        self.assertRegex(out, r"for 1 request \(1 claim\); only the claims up to block \d+ are counted")

    def test_help_documents_every_paid_key(self):
        """orb info --help names every key of the --json "paid" document, so a script knows what to read."""
        self.claim(1)
        doc, _ = self.info()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            from orb.cli import main

            self.assertEqual(main.main(["info", "--help"]), 0)
        text = " ".join(out.getvalue().split())
        paid = doc["funding"]["paid"]
        for key in [*paid, *paid["hosts"][0], "block", "paid_warning"]:
            if not key.endswith("_eth"):  # the _eth twins of the _wei amounts
                self.assertIn(f'"{key}"', text)

    def test_unreadable_claims_are_a_warning(self):
        """A node that refuses eth_getLogs still shows the balance; the paid totals become a warning line."""
        def refuse(params):
            raise ValueError("eth_getLogs is disabled here")

        self.patch(self.c.w3.eth, "get_logs", refuse)
        doc, out = self.info()
        self.assertEqual(doc["funding"]["balance_wei"], str(10**18))
        self.assertNotIn("paid", doc["funding"])
        self.assertRegex(out, r"\nbalance\s+1 ETH on escrow")
        self.assertIn("\npaid        warning: the paid totals could not be read: ValueError: eth_getLogs is "
                      "disabled", out)


class WalletFileTests(DaemonTestMixin, TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_new_show_and_refuse(self):
        """wallet new writes a 0600 key and prints its address; a second new is refused (4); show prints the same."""
        code, out, err = yield self.orb("wallet", "new", "--json")
        self.assertEqual(code, 0, err)
        doc = json.loads(out)
        self.assertEqual(stat.S_IMODE(os.stat(doc["path"]).st_mode), 0o600)
        self.assertFalse(doc["encrypted"])
        with open(doc["path"]) as f:
            self.assertNotIn(f.read().strip()[2:], out + err)  # the key is never printed
        code, out2, err = yield self.orb("wallet", "new")
        self.assertEqual(code, 4)
        self.assertIn("exists already", err)
        code, out3, _ = yield self.orb("wallet", "show")
        self.assertEqual((code, out3.strip()), (0, doc["address"]))

    @defer.inlineCallbacks
    def test_passphrase(self):
        """With --passphrase-file the wallet is a keystore; show needs no passphrase; a wrong one exits 13."""
        base = self.base_dir()
        good, bad = os.path.join(base, "pw"), os.path.join(base, "bad")
        for path, text in ((good, "right one\n"), (bad, "wrong one\n")):
            with open(path, "w") as f:
                f.write(text)
        wallet = os.path.join(base, "enc", "wallet.json")
        code, out, err = yield self.orb("wallet", "new", "--wallet", wallet, "--passphrase-file", good, "--json")
        self.assertEqual(code, 0, err)
        address = json.loads(out)["address"]
        with open(wallet) as f:
            self.assertEqual(json.load(f)["version"], 3)
        code, out, _ = yield self.orb("wallet", "show", "--wallet", wallet, "--json")
        self.assertEqual((json.loads(out)["address"], json.loads(out)["encrypted"]), (address, True))
        code, out, err = yield self.orb("fund", FID_TEXT, "--eth", "1", "--price-wei", "1", "--wallet", wallet,
                                        "--passphrase-file", bad, "--json", "--eth-rpc", "http://127.0.0.1:1")
        self.assertEqual(code, W.EXIT_PASSPHRASE, err)
        self.assertEqual(json.loads(out)["error"]["kind"], "passphrase")
        code, out, err = yield self.orb("fund", FID_TEXT, "--eth", "1", "--price-wei", "1", "--wallet", wallet,
                                        "--eth-rpc", "http://127.0.0.1:1")
        self.assertEqual(code, W.EXIT_PASSPHRASE, err)

    @defer.inlineCallbacks
    def test_no_chain(self):
        """With no chain at --eth-rpc, balance exits 12 with a JSON error naming the URL."""
        yield self.orb("wallet", "new")
        code, out, err = yield self.orb("wallet", "balance", "--eth-rpc", "http://127.0.0.1:1", "--json")
        self.assertEqual(code, W.EXIT_NO_CHAIN, err)
        self.assertIn("127.0.0.1:1", json.loads(out)["error"]["message"])

    @defer.inlineCallbacks
    def test_bad_arguments(self):
        """A bad fid, --eth or --signer exits 2 before anything is sent."""
        yield self.orb("wallet", "new")
        for argv in (("fund", "nope", "--eth", "1", "--price-wei", "1"),
                     ("fund", FID_TEXT, "--eth", "-1", "--price-wei", "1"),
                     ("fund", FID_TEXT, "--eth", "1e-30", "--price-wei", "1"),
                     ("fund", FID_TEXT, "--eth", "1", "--price-wei", "1", "--signer", "0x12")):
            code, out, err = yield self.orb(*argv, "--eth-rpc", "http://127.0.0.1:1")
            self.assertEqual(code, 2, (argv, err))


class ChainCliTests(DaemonTestMixin, TestCase):
    timeout = 240

    @defer.inlineCallbacks
    def start_chain(self):
        chain = yield DaemonTestMixin.start_chain(self)
        self.url = f"http://127.0.0.1:{chain.info['http']}"
        self.domain = V.Domain(chain_id=chain.info["chain_id"], contract=chain.info["escrow"])
        accounts = C.load_dev_accounts(chain.data_dir)
        home = os.path.join(self.base_dir(), "owner")
        self.owner_wallet = write_raw_wallet(os.path.join(home, "owner.json"), accounts[1]["private_key"])
        self.host_wallet = write_raw_wallet(os.path.join(home, "host.json"), accounts[2]["private_key"])
        self.host = accounts[2]["address"]
        self.signer = Account.create()
        return chain

    def chain_orb(self, *argv, wallet=None):
        extra = ["--eth-rpc", self.url, "--json"] + (["--wallet", wallet] if wallet else [])
        return self.orb(*argv, *extra)

    def voucher_file(self, name, requests, raw_fid=FID):
        v = V.Voucher(fid=V.fid_bytes32(raw_fid), host=self.host, signer=self.signer.address, requests=requests,
                      bytes=3 * 2**20, epochs=0, expiry=2**40)
        path = os.path.join(self.base_dir(), name)
        with open(path, "w") as f:
            f.write(V.sign(self.domain, v, self.signer.key).to_json())
        return path

    @defer.inlineCallbacks
    def test_fund_claim_withdraw(self):
        """An owner funds a fid, the host claims its voucher once (a replay pays 0), the owner withdraws after the delay."""
        yield self.start_chain()
        code, out, err = yield self.chain_orb("fund", FID_TEXT, "--eth", "0.5", "--price-wei", "1000000000000",
                                              "--mib-price-wei", "7", "--signer", self.signer.address,
                                              wallet=self.owner_wallet)
        self.assertEqual(code, 0, err)
        doc = json.loads(out)
        self.assertEqual((doc["balance_wei"], doc["price_per_request_wei"], doc["price_per_mib_wei"]),
                         (str(5 * 10**17), str(10**12), "7"))

        code, out, err = yield self.chain_orb("wallet", "balance", wallet=self.host_wallet)
        before = int(json.loads(out)["balance_wei"])

        code, out, err = yield self.chain_orb("wallet", "claim", "--voucher", self.voucher_file("v1.json", 1000),
                                              wallet=self.host_wallet)
        self.assertEqual(code, 0, err)
        claim = json.loads(out)
        self.assertEqual((claim["claimed"], claim["paid_wei"]), (1, str(1000 * 10**12 + 3 * 7)))
        code, out, err = yield self.chain_orb("wallet", "balance", wallet=self.host_wallet)
        after = int(json.loads(out)["balance_wei"])
        self.assertEqual(after - before, int(claim["paid_wei"]) - int(claim["fee_wei"]))

        # The same voucher again: nothing grew, nothing is sent.
        code, out, err = yield self.chain_orb("wallet", "claim", "--voucher", self.voucher_file("v1b.json", 1000),
                                              wallet=self.host_wallet)
        self.assertEqual((code, json.loads(out)["claimed"]), (0, 0), err)
        # A lower one is refused by the book.
        code, out, err = yield self.chain_orb("wallet", "claim", "--voucher", self.voucher_file("v0.json", 10),
                                              wallet=self.host_wallet)
        self.assertEqual(code, 3, err)
        self.assertIn("lower", err)

        code, out, err = yield self.chain_orb("wallet", "withdraw", FID_TEXT, wallet=self.host_wallet)
        self.assertEqual(code, W.EXIT_REFUSED_BY_ESCROW, err)
        code, out, err = yield self.chain_orb("wallet", "withdraw", FID_TEXT, wallet=self.owner_wallet)
        self.assertEqual((code, json.loads(out)["action"]), (0, "requested"), err)
        code, out, err = yield self.chain_orb("wallet", "withdraw", FID_TEXT, wallet=self.owner_wallet)
        self.assertEqual((code, json.loads(out)["error"]["kind"]), (W.EXIT_REFUSED_BY_ESCROW, "too_early"), err)

        # Claims stay possible until the withdrawal runs.
        code, out, err = yield self.chain_orb("wallet", "claim", "--voucher", self.voucher_file("v2.json", 1500),
                                              wallet=self.host_wallet)
        self.assertEqual((code, json.loads(out)["paid_wei"]), (0, str(500 * 10**12)), err)

        def jump():
            w3 = client.connect(self.url)
            w3.provider.make_request("evm_increaseTime", [601])

        yield threads.deferToThread(jump)
        code, out, err = yield self.chain_orb("wallet", "withdraw", FID_TEXT, wallet=self.owner_wallet)
        self.assertEqual(code, 0, err)
        doc = json.loads(out)
        self.assertEqual((doc["action"], doc["amount_wei"]),
                         ("withdrawn", str(5 * 10**17 - 1500 * 10**12 - 21)))

        code, out, err = yield self.chain_orb("wallet", "withdraw", FID_TEXT, wallet=self.owner_wallet)
        self.assertEqual(code, W.EXIT_UNFUNDED, err)
        code, out, err = yield self.chain_orb("wallet", "claim", "--voucher", self.voucher_file("v3.json", 2000),
                                              wallet=self.host_wallet)
        self.assertEqual((code, json.loads(out)["error"]["kind"]), (W.EXIT_UNFUNDED, "unfunded"), err)

    @defer.inlineCallbacks
    def test_a_caller_the_owner_accepts_pays_a_host_directly(self):
        """orb wallet pay signs cumulative vouchers as an accepted caller; the host claims them; others are refused."""
        chain = yield self.start_chain()
        accounts = C.load_dev_accounts(chain.data_dir)
        caller_wallet = write_raw_wallet(os.path.join(self.base_dir(), "caller.json"), accounts[3]["private_key"])
        stranger_wallet = write_raw_wallet(os.path.join(self.base_dir(), "stranger.json"), accounts[4]["private_key"])
        pay = ("wallet", "pay", FID_TEXT, "--host", self.host)
        code, out, err = yield self.chain_orb(*pay, "--requests", "5", wallet=caller_wallet)
        self.assertEqual((code, json.loads(out)["error"]["kind"]), (W.EXIT_UNFUNDED, "unfunded"), err)
        code, out, err = yield self.chain_orb("fund", FID_TEXT, "--eth", "0.5", "--price-wei", "1000000000000",
                                              "--signer", accounts[3]["address"], wallet=self.owner_wallet)
        self.assertEqual(code, 0, err)
        code, out, err = yield self.chain_orb(*pay, "--requests", "5", wallet=stranger_wallet)
        self.assertEqual((code, json.loads(out)["error"]["kind"]), (W.EXIT_REFUSED_BY_ESCROW, "not_a_signer"), err)
        code, out, err = yield self.chain_orb(*pay, wallet=caller_wallet)
        self.assertEqual(code, 2, err)  # nothing to add
        voucher = os.path.join(self.base_dir(), "from-caller.json")
        code, out, err = yield self.chain_orb(*pay, "--requests", "5", "--out", voucher, wallet=caller_wallet)
        self.assertEqual((code, json.loads(out)["requests"]), (0, 5), err)
        code, out, err = yield self.chain_orb(*pay, "--requests", "3", "--out", voucher, wallet=caller_wallet)
        doc = json.loads(out)
        self.assertEqual((code, doc["requests"], doc["signer"]), (0, 8, accounts[3]["address"]), err)
        self.assertEqual(os.stat(doc["tally"]).st_mode & 0o777, 0o600)
        code, out, err = yield self.chain_orb("wallet", "claim", "--voucher", voucher, wallet=self.host_wallet)
        self.assertEqual((code, json.loads(out)["paid_wei"]), (0, str(8 * 10**12)), err)

    @defer.inlineCallbacks
    def test_refusals(self):
        """An empty wallet cannot fund (14); a non-owner cannot change a fid (16); an owner cannot lower prices (16)."""
        yield self.start_chain()
        code, out, err = yield self.orb("wallet", "new")
        self.assertEqual(code, 0, err)
        code, out, err = yield self.chain_orb("fund", FID_TEXT, "--eth", "1", "--price-wei", "1")
        self.assertEqual((code, json.loads(out)["error"]["kind"]), (W.EXIT_FUNDS, "funds"), err)
        code, out, err = yield self.chain_orb("fund", FID_TEXT, "--eth", "0.1", "--price-wei", "5",
                                              wallet=self.owner_wallet)
        self.assertEqual(code, 0, err)
        code, out, err = yield self.chain_orb("fund", FID_TEXT, "--eth", "0.1", "--price-wei", "5",
                                              wallet=self.host_wallet)
        self.assertEqual((code, json.loads(out)["contract_error"]), (W.EXIT_REFUSED_BY_ESCROW, "NotOwner"))
        code, out, err = yield self.chain_orb("fund", FID_TEXT, "--eth", "0", "--price-wei", "4",
                                              wallet=self.owner_wallet)
        self.assertEqual((code, json.loads(out)["contract_error"]),
                         (W.EXIT_REFUSED_BY_ESCROW, "PriceDecrease"))
        code, out, err = yield self.chain_orb("wallet", "balance", wallet=self.owner_wallet)
        self.assertEqual(json.loads(out)["escrow"], self.domain.contract)
