"""
`orb deploy --fund` and `orb info` with a chain, as real processes: a
`twistd orb-chain`, a tracker that signs vouchers (--eth-rpc), the `orb`
command. The deploy funds the function with the tracker's signer accepted;
info shows the balance, prices and paid totals, and a dead chain is only a
warning.
"""

import json
import os

from eth_account import Account
from twisted.internet import defer, threads
from twisted.trial.unittest import TestCase

from orb.pay import chain as C
from orb.pay import client
from orb.pay.contract import Escrow, Voucher
from orb.protocol import fid as fidmod

from ._daemons import DaemonTestMixin
from .test_pay_cli import write_raw_wallet

PRICE_WEI = 10**12


class DeployFundTests(DaemonTestMixin, TestCase):
    timeout = 240

    @defer.inlineCallbacks
    def setup_net(self, eth_rpc=True):
        chain = yield self.net.start_chain("chain", "--withdraw-delay", "600")
        url = f"http://127.0.0.1:{chain.info['http']}"
        accounts = C.load_dev_accounts(chain.data_dir)
        wallet = write_raw_wallet(os.path.join(self.base_dir(), "owner", "wallet.json"), accounts[1]["private_key"])
        t1 = yield self.start_tracker("t1", *(("--eth-rpc", url) if eth_rpc else ()))
        fn = os.path.join(self.base_dir(), "adder")
        for argv in (("keygen",), ("init", fn, "--template", "python", "--name", "adder")):
            code, _, err = yield self.orb(*argv)
            self.assertEqual(code, 0, err)
        return chain, url, wallet, t1, fn

    def where(self, t1):
        return ("--tracker", t1.wire_text, "--api", f"http://127.0.0.1:{t1.info['http']}")

    @defer.inlineCallbacks
    def test_deploy_fund_then_info(self):
        """deploy --fund funds the fid with the tracker's signer accepted; info shows balance, price, funder, paid."""
        chain, url, wallet, t1, fn = yield self.setup_net()
        _, stats = yield t1.get_json("/api/v1/stats")
        caller = Account.create()
        extra = caller.address.lower()
        code, out, err = yield self.orb("deploy", fn, *self.where(t1), "--no-wait", "--fund", "--eth", "0.01",
                                        "--price-wei", str(PRICE_WEI), "--signer", extra, "--eth-rpc", url, "--json")
        self.assertEqual(code, 0, out + err)
        doc = json.loads(out)
        funding = doc["funding"]
        self.assertEqual(funding["deposit_wei"], str(10**16))
        self.assertEqual(funding["price_per_request_wei"], str(PRICE_WEI))
        self.assertEqual([s.lower() for s in funding["signers"]], [stats["eth_signer"].lower(), extra])
        self.assertEqual(funding["owner"], accounts_address(chain, 1))
        self.assertTrue(funding["tx"].startswith("0x") and funding["gas_used"] > 0)

        def on_chain():
            escrow = Escrow(client.connect(url), chain.info["escrow"])
            raw = fidmod.from_text(doc["fid"])
            return escrow.funds(raw).balance_wei, escrow.is_signer(raw, stats["eth_signer"])

        balance, accepted = yield threads.deferToThread(on_chain)
        self.assertEqual((balance, accepted), (10**16, True))

        code, out, err = yield self.orb("info", doc["fid"], "--api", f"http://127.0.0.1:{t1.info['http']}",
                                        "--eth-rpc", url)
        self.assertEqual(code, 0, out + err)
        self.assertRegex(out, r"balance\s+0\.01 ETH on escrow 0x")
        self.assertRegex(out, rf"prices\s+{PRICE_WEI} wei a request")
        self.assertIn(accounts_address(chain, 1), out)
        self.assertRegex(out, r"\npaid\s+nothing yet")

        def claim(requests):
            """The host (dev account 2) claims the caller key's voucher for ``requests`` calls."""
            escrow = Escrow(client.connect(url), chain.info["escrow"])
            host = Account.from_key(C.load_dev_accounts(chain.data_dir)[2]["private_key"])
            v = Voucher(fid=fidmod.from_text(doc["fid"]), host=host.address, signer=caller.address,
                        requests=requests)
            escrow.claim(host, v, Account.sign_typed_data(caller.key, full_message=escrow.typed_data(v)).signature)
            return host.address

        yield threads.deferToThread(claim, 3)
        host = yield threads.deferToThread(claim, 5)
        code, out, err = yield self.orb("info", doc["fid"], "--api", f"http://127.0.0.1:{t1.info['http']}",
                                        "--eth-rpc", url)
        self.assertEqual(code, 0, out + err)
        self.assertRegex(out, r"\npaid\s+0\.000005 ETH to 1 host for 5 requests \(2 claims\)\n")
        self.assertRegex(out, rf"\n\s+{host}  0\.000005 ETH for 5 requests, 2 claims, last in block \d+\n")
        code, out, err = yield self.orb("info", doc["fid"], "--api", f"http://127.0.0.1:{t1.info['http']}",
                                        "--eth-rpc", url, "--json")
        funding = json.loads(out)["funding"]
        self.assertEqual(funding["balance_wei"], str(10**16 - 5 * PRICE_WEI))
        self.assertEqual((funding["paid"]["total_wei"], funding["paid"]["claims"], funding["paid"]["requests"],
                          [h["host"] for h in funding["paid"]["hosts"]]), (str(5 * PRICE_WEI), 2, 5, [host]))
        # A chain that does not answer is a warning line, never a failure of info.
        code, out, err = yield self.orb("info", doc["fid"], "--api", f"http://127.0.0.1:{t1.info['http']}",
                                        "--eth-rpc", "http://127.0.0.1:9")
        self.assertEqual(code, 0, out + err)
        self.assertIn("warning: the funding could not be read", out)
        self.assertIn("replicas", out)

    @defer.inlineCallbacks
    def test_funded_though_short_of_replicas(self):
        """A deploy the tracker accepted but that has no replicas by --timeout (9) is funded all the same."""
        chain, url, wallet, t1, fn = yield self.setup_net()
        code, out, err = yield self.orb("deploy", fn, *self.where(t1), "--timeout", "1", "--fund", "--eth", "0.02",
                                        "--price-wei", "5", "--eth-rpc", url, "--json")
        self.assertEqual(code, 9, out + err)
        doc = json.loads(out)
        self.assertEqual(doc["funding"]["deposit_wei"], str(2 * 10**16))
        self.assertEqual(doc["funding"]["fid"], doc["fid"])
        code, out, err = yield self.orb("info", doc["fid"], "--api", f"http://127.0.0.1:{t1.info['http']}",
                                        "--eth-rpc", url, "--json")
        self.assertEqual((code, json.loads(out)["funding"]["price_per_request_wei"]), (0, "5"), err)

    @defer.inlineCallbacks
    def test_refusals(self):
        """--fund without --eth, or --eth without --fund, is a usage error (2); no signer, no deploy."""
        chain, url, wallet, t1, fn = yield self.setup_net(eth_rpc=False)
        code, out, err = yield self.orb("deploy", fn, *self.where(t1), "--no-wait", "--fund", "--price-wei", "1")
        self.assertEqual(code, 2, out + err)
        self.assertIn("--fund needs --eth", err)
        code, out, err = yield self.orb("deploy", fn, *self.where(t1), "--no-wait", "--eth", "0.1")
        self.assertEqual(code, 2, out + err)
        self.assertIn("only make sense with --fund", err)
        code, out, err = yield self.orb("deploy", fn, *self.where(t1), "--no-wait", "--fund", "--eth", "0.01",
                                        "--price-wei", "1", "--eth-rpc", url, "--json")
        self.assertNotEqual(code, 0, out + err)
        self.assertIn("signs no vouchers", out + err)
        code, out, err = yield self.orb("ls", "--api", f"http://127.0.0.1:{t1.info['http']}", "--json")
        self.assertEqual(json.loads(out)["total"], 0)  # nothing was deployed


def accounts_address(chain, i):
    return C.load_dev_accounts(chain.data_dir)[i]["address"]
