# -*- test-case-name: tests.test_options -*-
"""``twistd orb-peer``: options and makeService."""

import os
import re
import sys

import attrs
from twisted.internet import reactor
from twisted.python import usage

from orb import _options as opt
from orb._tap import NodeOptions
from orb.net import packages as pk
from orb.net.fetch import MIN_RATE_BYTES_PER_S as MIN_FETCH_RATE
from orb.net.service import NodeService
from orb.peer import hosting as ho
from orb.peer.wiring import Peer, PeerConfig
from orb.protocol import manifest as mf

CACHE_TAG_RE = re.compile(r"[a-z][a-z0-9_]*-[0-9]{2,4}\Z")
MIB = 1024 * 1024


class Options(NodeOptions):
    synopsis = "[options]"
    longdesc = (
        "Run an ORB peer: it joins the network through its address book, the configured "
        "trackers or the DNS seed, keeps its outbound connections, gossips addresses and "
        "announces the functions it hosts."
    )
    default_data_dir = "~/.orb/peer"
    default_listen = "tcp:7401:interface=127.0.0.1"
    join_flag = "--tracker"

    def opt_tracker(self, hostport):
        """HOST:PORT of a tracker to join (repeatable)."""
        self["join"].append(hostport)

    def opt_dns_seed(self, hostport):
        """HOST:PORT of a tracker's DNS (its --dns): with no address book entry and no --tracker to try, the peer asks it for seed.orb [default: none]."""
        self["dns-seed"] = hostport

    def opt_outbound_peers(self, value):
        """Outbound peer connections to keep [default: 8]."""
        self["outbound-peers"] = value

    def opt_outbound_trackers(self, value):
        """Outbound tracker connections to keep [default: 2]."""
        self["outbound-trackers"] = value

    def opt_wallet(self, path):
        """The payout wallet: its address is paid for the calls served (made if missing, mode 0600) [default: DATA-DIR/private/wallet.json with --eth-rpc]."""
        self["wallet"] = path

    def opt_eth_rpc(self, url):
        """Ethereum JSON-RPC URL: ask the home tracker for vouchers and claim them on the escrow there [default: off]."""
        self["eth-rpc"] = url

    def opt_escrow(self, address):
        """OrbEscrow's address [default: asked of the embedded chain at --eth-rpc]."""
        self["escrow"] = address

    def opt_claim_threshold_wei(self, wei):
        """Claim once the vouchers would pay at least this many wei [default: 10**15, 0.001 ether]."""
        self["claim-threshold-wei"] = wei

    def opt_voucher_ask_every(self, seconds):
        """Seconds between VOUCHER_ASKs to the home tracker (also sent after 1000 calls served) [default: 60]."""
        self["voucher-ask-every"] = seconds

    def opt_claim_every(self, seconds):
        """Seconds between looks at the voucher book for a claim [default: 60]."""
        self["claim-every"] = seconds

    def opt_max_functions(self, value):
        """Most functions this peer hosts; further OFFERs are declined [default: 100]."""
        self["max-functions"] = value

    def opt_max_disk_mb(self, value):
        """Disk for hosted packages, MiB (downloads in progress count in full) [default: 1024]."""
        self["max-disk-mb"] = value

    def opt_fetch_rate(self, value):
        """Bandwidth for package downloads, bytes a second, with an optional K, M or G suffix (binary) [default: no limit]."""
        self["fetch-rate"] = value

    def opt_owner_key(self, path):
        """An owner key (made by `orb keygen`, mode 0600): this peer then seals that owner's secrets to new hosts of its functions when a tracker asks (SEAL) [default: none]."""
        self["owner-key"] = path

    def opt_runtime(self, name):
        """A runtime this peer hosts, python or exec (repeatable; default: both). OFFERs of others are declined."""
        self.setdefault("runtimes", []).append(name)

    def opt_max_memory_mb(self, value):
        """Largest memory_mb a hosted function may ask for, MiB [default: 1024]."""
        self["max-memory-mb"] = value

    def opt_python_tag(self, tag):
        self["python-tag"] = tag
        if self.get("owner-key"):
            from orb.cli._keys import OwnerKeyError, load_owner_key

            try:
                self["owner-key"] = load_owner_key(self["owner-key"])
            except OwnerKeyError as e:
                raise usage.UsageError(f"--owner-key: {e}") from None
        else:
            self["owner-key"] = None

    opt_python_tag.__doc__ = (f"The Python cache tag of bytecode packages this peer runs; others are declined "
                              f"[default: this Python's, {sys.implementation.cache_tag}].")

    command_name = "orb-peer"

    def check(self):
        super().check()
        if self["no-listen"] and self["advertise"] is not None:
            raise usage.UsageError("--no-listen and --advertise contradict each other: a peer that accepts no "
                                   "connections has no address to advertise")
        seed = self.get("dns-seed")
        self["dns-seed"] = opt.parse_hostport(seed, "--dns-seed") if seed else None
        self["outbound-peers"] = opt.positive_int("outbound-peers", self.get("outbound-peers", 8), 1000)
        self["outbound-trackers"] = opt.positive_int("outbound-trackers", self.get("outbound-trackers", 2), 100)
        self["max-functions"] = opt.positive_int("max-functions", self.get("max-functions", ho.DEFAULT_MAX_FUNCTIONS),
                                                 pk.DEFAULT_MAX_PACKAGES)
        self["max-disk-mb"] = opt.positive_int("max-disk-mb", self.get("max-disk-mb",
                                                                       ho.DEFAULT_MAX_DISK_BYTES // MIB), 16 * MIB)
        self["max-memory-mb"] = opt.positive_int("max-memory-mb", self.get("max-memory-mb",
                                                                           ho.DEFAULT_MAX_MEMORY_MB), 1 << 20)
        rate = self.get("fetch-rate")
        self["fetch-rate"] = None if rate is None else opt.byte_rate("fetch-rate", rate, MIN_FETCH_RATE)
        runtimes = self.get("runtimes") or list(ho.DEFAULT_RUNTIMES)
        for name in runtimes:
            if name not in mf.RUNTIMES:
                raise usage.UsageError(f"--runtime {name!r}: use one of {', '.join(mf.RUNTIMES)}")
        self["runtimes"] = frozenset(runtimes)
        tag = self.get("python-tag", sys.implementation.cache_tag)
        if not CACHE_TAG_RE.match(tag or ""):
            raise usage.UsageError(f"--python-tag {tag!r} is not a cache tag like {sys.implementation.cache_tag}")
        self["python-tag"] = tag
        if self.get("owner-key"):
            from orb.cli._keys import OwnerKeyError, load_owner_key

            try:
                self["owner-key"] = load_owner_key(self["owner-key"])
            except OwnerKeyError as e:
                raise usage.UsageError(f"--owner-key: {e}") from None
        else:
            self["owner-key"] = None
        self["payout"] = _payout_config(self)

    optFlags = [["allow-unconfined", None, "DANGEROUS: run hosted functions even where a jail layer is missing."],
                ["no-listen", None, "Accept no connections and advertise no address: trackers reach this peer "
                                    "through RELAY on its own tracker sessions (overrides --listen)."]]

    def hosting_policy(self):
        return ho.HostingPolicy(max_functions=self["max-functions"], max_disk_bytes=self["max-disk-mb"] * MIB,
                                runtimes=self["runtimes"], max_memory_mb=self["max-memory-mb"],
                                cache_tag=self["python-tag"])


@attrs.frozen
class PayoutConfig:
    eth_rpc: str
    escrow: str | None
    wallet: str
    claim_threshold_wei: int
    claim_every_s: float
    ask_every_s: float = 60.0


def _payout_config(options):
    endpoint = opt.eth_endpoint(options, ("wallet", "escrow", "claim-threshold-wei", "claim-every",
                                          "voucher-ask-every"))
    if endpoint is None:
        return None
    url, escrow = endpoint
    threshold = str(options.get("claim-threshold-wei", 10**15))
    if not threshold.isdigit() or int(threshold) >= 2**256:
        raise usage.UsageError("--claim-threshold-wei takes a whole number of wei")
    wallet = os.path.abspath(os.path.expanduser(options.get("wallet") or
                                                os.path.join(options["data-dir"], "private", "wallet.json")))
    return PayoutConfig(eth_rpc=url, escrow=escrow, wallet=wallet, claim_threshold_wei=int(threshold),
                        claim_every_s=opt.positive_float("claim-every", options.get("claim-every", 60)),
                        ask_every_s=opt.positive_float("voucher-ask-every", options.get("voucher-ask-every", 60)))


def open_payout(config, reactor, data_dir, homing):
    """The host's Payout and AutoClaimer: its wallet, its voucher book (DATA-DIR/vouchers.sqlite), the escrow."""
    from orb.pay.book import VoucherBook
    from orb.pay.claimer import AutoClaimer, ClaimPolicy
    from orb.pay.contract import Escrow
    from orb.pay.node import ChainConfig, load_or_create_key, open_chain
    from orb.peer.payments import Payout

    w3, domain, escrow = open_chain(ChainConfig(config.eth_rpc, config.escrow))
    account = load_or_create_key(config.wallet)
    book = VoucherBook(os.path.join(data_dir, "vouchers.sqlite"), clock=reactor)
    payout = Payout(reactor, homing, book, account.address, domain, ask_every_s=config.ask_every_s)
    claimer = AutoClaimer(book, Escrow(w3, escrow), account, domain, reactor,
                          ClaimPolicy(min_claim_wei=config.claim_threshold_wei, interval_s=config.claim_every_s))
    return payout, claimer


def makeService(config):
    config.apply_log_level()
    peer_config = PeerConfig(
        node=config.node_config("orb-peer/0.1"),
        outbound_peers=config["outbound-peers"],
        outbound_trackers=config["outbound-trackers"],
        hosting=config.hosting_policy(),
        allow_unconfined=bool(config["allow-unconfined"]),
        dns_seed=config["dns-seed"],
        fetch_rate=config["fetch-rate"],
        owner_key=config["owner-key"],
    )
    return peer_service(peer_config, reactor, payout=config["payout"])


def peer_service(config, reactor, payout=None):
    """The peer's MultiService: its address book and package store, its core and the wire listener; ``payout``
    a PayoutConfig (None: not paid)."""
    policy = config.hosting

    seed = None
    if config.dns_seed is not None:
        from orb.dns.client import seed_lookup

        seed = seed_lookup(reactor, config.dns_seed)

    def build(key, rng, addrbook, states, connector):
        peer = Peer(config, reactor, key, rng, addrbook=addrbook, connector=connector, packages=states["packages"],
                    seed_lookup=seed)
        if payout is not None:  # Payout needs the core's Homing: wired after it is built, before it starts
            peer.add_payout(*open_payout(payout, reactor, config.node.data_dir, peer.homing))
        return peer

    # The store's own bounds sit above the policy's (which decides offers): room for one download past it.
    packages = pk.node_store(reactor, config.node.data_dir, max_bytes=policy.max_disk_bytes + policy.max_package_bytes,
                             max_packages=policy.max_functions + pk.MAX_PARTIALS)
    return NodeService(reactor, config.node, build, kind="orb-peer", stores=[packages])
