"""
Payments with real daemons (RFC 10.10): a `twistd orb-chain`, a tracker
that signs vouchers (--eth-rpc), peers paid to their wallets (--eth-rpc,
--wallet), a function deployed and funded with the tracker as its signer,
called N times: the hosts ask for vouchers, claim them on their own, and
the escrow pays exactly N x the price.
"""

import json
import os

from twisted.internet import defer, threads
from twisted.trial.unittest import TestCase

from orb.pay import chain as C
from orb.pay import client
from orb.pay.contract import Escrow
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol.codes import ResultStatus
from tests._daemons import DaemonTestMixin, eventually, sleep
from tests.test_pay_cli import write_raw_wallet

PRICE_WEI = 10**12
CALLS = 6


class PaidCallsTests(DaemonTestMixin, TestCase):
    timeout = 300

    @defer.inlineCallbacks
    def test_calls_served_are_paid_by_automatic_claims(self):
        """N calls through the tracker: the hosts' automatic claims take N x price from the escrow, paid to them."""
        from orb.devnet import open_session

        chain = yield self.start_chain()
        url = f"http://127.0.0.1:{chain.info['http']}"
        accounts = C.load_dev_accounts(chain.data_dir)
        base = self.base_dir()
        owner_wallet = write_raw_wallet(os.path.join(base, "owner", "owner.json"), accounts[1]["private_key"])
        t1 = yield self.start_tracker("t1", "--eth-rpc", url)
        _, stats = yield t1.get_json("/api/v1/stats")
        signer = stats["eth_signer"]
        self.assertTrue(signer and signer.startswith("0x"), stats)
        self.assertEqual(os.stat(os.path.join(t1.data_dir, "private", "eth-signer.key")).st_mode & 0o777, 0o600)
        hosts = {}
        for i in range(1, 4):
            wallet = write_raw_wallet(os.path.join(base, f"w{i}", "wallet.json"), accounts[1 + i]["private_key"])
            p = yield self.start_peer(f"p{i}", "--listen", f"tcp:0:interface=127.{i}.0.1", "--tracker", t1.wire_text,
                                      "--eth-rpc", url, "--wallet", wallet, "--claim-threshold-wei", "1",
                                      "--claim-every", "1", "--voucher-ask-every", "1")
            hosts[accounts[1 + i]["address"]] = p
        yield sleep(2)
        path = os.path.join(base, "adder")
        for argv in (("keygen",), ("init", path, "--template", "python", "--name", "adder")):
            code, _, err = yield self.orb(*argv)
            self.assertEqual(code, 0, err)
        code, out, err = yield self.orb("deploy", path, "--tracker", t1.wire_text, "--api",
                                        f"http://127.0.0.1:{t1.info['http']}", "--json")
        self.assertEqual(code, 0, out + err)
        fid_text = json.loads(out)["fid"]
        raw = fidmod.from_text(fid_text)
        code, out, err = yield self.orb("fund", fid_text, "--eth", "0.01", "--price-wei", str(PRICE_WEI),
                                        "--signer", signer, "--eth-rpc", url, "--wallet", owner_wallet, "--json")
        self.assertEqual(code, 0, out + err)

        def escrow_state():
            w3 = client.connect(url)
            escrow = Escrow(w3, chain.info["escrow"])
            paid = {h: escrow.paid(raw, h, signer).requests for h in hosts}
            return escrow.funds(raw).balance_wei, paid

        balance_before, _ = yield threads.deferToThread(escrow_state)
        to_tracker, _ = yield open_session(*t1.wire, self.network)
        for i in range(CALLS):  # distinct inputs: a pure function's identical calls would be cache hits
            result = yield to_tracker.request(m.Invoke(fid=raw, deadline_ms=20_000, token=b"",
                                                       input=json.dumps({"a": i, "b": 1}).encode()), timeout_s=60)
            self.assertEqual(result.status_kind, ResultStatus.OK, result.log)
        to_tracker.disconnect()

        state = {}

        @defer.inlineCallbacks
        def all_paid():
            state["now"] = yield threads.deferToThread(escrow_state)
            return sum(state["now"][1].values()) >= CALLS

        yield eventually(all_paid, timeout_s=90, what="the hosts' claims")
        balance_after, paid = state["now"]
        self.assertEqual(sum(paid.values()), CALLS)
        self.assertEqual(balance_before - balance_after, CALLS * PRICE_WEI)
        for p in [t1, *hosts.values()]:
            self.assertEqual(p.tracebacks, 0, p.text[-3000:])
