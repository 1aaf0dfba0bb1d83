"""
The embedded chain (orb.pay.chain): JSON-RPC dispatch without sockets, then
the real server on loopback driven by web3's HTTPProvider (in a thread, as
daemons will), and the twistd orb-chain process.
"""

import json
import os
import stat

from eth_account import Account
from twisted.internet import defer, reactor, task, threads
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from orb.pay import chain as C
from orb.pay import client, contract
from orb.pay import voucher as V
from orb.pay.tap import deploy_escrow_in_process
from orb.protocol import fid as fidmod

from ._daemons import DaemonTestMixin


def rpc(chain, method, *params, rid=1):
    return chain.handle({"jsonrpc": "2.0", "id": rid, "method": method, "params": list(params)})


class DispatchTests(SynchronousTestCase):
    def setUp(self):
        self.keys = C.dev_keys(2)
        self.chain = C.Chain(self.keys)

    def test_chain_id_and_accounts(self):
        """eth_chainId answers a hex quantity; eth_accounts lists the fresh dev accounts, funded."""
        self.assertEqual(rpc(self.chain, "eth_chainId")["result"], hex(self.chain.chain_id))
        accounts = rpc(self.chain, "eth_accounts")["result"]
        self.assertEqual(accounts, [Account.from_key(k).address for k in self.keys])
        self.assertEqual(int(rpc(self.chain, "eth_getBalance", accounts[0], "latest")["result"], 16),
                         C.DEFAULT_BALANCE_WEI)

    def test_unserved_methods(self):
        """eth_sendTransaction (the chain signing for a client), eth_sign and unknown methods are refused."""
        for method in ("eth_sendTransaction", "eth_sign", "personal_unlockAccount", "debug_x", "eth_newFilter"):
            self.assertEqual(rpc(self.chain, method)["error"]["code"], C.METHOD_NOT_FOUND)

    def test_bad_requests(self):
        """Non-JSON, non-2.0, bad params, empty and oversized batches get JSON-RPC errors, never exceptions."""
        self.assertEqual(self.chain.handle_body(b"{")["error"]["code"], C.PARSE_ERROR)
        self.assertEqual(self.chain.handle_body(b"[" * 5000)["error"]["code"], C.PARSE_ERROR)
        self.assertEqual(self.chain.handle({"id": 1, "method": "eth_chainId"})["error"]["code"], C.INVALID_REQUEST)
        self.assertEqual(self.chain.handle_body(b"[]")["error"]["code"], C.INVALID_REQUEST)
        big = json.dumps([{"jsonrpc": "2.0", "id": i, "method": "eth_chainId"} for i in range(C.MAX_BATCH + 1)])
        self.assertEqual(self.chain.handle_body(big.encode())["error"]["code"], C.INVALID_REQUEST)
        bad = self.chain.handle({"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": {"a": 1}})
        self.assertEqual(bad["error"]["code"], C.INVALID_PARAMS)
        self.assertIn("error", rpc(self.chain, "eth_getBalance", "0xnothex", "latest"))
        self.assertIn("error", rpc(self.chain, "eth_sendRawTransaction", "0x1234"))

    def test_batch_and_notification(self):
        """A batch answers each request with its id; a notification (no id) is not answered."""
        body = json.dumps([{"jsonrpc": "2.0", "id": "a", "method": "eth_chainId"},
                           {"jsonrpc": "2.0", "method": "eth_chainId"},
                           {"jsonrpc": "2.0", "id": 7, "method": "eth_blockNumber"}]).encode()
        answers = self.chain.handle_body(body)
        self.assertEqual([a["id"] for a in answers], ["a", 7])
        self.assertIsNone(self.chain.handle({"jsonrpc": "2.0", "method": "eth_chainId"}))

    def test_increase_time(self):
        """evm_increaseTime moves the chain's clock forward by that much; backwards is refused."""
        before = int(rpc(self.chain, "eth_getBlockByNumber", "latest", False)["result"]["timestamp"], 16)
        self.assertEqual(rpc(self.chain, "evm_increaseTime", hex(86_400))["result"], hex(86_400))
        after = int(rpc(self.chain, "eth_getBlockByNumber", "latest", False)["result"]["timestamp"], 16)
        self.assertGreaterEqual(after - before, 86_400)
        self.assertLess(after - before, 86_400 + 10)
        self.assertIn("error", rpc(self.chain, "evm_setNextBlockTimestamp", hex(before)))
        self.assertIn("error", rpc(self.chain, "evm_increaseTime", "-5"))

    def test_revert_data_kept(self):
        """A call the escrow refuses answers code 3 with the custom error's bytes, so clients can name it."""
        escrow = deploy_escrow_in_process(self.chain, self.keys[0], 60)
        esc = contract.Escrow(self.chain.web3, escrow["address"])
        host, signer = Account.create().address, Account.create().address
        data = esc.contract.encode_abi("claim", [(b"\x01" * 32, host, signer, 1, 0, 0, 2**40), b"\x01" * 65])
        answer = rpc(self.chain, "eth_call", {"to": escrow["address"], "data": data}, "latest")
        self.assertEqual(answer["error"]["code"], C.EXECUTION_REVERTED)
        self.assertEqual(answer["error"]["data"][:10], "0x" + contract.error_selector("Unfunded").hex())

    def test_to_rpc(self):
        """Results become JSON-RPC values: ints as hex quantities, bytes as 0x hex, bools and None kept."""
        self.assertEqual(C.to_rpc({"a": [1, b"\x01\xff", True, None, "0x1", 0.5]}),
                         {"a": ["0x1", "0x01ff", True, None, "0x1", 0.5]})


