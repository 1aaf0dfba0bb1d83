# -*- test-case-name: tests.test_options -*-
"""``twistd orb-tracker``: options and makeService."""

from twisted.internet import reactor
from twisted.web.server import Site

from orb import _options as opt
from orb._tap import NodeOptions, check_port_free
from orb.net.service import Endpoint, NodeService, Store
from orb.tracker import registry as reg
from orb.tracker.http import build_resource
from orb.tracker.wiring import Tracker, TrackerConfig

REGISTRY_FILE = "registry.sqlite"


class Options(NodeOptions):
    synopsis = "[options]"
    longdesc = (
        "Run an ORB tracker (supernode): it keeps the registry of live peers, trackers and "
        "functions, federates it with other trackers, and serves the REST analytics API, "
        "/metrics and a dashboard over HTTP."
    )
    default_data_dir = "~/.orb/tracker"
    default_listen = "tcp:7400:interface=127.0.0.1"
    join_flag = "--join"
    join_pins_ids = True
    default_max_inbound = 2000  # every peer keeps 2 tracker sessions

    def opt_join(self, hostport):
        """[NODEID@]HOST:PORT of another tracker to federate with (repeatable). With NODEID only that node is accepted there; without, whichever node answers there is admitted."""
        self["join"].append(hostport)

    def opt_admit(self, node_id):
        """Node id (64 hex digits) of a tracker allowed to federate with this one (repeatable). Nodes that claim the tracker role but are not admitted are served as peers."""
        self.setdefault("admit", []).append(node_id)

    def opt_http(self, endpoint):
        """HTTP endpoint for the API, /metrics and the dashboard [default: tcp:7480:interface=127.0.0.1]."""
        self["http"] = endpoint

    def opt_peer_ttl(self, seconds):
        """Seconds without a sign of life before a peer expires [default: 90]."""
        self["peer-ttl"] = seconds

    command_name = "orb-tracker"

    def check(self):
        super().check()
        self["http"] = opt.check_endpoint(self.get("http", "tcp:7480:interface=127.0.0.1"), "--http")
        self["peer-ttl"] = opt.positive_float("peer-ttl", self.get("peer-ttl", 90))
        self["admit"] = frozenset(opt.parse_node_id(n, "--admit") for n in self.get("admit", []))
        address = opt.listen_address(self["http"])
        if address is not None:
            check_port_free(*address)


def makeService(config):
    config.apply_log_level()
    tracker_config = TrackerConfig(
        node=config.node_config("orb-tracker/0.1"), http=config["http"], peer_ttl_s=config["peer-ttl"],
        admit=config["admit"], pinned=config["pinned"],
    )
    return tracker_service(tracker_config, reactor)


def tracker_service(config, reactor):
    """The tracker's MultiService: its stores, its core, the wire and HTTP listeners."""
    def load_registry(db, key):
        return reg.Registry.load(db, reactor, key, peer_ttl_s=config.peer_ttl_s)

    def build(key, rng, addrbook, states, connector):
        return Tracker(config, reactor, key, rng, addrbook=addrbook, registry=states["registry"], connector=connector)

    def http_site(core):
        return Site(build_resource(core.registry, core.stats))

    return NodeService(
        reactor, config.node, build, kind="orb-tracker",
        stores=[Store("registry", REGISTRY_FILE, reg.MIGRATIONS, load_registry, lambda r, db: r.save(db))],
        endpoints=[Endpoint("http", config.http, http_site)] if config.http else [],
    )
