# -*- test-case-name: tests.test_options -*-
"""``twistd orb-tracker``: options and makeService."""

import os

import attrs
from twisted.internet import reactor
from twisted.python import usage

from orb import _options as opt
from orb._tap import NodeOptions, check_port_free
from orb.net import packages as pk
from orb.net.service import Endpoint, NodeService, Store
from orb.protocol.package import MAX_PACKAGE_BYTES
from orb.tracker import names
from orb.tracker import registry as reg
from orb.tracker.gateway import GatewayConfig
from orb.tracker.http import build_site
from orb.tracker.wiring import Tracker, TrackerConfig, dns_replicas

REGISTRY_FILE = "registry.sqlite"
STORE_BYTES_PER_PACKAGE_CAP = 64  # the tracker's package store holds this many maximal packages' worth


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

    def opt_join_ca(self, nameport):
        """NAME:PORT of a tracker with a CA-issued certificate for NAME to federate with (repeatable; needs --ca). Whoever proves NAME with a certificate the CA issued is admitted."""
        self.setdefault("join-ca", []).append(nameport)

    def opt_ca(self, path):
        """PEM file of the certificate authorities that --join-ca trusts."""
        self["ca"] = path

    def opt_tls_cert(self, path):
        """PEM file: a CA-issued certificate for this tracker's DNS name carrying its node key, then its chain (CA mode, RFC 7.4). Without it the tracker presents its self-signed certificate."""
        self["tls-cert"] = path

    optFlags = [["admit-vouched", None,
                 "Also admit trackers whose own signed record reaches us from an admitted tracker (RFC 8.6)."],
                ["allow-unconfined", None,
                 "DANGEROUS: test-run deployed functions even where a jail layer is missing."],
                ["require-funding", None,
                 "Answer payment_required (HTTP 402) for every function whose escrow cannot pay for the call, not "
                 "only those whose manifest says [payment] required = true (needs --eth-rpc; RFC 10.10.2)."]]

    def opt_max_package_bytes(self, n):
        """Largest package this tracker accepts in a DEPLOY, in bytes [default: 67108864, 64 MiB]."""
        self["challenge-interval"] = opt.positive_float("challenge-interval", self.get("challenge-interval", 180))
        self["max-package-bytes"] = n

    def opt_challenge_interval(self, seconds):
        """Each verified replica is challenged again at a random time between a third of this and this, in seconds [default: 180]."""
        self["challenge-interval"] = seconds

    def opt_http(self, endpoint):
        """HTTP endpoint for the API, /metrics and the dashboard [default: tcp:7480:interface=127.0.0.1]."""
        self["http"] = endpoint

    def opt_gateway_max_input_bytes(self, n):
        """Largest input the HTTP gateway accepts for a call, in bytes, whatever a manifest allows [default: 1048576]."""
        self["gateway-max-input-bytes"] = n

    def opt_gateway_rate(self, per_s):
        """Calls per second the HTTP gateway allows each client IP address, sustained; 0 for no limit [default: 50]."""
        self["gateway-rate"] = per_s

    def opt_gateway_burst(self, n):
        """Calls a client IP address may make at once before --gateway-rate applies [default: 100]."""
        self["gateway-burst"] = n

    def opt_gateway_receive_timeout(self, seconds):
        """Seconds an HTTP request's headers and body have to arrive, from its first line [default: 10]."""
        self["gateway-receive-timeout"] = seconds

    def opt_dns(self, hostport):
        """HOST:PORT to serve the .orb DNS zone on, over UDP and TCP (port 0: any port free for both) [default: off]."""
        self["dns"] = hostport

    def opt_dns_ttl(self, seconds):
        """TTL of the .orb answers, seconds, 1..3600 [default: 10]."""
        self["dns-ttl"] = seconds

    def opt_dns_forward(self, hostport):
        """HOST:PORT of a DNS server to pass names outside .orb to [default: refuse them]."""
        self["dns-forward"] = hostport

    def opt_dns_rrl(self, n):
        """DNS answers a second per source network (IPv4 /24, IPv6 /56) over UDP; 0 turns the limit off; loopback is exempt [default: 50]."""
        self["dns-rrl"] = n

    def opt_eth_rpc(self, url):
        """Ethereum JSON-RPC URL: count routed calls and sign payment vouchers (RFC 10.10) for the escrow there [default: off]."""
        self["eth-rpc"] = url

    def opt_escrow(self, address):
        """OrbEscrow's address [default: asked of the embedded chain at --eth-rpc]."""
        self["escrow"] = address

    def opt_epoch(self, seconds):
        """Seconds of one uptime epoch paid to hosts that passed a challenge in it; at least --challenge-interval [default: 3600]."""
        self["epoch"] = seconds

    def opt_canary_interval(self, seconds):
        """Seconds between spot checks: canary calls with known answers to hosts of pure functions; 0 for none [default: 60]."""
        self["canary-interval"] = seconds

    def opt_canary_penalty(self, seconds):
        """Seconds a host that answered a canary call wrong gets no calls and earns no vouchers here [default: 3600]."""
        self["canary-penalty"] = seconds

    def opt_peer_ttl(self, seconds):
        """Seconds without a sign of life before a peer expires [default: 90]."""
        self["peer-ttl"] = seconds

    command_name = "orb-tracker"

    def check(self):
        super().check()
        self["http"] = opt.check_endpoint(self.get("http", "tcp:7480:interface=127.0.0.1"), "--http")
        self["peer-ttl"] = opt.positive_float("peer-ttl", self.get("peer-ttl", 90))
        self["admit"] = frozenset(opt.parse_node_id(n, "--admit") for n in self.get("admit", []))
        self["challenge-interval"] = opt.positive_float("challenge-interval", self.get("challenge-interval", 180))
        self["max-package-bytes"] = opt.positive_int("max-package-bytes", self.get("max-package-bytes", MAX_PACKAGE_BYTES),
                                                     maximum=2**40)
        defaults = GatewayConfig()
        self["gateway-max-input-bytes"] = opt.positive_int(
            "gateway-max-input-bytes", self.get("gateway-max-input-bytes", defaults.max_input_bytes),
            maximum=defaults.max_input_bytes)
        rate = self.get("gateway-rate", defaults.rate_per_s)
        self["gateway-rate"] = 0.0 if str(rate).strip() in ("0", "0.0") else opt.positive_float("gateway-rate", rate)
        self["gateway-burst"] = opt.positive_int("gateway-burst", self.get("gateway-burst", defaults.burst),
                                                 maximum=10**6)
        if self["gateway-burst"] < 1:
            raise usage.UsageError("--gateway-burst must be at least 1 (use --gateway-rate 0 for no limit)")
        self["gateway-receive-timeout"] = opt.positive_float(
            "gateway-receive-timeout", self.get("gateway-receive-timeout", defaults.receive_timeout_s))
        self["payments"] = _payments_config(self)
        interval = self.get("canary-interval", 60)
        self["canary-interval"] = 0.0 if str(interval).strip() in ("0", "0.0") else opt.positive_float(
            "canary-interval", interval)
        self["canary-penalty"] = opt.positive_float("canary-penalty", self.get("canary-penalty", 3600))
        self["join-ca"] = tuple(opt.parse_name_port(t, "--join-ca") for t in self.get("join-ca", []))
        if self["join-ca"] and not self.get("ca"):
            raise usage.UsageError("--join-ca needs --ca FILE: the certificate authorities to verify the name with")
        for name in ("ca", "tls-cert"):
            if self.get(name) and not os.path.isfile(os.path.expanduser(self[name])):
                raise usage.UsageError(f"--{name} {self[name]}: no such file")
            if self.get(name):
                self[name] = os.path.abspath(os.path.expanduser(self[name]))
        address = opt.listen_address(self["http"])
        if address is not None:
            check_port_free(*address)
        self["dns"] = dns_config(self)