class HttpTests(TestCase):
    """The server on a loopback port, a web3 HTTPProvider client in a thread."""

    def setUp(self):
        self.keys = C.dev_keys(3)
        self.chain = C.Chain(self.keys)
        self.chain.escrow = deploy_escrow_in_process(self.chain, self.keys[0], 60)
        site = C.make_site(self.chain)
        self.channels = []
        build = site.buildProtocol

        def tracked(addr):
            p = build(addr)
            self.channels.append(p)
            return p

        site.buildProtocol = tracked
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.close_all)
        self.addCleanup(self.port.stopListening)
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    def close_all(self):
        """web3's requests session keeps its connection alive: close the server's side."""
        for p in self.channels:
            transport = getattr(p._channel, "transport", None)
            if transport is not None:
                transport.abortConnection()
        return task.deferLater(reactor, 0.05, lambda: None)

    @defer.inlineCallbacks
    def post(self, body, path=b"/"):
        agent = Agent(reactor)
        from twisted.web.client import FileBodyProducer
        from io import BytesIO

        response = yield agent.request(b"POST", self.url.encode() + path,
                                       Headers({b"content-type": [b"application/json"]}),
                                       FileBodyProducer(BytesIO(body)))
        return response.code, (yield readBody(response))

    @defer.inlineCallbacks
    def test_transfer_over_http(self):
        """A raw transaction signed by the client is mined; its receipt and the new balance read back."""
        def work():
            w3 = client.connect(self.url)
            sender = Account.from_key(self.keys[1])
            to = Account.create().address
            tx = {"to": to, "value": 12345, "nonce": w3.eth.get_transaction_count(sender.address),
                  "chainId": w3.eth.chain_id, "gas": 21000, "maxFeePerGas": 2 * w3.eth.gas_price,
                  "maxPriorityFeePerGas": w3.eth.max_priority_fee}
            h = w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)
            receipt = w3.eth.wait_for_transaction_receipt(h, timeout=10)
            return receipt.status, w3.eth.get_balance(to), w3.eth.block_number

        status, balance, block = yield threads.deferToThread(work)
        self.assertEqual((status, balance), (1, 12345))
        self.assertGreaterEqual(block, 2)

    @defer.inlineCallbacks
    def test_fund_and_claim_over_http(self):
        """Through the server, an owner funds a fid and a host's claim of a signed voucher pays it, once."""
        def work():
            w3 = client.connect(self.url)
            esc = contract.Escrow(w3, client.escrow_address(self.url))
            owner, host = Account.from_key(self.keys[1]), Account.from_key(self.keys[2])
            signer = Account.create()
            raw_fid = fidmod.fid_for(b"http test")
            esc.fund(owner, raw_fid, value_wei=10**18, price_per_request_wei=10**9, signers=[signer.address])
            domain = V.Domain(chain_id=w3.eth.chain_id, contract=esc.address)
            signed = V.sign(domain, V.Voucher(fid=V.fid_bytes32(raw_fid), host=host.address, signer=signer.address,
                                              requests=500, bytes=0, epochs=0, expiry=2**40), signer.key)
            assert esc.voucher_digest(signed.voucher) == signed.voucher.digest(domain)
            paid = []
            for _ in range(2):
                receipt = esc.claim_batch(host, [signed.voucher], [signed.signature])
                paid.append(sum(a["amount"] for n, a in esc.events(receipt) if n == "Claimed"))
            try:
                esc.claim(host, V.Voucher(fid=bytes(32), host=host.address, signer=signer.address, requests=1,
                                          bytes=0, epochs=0, expiry=2**40), signed.signature)
            except contract.EscrowError as e:
                refused = e.name
            return paid, refused

        paid, refused = yield threads.deferToThread(work)
        self.assertEqual(paid, [500 * 10**9, 0])
        self.assertEqual(refused, "Unfunded")

    @defer.inlineCallbacks
    def test_oversized_request_refused(self):
        """A body over the limit is answered 413 and not parsed."""
        code, body = yield self.post(b" " * (C.MAX_REQUEST_BYTES + 10))
        self.assertEqual(code, 413)

    @defer.inlineCallbacks
    def test_escrow_document(self):
        """GET /orb/escrow names the deployed OrbEscrow; client.escrow_address reads it."""
        agent = Agent(reactor)
        response = yield agent.request(b"GET", self.url.encode() + b"/orb/escrow")
        doc = json.loads((yield readBody(response)))
        self.assertEqual(doc["address"], self.chain.escrow["address"])
        self.assertEqual(doc["chain_id"], self.chain.chain_id)
        address = yield threads.deferToThread(client.escrow_address, self.url)
        self.assertEqual(address, self.chain.escrow["address"])

    @defer.inlineCallbacks
    def test_unreachable(self):
        """connect() to a port nobody listens on raises ChainUnreachable, not a requests error."""
        port = self.port.getHost().port
        yield self.port.stopListening()
        yield self.assertFailure(threads.deferToThread(client.connect, f"http://127.0.0.1:{port}", 2.0),
                                 client.ChainUnreachable)


