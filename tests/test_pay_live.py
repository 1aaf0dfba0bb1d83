"""
Payments with real daemons (RFC 10.10): a `twistd orb-chain`, a tracker
that signs vouchers (--eth-rpc), peers paid to their wallets (--eth-rpc,
--wallet), a function deployed and funded with the tracker as its signer,
called N times by its owner and M times by a stranger's key: the hosts
ask for vouchers, claim them on their own, and the escrow pays exactly
N x the price (the stranger was not authorized by the owner: RFC 10.10).
And a function whose manifest requires payment is answered
payment_required (HTTP 402, orb invoke exit 15) once its deposit is spent
(RFC 10.10.2).
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
from tests.test_tokens_live import post_with

PRICE_WEI = 10**12
CALLS = 6
STRANGER_CALLS = 3


def owner_key(test):
    """The owner key `orb keygen` made for the tests' `orb` user."""
    from orb.cli._keys import load_owner_key

    return load_owner_key(os.path.join(test.orb_env()["ORB_HOME"], "owner.key"))


@defer.inlineCallbacks
def invoke_as(test, tracker, key, fid_raw, n, start=0):
    """``n`` INVOKEs with distinct inputs over a session under ``key`` (None: a fresh key): their RESULTs."""
    from orb.devnet import open_session

    session, _ = yield open_session(*tracker.wire, test.network, key=key)
    results = []
    try:
        for i in range(start, start + n):  # distinct inputs: a pure function's identical calls are cache hits
            results.append((yield session.request(m.Invoke(fid=fid_raw, deadline_ms=20_000, token=b"",
                                                             input=json.dumps({"a": i, "b": 1}).encode()),
                                                  timeout_s=60)))
    finally:
        session.disconnect()
    return results


class PaidCallsTests(DaemonTestMixin, TestCase):
    timeout = 300

    @defer.inlineCallbacks
    def test_calls_served_are_paid_by_automatic_claims(self):
        """N owner calls and M stranger calls: the hosts' automatic claims take exactly N x price from the escrow."""
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
        _, listed = yield t1.get_json("/api/v1/trackers")  # signed into its tracker record, federated
        self.assertEqual([t["eth_signer"] for t in listed["trackers"] if t["self"]], [signer])
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
        results = yield invoke_as(self, t1, owner_key(self), raw, CALLS)
        # A key the owner never authorized (a host could make one): served, and paid nothing.
        results += yield invoke_as(self, t1, None, raw, STRANGER_CALLS, start=100)
        self.assertEqual([r.status_kind for r in results], [ResultStatus.OK] * (CALLS + STRANGER_CALLS),
                         [r.log for r in results])

        state = {}

        @defer.inlineCallbacks
        def all_paid():
            state["now"] = yield threads.deferToThread(escrow_state)
            return sum(state["now"][1].values()) >= CALLS

        yield eventually(all_paid, timeout_s=90, what="the hosts' claims")
        balance_after, paid = state["now"]
        self.assertEqual(sum(paid.values()), CALLS)
        self.assertEqual(balance_before - balance_after, CALLS * PRICE_WEI)
        _, stats = yield t1.get_json("/api/v1/stats")
        self.assertEqual((stats["payments"]["calls_counted"], stats["payments"]["calls_unauthorized"]),
                         (CALLS, STRANGER_CALLS))
        for p in [t1, *hosts.values()]:
            self.assertEqual(p.tracebacks, 0, p.text[-3000:])

    @defer.inlineCallbacks
    def test_a_spent_deposit_is_answered_payment_required(self):
        """payment.required and a deposit for 3 requests: 3 calls answer, the 4th is payment_required, 402, exit 15;
        a tracker with --require-funding refuses an unfunded function's calls and warns at its deploy."""
        chain = yield self.start_chain()
        url = f"http://127.0.0.1:{chain.info['http']}"
        accounts = C.load_dev_accounts(chain.data_dir)
        owner_wallet = write_raw_wallet(os.path.join(self.base_dir(), "owner", "owner.json"),
                                        accounts[1]["private_key"])
        t1 = yield self.start_tracker("t1", "--eth-rpc", url, "--require-funding")
        yield self.start_peer("p1", "--listen", "tcp:0:interface=127.1.0.1", "--tracker", t1.wire_text)
        yield sleep(2)
        api = f"http://127.0.0.1:{t1.info['http']}"
        code, _, err = yield self.orb("keygen")
        self.assertEqual(code, 0, err)
        for name, extra in (("plain", ""), ("adder", "\n[payment]\nrequired = true\n")):
            path = os.path.join(self.base_dir(), name)
            code, _, err = yield self.orb("init", path, "--template", "python", "--name", name)
            self.assertEqual(code, 0, err)
            with open(os.path.join(path, "orb.toml")) as f:
                toml = f.read().replace("replicas = 3", "replicas = 1")
            with open(os.path.join(path, "orb.toml"), "w") as f:
                f.write(toml + extra)
        # Deployed without funding to a tracker that requires it: a warning, then 402 for its calls.
        code, out, err = yield self.orb("deploy", os.path.join(self.base_dir(), "plain"), "--tracker", t1.wire_text,
                                        "--api", api, "--json")
        self.assertEqual(code, 0, out + err)
        self.assertIn("requires funding", json.loads(out)["warning"])
        [plain] = yield invoke_as(self, t1, owner_key(self), fidmod.from_text(json.loads(out)["fid"]), 1)
        self.assertEqual(plain.status_kind, ResultStatus.PAYMENT_REQUIRED)
        self.assertIn(b"no deposit", plain.log)
        yield sleep(1)  # the tracker refuses a second session of one key while the first is still closing
        code, out, err = yield self.orb("deploy", path, "--tracker", t1.wire_text, "--api", api, "--fund",
                                        "--eth", "0.000003", "--price-wei", str(PRICE_WEI), "--eth-rpc", url,
                                        "--wallet", owner_wallet, "--every-tracker", "--json")
        self.assertEqual(code, 0, out + err)
        raw = fidmod.from_text(json.loads(out)["fid"])
        results = yield invoke_as(self, t1, owner_key(self), raw, 4)
        self.assertEqual([r.status_kind for r in results], [ResultStatus.OK] * 3 + [ResultStatus.PAYMENT_REQUIRED])
        self.assertIn(b"deposit is spent", results[3].log)
        code, body, _ = yield post_with(f"{api}/f/{json.loads(out)['fid']}", b'{"a": 7, "b": 7}', {})
        self.assertEqual((code, json.loads(body)["code"]), (402, "payment-required"), body)
        code, out, err = yield self.orb("invoke", json.loads(out)["fid"], "--data", '{"a": 8, "b": 8}', "--api", api)
        self.assertEqual(code, 15, out + err)
        self.assertIn("payment_required", err)
        self.assertEqual(t1.tracebacks, 0, t1.text[-3000:])