def udp_port_free(host, port):
    """As check_port_free, for the UDP side of --dns."""
    import socket

    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((host, port))
    except OSError as e:
        raise usage.UsageError(f"--dns: cannot listen on {host}:{port}/udp: {e.strerror}") from None
    finally:
        s.close()


def dns_config(options):
    """The DNSConfig the --dns options give, or None without --dns."""
    from orb.dns.service import DNSConfig

    for name in ("dns-ttl", "dns-forward", "dns-rrl"):
        if options.get(name) is not None and not options.get("dns"):
            raise usage.UsageError(f"--{name} needs --dns HOST:PORT")
    if not options.get("dns"):
        return None
    host, port = opt.parse_hostport(options["dns"], "--dns", allow_zero=True)
    if port:
        check_port_free(host, port)
        udp_port_free(host, port)
    forward = options.get("dns-forward")
    ttl_s = opt.positive_int("dns-ttl", options.get("dns-ttl", 10), 3600)
    if not ttl_s:
        raise usage.UsageError("--dns-ttl must be between 1 and 3600")
    return DNSConfig(
        listen=(host, port),
        ttl_s=ttl_s,
        forward=opt.parse_hostport(forward, "--dns-forward") if forward else None,
        rrl_per_s=opt.positive_int("dns-rrl", options.get("dns-rrl", 50), 1_000_000),
    )


def _payments_config(options):
    """--eth-rpc, --escrow, --epoch as a PaymentsConfig, or None (payments off)."""
    endpoint = opt.eth_endpoint(options)
    if endpoint is None:
        if options.get("require-funding"):
            raise usage.UsageError("--require-funding needs --eth-rpc: without a chain there is no escrow to read")
        return None
    url, escrow = endpoint
    epoch_s = opt.positive_float("epoch", options.get("epoch", 3600))
    if epoch_s < options["challenge-interval"]:
        raise usage.UsageError(f"--epoch {epoch_s:g} is shorter than --challenge-interval {options['challenge-interval']:g}: "
                               "a host could pass no challenge in an epoch")
    return PaymentsConfig(eth_rpc=url, escrow=escrow, epoch_s=epoch_s,
                          require_funding=bool(options.get("require-funding")))


