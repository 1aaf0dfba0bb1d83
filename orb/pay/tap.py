# -*- test-case-name: tests.test_pay_chain -*-
"""
``twistd orb-chain``: the embedded chain as a daemon of the devnet.

A twistd plugin rather than an ``orb chain`` verb: the chain is a
long-running service like the tracker and the peer, so it gets the same
life (``twistd -n``, ``--pidfile``, ``--logfile``, SIGTERM) and the same
readiness protocol: once listening it writes ``ports.json`` (``{"http":
PORT, "chain_id": ..., "escrow": ADDRESS, "pid": ...}``) in its data dir,
so :class:`orb.devnet.Daemon` starts and waits for it unchanged.

On start it funds ``--accounts`` fresh dev accounts (their keys in
``private/dev-accounts.json``, mode 0600), deploys OrbEscrow from the
compiled artifact with ``--withdraw-delay`` (unless ``--no-escrow``) and
writes the deployment to ``escrow.json``, also served at ``GET /orb/escrow``.
"""

import json
import os

import attrs
from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import endpoints
from twisted.logger import Logger
from twisted.python import usage

from orb import _options as opt
from orb._tap import check_port_free
from orb.pay import chain as chainmod

log = Logger()

DEFAULT_HTTP = "tcp:8545:interface=127.0.0.1"
DEFAULT_WITHDRAW_DELAY_S = 86_400


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("Run the embedded Ethereum chain (eth-tester on py-evm, in memory) over JSON-RPC on "
                "loopback, with OrbEscrow deployed, for a devnet's daemons and wallets to share.")
    optParameters = [
        ["data-dir", None, "~/.orb/chain", "where the dev account keys, escrow.json and ports.json go"],
        ["http", None, DEFAULT_HTTP, "JSON-RPC listen endpoint, a Twisted endpoint string"],
        ["network", None, "main", "ORB network name (informational: the chain serves any)"],
        ["accounts", None, str(chainmod.DEFAULT_ACCOUNTS), "how many dev accounts to fund at genesis"],
        ["withdraw-delay", None, str(DEFAULT_WITHDRAW_DELAY_S),
         "OrbEscrow's withdrawal delay in seconds (owners wait this long for unspent funds)"],
    ]
    optFlags = [["no-escrow", None, "do not deploy OrbEscrow"]]

    def postOptions(self):
        try:
            self["data-dir"] = opt.check_data_dir(self["data-dir"])
            self["http"] = opt.check_endpoint(self["http"], "--http")
            self["network"] = opt.check_network(self["network"])
            self["accounts"] = opt.positive_int("accounts", self["accounts"], 1000)
            delay = self["withdraw-delay"]
            if not str(delay).isdigit() or int(delay) > 10 * 365 * 86400:
                raise usage.UsageError("--withdraw-delay takes whole seconds, at most ten years")
            self["withdraw-delay"] = int(delay)
            address = opt.listen_address(self["http"])
            if address is not None:
                check_port_free(*address)
        except usage.UsageError as e:
            raise SystemExit(f"orb-chain: error: {e}") from None


@attrs.frozen
class ChainConfig:
    data_dir: str
    http: str
    network: str
    accounts: int
    withdraw_delay_s: int
    deploy_escrow: bool


def _write_json(path, doc):
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f)
    os.replace(path + ".tmp", path)


class ChainService(service.MultiService):
    def __init__(self, config, reactor=None):
        super().__init__()
        self.config = config
        self._reactor = reactor
        self.chain = None
        self.port = None

    def startService(self):
        from twisted.internet import reactor as default_reactor

        reactor = self._reactor or default_reactor
        cfg = self.config
        keys = chainmod.dev_keys(cfg.accounts)
        self.chain = chainmod.Chain(keys)
        chainmod.write_private_json(os.path.join(cfg.data_dir, "private", "dev-accounts.json"), {
            "chain_id": self.chain.chain_id,
            "accounts": [{"address": a, "private_key": "0x" + k.hex()} for a, k in zip(self.chain.addresses, keys)],
        })
        if cfg.deploy_escrow:
            self.chain.escrow = deploy_escrow_in_process(self.chain, keys[0], cfg.withdraw_delay_s)
            _write_json(os.path.join(cfg.data_dir, "escrow.json"), {"chain_id": self.chain.chain_id,
                                                                     **self.chain.escrow})
        endpoint = endpoints.serverFromString(reactor, cfg.http)
        listening = StreamServerEndpointService(endpoint, chainmod.make_site(self.chain))
        listening._raiseSynchronously = True
        listening.setServiceParent(self)
        super().startService()
        listening._waitingForPort.addCallback(self._listening)

    def _listening(self, port):
        self.port = port
        host = port.getHost()
        escrow = (self.chain.escrow or {}).get("address")
        _write_json(os.path.join(self.config.data_dir, "ports.json"), {
            "http": host.port, "chain_id": self.chain.chain_id, "escrow": escrow, "pid": os.getpid()})
        log.info("orb-chain {chain_id} serving JSON-RPC on http://{host}:{port}/ (OrbEscrow at {escrow})",
                 chain_id=self.chain.chain_id, host=host.host, port=host.port, escrow=escrow)
        return port


def deploy_escrow_in_process(chain, deployer_key, withdraw_delay_s):
    """Deploy OrbEscrow on ``chain`` from the dev account ``deployer_key``: {"address", "tx", "block",
    "withdraw_delay_s", "deployer"}. The artifact and constructor come from orb.pay.contract."""
    from web3 import Web3

    from orb.pay import contract

    w3 = Web3(type(chain.provider)(chain.tester))  # web3's full formatting, same chain
    account = w3.eth.account.from_key(deployer_key)
    escrow = contract.deploy_escrow(w3, account, withdraw_delay_s)
    receipt = escrow.deploy_receipt
    return {"address": escrow.address, "tx": "0x" + bytes(receipt["transactionHash"]).hex(),
            "block": receipt["blockNumber"], "gas_used": receipt["gasUsed"],
            "withdraw_delay_s": withdraw_delay_s, "deployer": account.address}


def makeService(options):
    config = ChainConfig(data_dir=options["data-dir"], http=options["http"], network=options["network"],
                         accounts=options["accounts"], withdraw_delay_s=options["withdraw-delay"],
                         deploy_escrow=not options["no-escrow"])
    return ChainService(config)
