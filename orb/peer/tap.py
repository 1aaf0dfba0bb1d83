# -*- test-case-name: tests.test_options -*-
"""``twistd orb-peer``: options and makeService."""

from twisted.internet import reactor

from orb import _options as opt
from orb._tap import NodeOptions
from orb.net.service import NodeService
from orb.peer.wiring import Peer, PeerConfig


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

    def opt_outbound_peers(self, value):
        """Outbound peer connections to keep [default: 8]."""
        self["outbound-peers"] = value

    def opt_outbound_trackers(self, value):
        """Outbound tracker connections to keep [default: 2]."""
        self["outbound-trackers"] = value

    command_name = "orb-peer"

    def check(self):
        super().check()
        self["outbound-peers"] = opt.positive_int("outbound-peers", self.get("outbound-peers", 8), 1000)
        self["outbound-trackers"] = opt.positive_int("outbound-trackers", self.get("outbound-trackers", 2), 100)


def makeService(config):
    config.apply_log_level()
    peer_config = PeerConfig(
        node=config.node_config("orb-peer/0.1"),
        outbound_peers=config["outbound-peers"],
        outbound_trackers=config["outbound-trackers"],
    )
    return peer_service(peer_config, reactor)


def peer_service(config, reactor):
    """The peer's MultiService: its address book, its core and the wire listener."""

    def build(key, rng, addrbook, states, connector):
        return Peer(config, reactor, key, rng, addrbook=addrbook, connector=connector)

    return NodeService(reactor, config.node, build, kind="orb-peer")