@attrs.frozen
class PaymentsConfig:
    eth_rpc: str
    escrow: str | None
    epoch_s: float
    require_funding: bool = False


def open_payments(config, reactor, data_dir):
    """The tracker's Payments: its signing key (private/, 0600), the escrow's domain, tally and payouts."""
    from orb.pay.node import ChainConfig, load_or_create_key, open_chain, signer_key_path
    from orb.tracker.payments import open_payments as open_tracker_payments

    from orb.pay.contract import Escrow

    w3, domain, escrow = open_chain(ChainConfig(config.eth_rpc, config.escrow))
    key = load_or_create_key(signer_key_path(data_dir))
    payments = open_tracker_payments(data_dir, key, domain, reactor, epoch_s=config.epoch_s)
    payments.escrow = Escrow(w3, escrow)  # read in threads by orb.tracker.funding (payment.required)
    payments.require_funding = config.require_funding
    return payments


def makeService(config):
    config.apply_log_level()
    node = attrs.evolve(config.node_config("orb-tracker/0.1"), tls_cert=config.get("tls-cert"),
                        ca_file=config.get("ca"))
    tracker_config = TrackerConfig(
        node=node, http=config["http"], peer_ttl_s=config["peer-ttl"],
        admit=config["admit"], pinned=config["pinned"], ca_joins=config["join-ca"],
        admit_vouched=bool(config["admit-vouched"]), max_package_bytes=config["max-package-bytes"],
        allow_unconfined=bool(config["allow-unconfined"]), challenge_max_s=config["challenge-interval"],
        gateway=GatewayConfig(max_input_bytes=config["gateway-max-input-bytes"], rate_per_s=config["gateway-rate"],
                              burst=config["gateway-burst"], receive_timeout_s=config["gateway-receive-timeout"]),
        dns=config["dns"], canary_interval_s=config["canary-interval"], canary_penalty_s=config["canary-penalty"],
    )
    return tracker_service(tracker_config, reactor, payments=config["payments"])


def tracker_service(config, reactor, payments=None):
    """The tracker's MultiService: its stores, its core, the wire and HTTP listeners; ``payments`` a
    PaymentsConfig (None: no vouchers)."""
    def load_registry(db, key):
        return reg.Registry.load(db, reactor, key, peer_ttl_s=config.peer_ttl_s)

    def build(key, rng, addrbook, states, connector):
        return Tracker(config, reactor, key, rng, addrbook=addrbook, registry=states["registry"], connector=connector,
                       packages=states["packages"], name_history=states["names"],
                       payments=open_payments(payments, reactor, config.node.data_dir) if payments else None)

    def http_site(core):
        return build_site(core.registry, core.stats, core.router, reactor, config.gateway,
                          names=getattr(core, "names", None))

    node_service = NodeService(
        reactor, config.node, build, kind="orb-tracker",
        stores=[Store("registry", REGISTRY_FILE, reg.MIGRATIONS, load_registry, lambda r, db: r.save(db)),
                Store("names", names.NAMES_FILE, names.MIGRATIONS, names.load_history, names.save_history),
                pk.node_store(reactor, config.node.data_dir, max_bytes=STORE_BYTES_PER_PACKAGE_CAP * config.max_package_bytes)],
        endpoints=[Endpoint("http", config.http, http_site)] if config.http else [],
    )
    if config.http:
        def gateway_listening(core):
            from orb.dns.service import gateway_of

            try:
                http = node_service.getServiceNamed("http").port
            except KeyError:
                return core
            gateway = gateway_of(http, core.local.advertise)
            if gateway is not None:
                core.gateway_listening(gateway)  # in our signed tracker record: other trackers' DNS lists it
            return core

        node_service.started.addCallback(gateway_listening)
    if config.dns is not None:
        add_dns(node_service, config.dns, reactor)
    return node_service


def add_dns(node_service, dns_config, reactor):
    """The .orb DNS child service (orb.dns): it listens once the core is up, beside the gateway."""
    from orb.dns.service import DNSService

    dns = DNSService(reactor, dns_config, node_service.config.data_dir)
    dns.setServiceParent(node_service)

    def attach(core):
        try:
            # core.gateway: set when the HTTP gateway listened (tracker_service), None without one.
            dns.attach(core, lambda fid, limit: dns_replicas(core.registry, fid, limit), core.gateway)
        except Exception as e:
            import sys

            why = getattr(e, "socketError", None) or e
            sys.stderr.write(f"orb-tracker: cannot serve DNS on {dns_config.listen[0]}:{dns_config.listen[1]}: {why}\n")
            reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
            reactor.stop()
        return core

    node_service.started.addCallback(attach)
