"""
Anvil as the real node: the pinned npm @foundry-rs/anvil binary is started
on loopback by the test and stopped by it; OrbEscrow is deployed on it and
`orb fund` / `orb wallet claim` / `orb wallet withdraw` run against it with
--eth-rpc and --escrow, as against any JSON-RPC node.
"""

import json
import os
import platform
import re
import signal

from eth_account import Account
from twisted.internet import defer, protocol, reactor, threads
from twisted.trial.unittest import SkipTest, TestCase

from orb.cli import _wallet as W
from orb.pay import client, contract
from orb.pay import voucher as V
from orb.protocol import fid as fidmod

from ._daemons import DaemonTestMixin
from .test_pay_cli import write_raw_wallet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
ANVIL = os.path.join(ROOT, "contracts", "node_modules", "@foundry-rs",
                     f"anvil-{platform.system().lower()}-{_ARCH.get(platform.machine().lower(), '?')}", "bin", "anvil")
# Anvil's default accounts (the public "test test ... junk" mnemonic): dev keys, known to everyone.
ANVIL_KEYS = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
]
FID = fidmod.fid_for(b"orb anvil test")
FID_TEXT = fidmod.to_text(FID)
LISTENING = re.compile(rb"Listening on 127\.0\.0\.1:(\d+)")


class AnvilProcess(protocol.ProcessProtocol):
    def __init__(self):
        self.output = bytearray()
        self.port = defer.Deferred()
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.output += data[-20_000:]
        del self.output[:-40_000]
        m = LISTENING.search(bytes(self.output))
        if m and not self.port.called:
            self.port.callback(int(m.group(1)))

    errReceived = outReceived

    def processEnded(self, reason):
        if not self.port.called:
            self.port.errback(RuntimeError(f"anvil exited: {bytes(self.output[-2000:]).decode(errors='replace')}"))
        self.ended.callback(None)


class AnvilTests(DaemonTestMixin, TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def start_anvil(self):
        if not os.access(ANVIL, os.X_OK):
            print(f"\nSKIP: no anvil binary at {ANVIL}: run ./dev.sh setup (npm ci in contracts/)")
            raise SkipTest(f"no anvil binary at {ANVIL}: run ./dev.sh setup (npm ci in contracts/)")
        anvil = AnvilProcess()
        transport = reactor.spawnProcess(anvil, ANVIL, [ANVIL, "--host", "127.0.0.1", "--port", "0",
                                                        "--chain-id", "31337", "--accounts", "3"],
                                         env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})

        def stop():
            if anvil.ended.called:
                return None
            transport.signalProcess(signal.SIGTERM)
            timer = reactor.callLater(10, lambda: anvil.ended.called or transport.signalProcess(signal.SIGKILL))
            return anvil.ended.addBoth(lambda _: timer.active() and timer.cancel())

        self.addCleanup(stop)
        port = yield anvil.port
        return f"http://127.0.0.1:{port}"

    def cli(self, *argv, wallet):
        return self.orb(*argv, "--eth-rpc", self.url, "--escrow", self.escrow, "--wallet", wallet, "--json")

    @defer.inlineCallbacks
    def test_fund_and_claim_on_anvil(self):
        """On Anvil, orb fund funds a fid, orb wallet claim pays the host its voucher, and withdraw works after the delay."""
        self.url = yield self.start_anvil()
        deployer = Account.from_key(ANVIL_KEYS[0])

        def deploy():
            w3 = client.connect(self.url)
            assert w3.eth.chain_id == 31337
            escrow = contract.deploy_escrow(w3, deployer, 3600)
            return escrow.address

        self.escrow = yield threads.deferToThread(deploy)
        home = os.path.join(self.base_dir(), "owner")
        owner_wallet = write_raw_wallet(os.path.join(home, "owner.json"), ANVIL_KEYS[1])
        host_wallet = write_raw_wallet(os.path.join(home, "host.json"), ANVIL_KEYS[2])
        host = Account.from_key(ANVIL_KEYS[2]).address
        signer = Account.create()

        code, out, err = yield self.cli("fund", FID_TEXT, "--eth", "0.25", "--price-wei", "2000000000000",
                                        "--signer", signer.address, wallet=owner_wallet)
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["balance_wei"], str(25 * 10**16))

        domain = V.Domain(chain_id=31337, contract=self.escrow)
        signed = V.sign(domain, V.Voucher(fid=V.fid_bytes32(FID), host=host, signer=signer.address, requests=10_000,
                                          bytes=0, epochs=0, expiry=2**40), signer.key)
        vfile = os.path.join(self.base_dir(), "voucher.json")
        with open(vfile, "w") as f:
            f.write(signed.to_json())
        code, out, err = yield self.cli("wallet", "claim", "--voucher", vfile, wallet=host_wallet)
        self.assertEqual(code, 0, err)
        doc = json.loads(out)
        self.assertEqual((doc["claimed"], doc["paid_wei"]), (1, str(10_000 * 2 * 10**12)))

        def paid():
            w3 = client.connect(self.url)
            return contract.Escrow(w3, self.escrow).paid(FID, host, signer.address).requests

        self.assertEqual((yield threads.deferToThread(paid)), 10_000)

        code, out, err = yield self.cli("wallet", "withdraw", FID_TEXT, wallet=owner_wallet)
        self.assertEqual((code, json.loads(out)["action"]), (0, "requested"), err)
        code, out, err = yield self.cli("wallet", "withdraw", FID_TEXT, wallet=owner_wallet)
        self.assertEqual(code, W.EXIT_REFUSED_BY_ESCROW, err)

        def jump():
            w3 = client.connect(self.url)
            w3.provider.make_request("evm_increaseTime", [3601])
            w3.provider.make_request("evm_mine", [])

        yield threads.deferToThread(jump)
        code, out, err = yield self.cli("wallet", "withdraw", FID_TEXT, wallet=owner_wallet)
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["amount_wei"], str(25 * 10**16 - 2 * 10**16))
