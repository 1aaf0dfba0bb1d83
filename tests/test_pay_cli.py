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
                     ("wallet", "withdraw"), ("fund",)):
            out = self.run_help(*argv)
            self.assertIn("--json", out, argv)
            for status in range(12, 17):
                self.assertIn(f"\n  {status}   ", out, argv)
        self.assertIn("--eth-rpc", self.run_help("fund"))


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