class DaemonTests(DaemonTestMixin, TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_twistd_orb_chain(self):
        """twistd orb-chain writes ports.json, keeps its dev keys 0600, deploys OrbEscrow and serves it."""
        chain = yield self.start_chain(withdraw_delay_s=5)
        info = chain.info
        self.assertTrue(info["escrow"])
        keys = os.path.join(chain.data_dir, "private", "dev-accounts.json")
        self.assertEqual(stat.S_IMODE(os.stat(keys).st_mode), 0o600)
        accounts = C.load_dev_accounts(chain.data_dir)
        self.assertEqual(len(accounts), C.DEFAULT_ACCOUNTS)
        url = f"http://127.0.0.1:{info['http']}"

        def check():
            w3 = client.connect(url)
            esc = contract.Escrow(w3, client.escrow_address(url))
            return w3.eth.chain_id, w3.eth.get_balance(accounts[3]["address"]), esc.withdraw_delay_s()

        chain_id, balance, delay = yield threads.deferToThread(check)
        self.assertEqual((chain_id, balance, delay), (info["chain_id"], C.DEFAULT_BALANCE_WEI, 5))
        self.assertNotIn(accounts[0]["private_key"][2:], chain.text)
        yield chain.stop()
        self.assertEqual(chain.tracebacks, 0)
        self.assertIn("Main loop terminated", chain.text)
