# -*- test-case-name: tests.test_tracker_core -*-
"""
What a tracker is made of, wired in one place.

    SessionTable   the sessions, admission, misbehaviour, dispatch  (orb.net.sessions)
    Gossip         GETADDR/ADDR                                     (orb.net.gossip)
    Membership     ANNOUNCE, liveness, dial-back reachability       (orb.tracker.membership)
    Federation     tracker links, SYNC/DELTA, pushes                (orb.tracker.federation)
    Registry       peers, trackers, functions, placements           (orb.tracker.registry)
    Deployments    DEPLOY: check, fetch, test-run, record           (orb.tracker.deploy)
    Replication    k verified replicas, challenges, LOOKUP          (orb.tracker.replication)
    Router         INVOKE and the gateway's calls, to the best replica (orb.tracker.router)
    Names          NAME, DEPRECATE, name history, sunsets, pushes to hosts (orb.tracker.names)
    LogsFanout     the owner's LOGS, to every replica; LOG_LINES merged (orb.tracker.logs)
    Secrets        SECRET: sealed secrets, kept and forwarded to hosts (orb.tracker.secrets)
    Relayer        RELAY: forwarding, and calls to peers homed elsewhere (orb.tracker.relay)
    PackageServer  FETCH -> PACKAGE, CHALLENGE -> PROOF              (orb.net.serving)
    Fetcher        FETCH from a deployer or a replica               (orb.net.fetch)
    Stats          counters behind /metrics and the REST API        (orb.tracker.stats)
    Payments       counting routed calls, VOUCHER_ASK -> VOUCHERS   (orb.tracker.payments; with --eth-rpc)
    Canary         canary calls to hosts of pure functions; suspects (orb.tracker.canary)

``Tracker`` is the core: it takes a clock, an address book, a registry and
a connector, and never listens, writes files, prints or exits. The service
layer (``orb.net.service``, ``orb.tracker.tap``) opens the stores, listens
on the endpoints and hands the core its sessions.
"""


import random

import attrs

from orb.net.config import NodeConfig
from orb.net.gossip import Gossip
from orb.net.periodic import Periodic
from orb.net.sessions import LocalNode, Reachability, SessionTable, session_status
from orb.protocol import messages as m
from orb.protocol.codes import Role
from orb.protocol.messages import MessageType
from orb.tracker import registry as reg
from orb.net.fetch import Fetcher
from orb.net.serving import PackageServer
from orb.protocol.package import MAX_PACKAGE_BYTES
from orb.tracker.deploy import Deployments, SampleRunner
from orb.tracker.federation import ANTI_ENTROPY_INTERVAL_S, PUSH_INTERVAL_S, Federation
from orb.tracker.replication import CHALLENGE_MAX_S
from orb.tracker.replication import TICK_S as REPLICATION_TICK_S
from orb.tracker.replication import Replication, verified_replicas
from orb.tracker.canary import DEFAULT_PENALTY_S as CANARY_PENALTY_S
from orb.tracker.canary import Canary
from orb.tracker.gateway import GatewayConfig
from orb.tracker.logs import LogsFanout
from orb.tracker.funding import Funding, escrow_reader
from orb.tracker.relay import Relayer
from orb.tracker.router import Router
from orb.tracker.secrets import SEAL_TICK_S, Secrets
from orb.tracker.routing import rank_replicas
from orb.tracker.membership import EXPIRE_INTERVAL_S, PING_INTERVAL_S, Membership
from orb.tracker.names import Names
from orb.tracker.stats import Stats
from orb.tracker.tokens import Tokens

MAINTAIN_INTERVAL_S = 1.0
PAYMENTS_FLUSH_S = 30.0
GETADDR_INTERVAL_S = 10.0  # trackers answer GETADDR again after this: discovery is their job
MAX_GETADDR_PEERS = 500
MAX_ADVERTISED_TRACKERS = 8
ROLES = Role.TRACKER | Role.RELAY


def dns_replicas(registry, fid, limit):
    """What ``_orb._tcp.<fid>.orb`` SRV lists (RFC 9.9): the verified replicas that accept direct
    connections, best first by the one ranking, at most ``limit``. From the placement's hosts rather
    than a scan of every peer: the same rule, at the cost of the replica count."""
    placement = registry.placement(fid)
    if placement is None:
        return []
    hosts = [p for p in map(registry.peer, placement.verified) if p is not None and fid in p.function_map]
    return rank_replicas(verified_replicas(registry, fid, hosts), direct=True, limit=limit)


@attrs.frozen
class TrackerConfig:
    node: NodeConfig
    http: str = "tcp:7480:interface=127.0.0.1"
    peer_ttl_s: float = reg.DEFAULT_PEER_TTL_S
    admit: frozenset = frozenset()  # node ids of the trackers we federate with (--admit)
    pinned: tuple = ()  # ((host, port), node id) for each --join NODEID@HOST:PORT
    ca_joins: tuple = ()  # (name, port) for each --join-ca NAME:PORT
    admit_vouched: bool = False  # --admit-vouched
    max_package_bytes: int = MAX_PACKAGE_BYTES  # --max-package-bytes
    allow_unconfined: bool = False  # test-run deploys without every jail layer (--allow-unconfined)
    challenge_max_s: float = CHALLENGE_MAX_S  # --challenge-interval: a verified replica is re-challenged within this
    gateway: GatewayConfig = GatewayConfig()  # the HTTP gateway's limits (--gateway-*)
    dns: object = None  # --dns and its options: an orb.dns.service.DNSConfig, or None (no DNS)
    canary_interval_s: float = 0.0  # --canary-interval: spot checks of pure functions' hosts (0: none; the tap's is 60)
    canary_penalty_s: float = CANARY_PENALTY_S  # --canary-penalty: how long a host that answered one wrong is suspect


class Tracker:
    """A tracker's components, wired. ``start()`` runs it; ``stop()`` ends it."""

    kind = "tracker"

    def __init__(self, config, clock, key, rng, *, addrbook, registry, connector, stats=None, tls_binding=True,
                 packages=None, runner=None, payments=None, name_history=None):
        node = config.node
        self.config = config
        self.clock = clock
        self.rng = rng
        self.addrbook = addrbook
        self.registry = registry
        self.stats = stats if stats is not None else Stats(clock)
        self.gateway = None  # (host, port) of our HTTP gateway, once it listens
        self.local = LocalNode(key, ROLES, node.user_agent, node.session, advertise=node.advertise)
        self.table = SessionTable(clock, self.local, addrbook, connector=connector, max_inbound=node.max_inbound,
                                  frame_counter=self._count_frame, tls_binding=tls_binding)
        self.federation = Federation(clock, self.local, self.table, registry, node.bootstrap, admit=config.admit,
                                     pinned=dict(config.pinned), ca_joins=config.ca_joins,
                                     admit_vouched=config.admit_vouched)
        self.membership = Membership(clock, self.local, self.table, registry, self.stats, self.federation.admits)
        self.gossip = Gossip(
            clock, self.local, self.table, addrbook, rng, getaddr_interval_s=GETADDR_INTERVAL_S,
            extra_addresses=self._gossip_extras,
            advertised_extras=lambda record: self.federation.tracker_entries(record.node_id, MAX_ADVERTISED_TRACKERS),
        )
        self.packages = packages
        self.fetcher = None
        if packages is not None:
            self.fetcher = Fetcher(clock, self.table, packages, max_package_bytes=config.max_package_bytes)
        self.replication = Replication(clock, self.local, self.table, registry, packages, rng,
                                       challenge_max_s=config.challenge_max_s, fetcher=self.fetcher)
        self.table.handlers.update({
            MessageType.GETADDR: self.gossip.on_getaddr,
            MessageType.ADDR: self.gossip.on_addr,
            MessageType.ANNOUNCE: self.membership.on_announce,
            MessageType.SYNC: self.federation.on_sync,
            MessageType.DELTA: self.federation.on_delta,
            MessageType.LOOKUP: self.replication.on_lookup,
        })
        self.relayer = Relayer(clock, self.local, self.table, registry, admits=self.federation.admits)
        self.table.handlers.update(self.relayer.handlers())
        self.router = Router(clock, self.table, registry, self.replication, channel=self.relayer.channel)
        self.table.handlers.update(self.router.handlers())
        self.table.lost_listeners.append(self.router.session_lost)  # a caller gone: its routed calls cancelled
        self.router.call_listeners.append(self.stats.calls.observe_call)  # wire calls; the gateway counts its own
        self.secrets = Secrets(clock, self.table, registry)  # SECRET: sealed secrets, forwarded to their hosts
        self.table.handlers.update(self.secrets.handlers())
        self.table.handlers[MessageType.ANNOUNCE] = self._on_announce  # membership, and a SEALER TLV to secrets
        self.names = Names(clock, registry, self.table, self.local.node_id, history=name_history)
        self.table.handlers.update(self.names.handlers())
        self.table.lost_listeners.append(self.names.session_lost)
        self.replication.is_gone = self.router.is_gone = self.names.is_gone
        self.logs = LogsFanout(clock, registry, self.replication, self.table, channel=self.relayer.channel)
        self.table.handlers.update(self.logs.handlers())
        if packages is not None:
            self.server = PackageServer(packages)
            self.deployments = Deployments(clock, self.local, self.table, registry, packages, self.fetcher,
                                           runner or SampleRunner(clock, config.allow_unconfined),
                                           config.max_package_bytes)
            self.table.handlers.update({
                MessageType.FETCH: self.server.on_fetch,
                MessageType.CHALLENGE: self.server.on_challenge,
                MessageType.DEPLOY: self.deployments.on_deploy,
            })
        # Federation first: it admits the tracker a --join dial reached, which Membership then asks about.
        self.table.ready_listeners.extend([self.federation.session_ready, self.membership.session_ready, self._greet,
                                           self.replication.session_ready, self.secrets.session_ready])
        self.table.lost_listeners.extend([self.federation.session_lost, self.membership.session_lost,
                                          self.relayer.session_lost, self.secrets.session_lost])
        self.table.rtt_listeners.append(self.membership.rtt_measured)
        # Capability tokens: private calls checked by the router, REVOKE taken in and pushed to hosts.
        self.tokens = Tokens(clock, registry, self.table, names_of=lambda: getattr(self, "names", None))
        self.router.tokens = self.tokens
        self.table.handlers.update(self.tokens.handlers())
        self.table.ready_listeners.append(self.tokens.session_ready)
        self.table.lost_listeners.append(self.tokens.session_lost)
        self.payments = payments  # orb.tracker.payments.Payments, opened by the service layer, or None
        self.funding = None  # orb.tracker.funding.Funding: the payment gate, when the escrow can be read
        if payments is not None:
            payments.local_id, payments.verified_since = self.local.node_id, self.replication.verified_since
            self.router.run_listeners.append(payments.call_ran)
            self.table.handlers.update(payments.handlers())
            self.stats.eth_signer = payments.signer  # REST /api/v1/stats: owners name it with orb fund --signer
            if payments.escrow is not None:  # manifests with payment.required: 402 once the deposit is spent
                self.funding = Funding(clock, payments, escrow_reader(payments.escrow, payments.signer))
                self.router.payment_gate = self.funding.admit
                self.router.require_payment = payments.require_funding
            self.stats.payments = lambda: {**payments.status(), **(self.funding.status() if self.funding else {})}
        # Spot checks: canaries on the router's channel (never cached nor paid); a wrong answer makes a suspect.
        self.canary = Canary(clock, registry, self.replication, self.router.channel, local_id=self.local.node_id,
                             rng=random.SystemRandom(), interval_s=config.canary_interval_s,
                             penalty_s=config.canary_penalty_s, payments=payments)
        self.router.answer_listeners.append(self.canary.run_seen)
        self.router.is_suspect = self.canary.is_suspect
        self.stats.spot_checks = self.canary.report
        self.periodic = Periodic(clock)

    @property
    def node_id(self):
        return self.local.node_id

    def start(self):
        self.periodic.every(reg.TRACKER_RESIGN_S, self.publish_self)
        self.periodic.every(MAINTAIN_INTERVAL_S, self.federation.maintain)
        self.periodic.every(PING_INTERVAL_S, self.membership.ping_all)
        self.periodic.every(EXPIRE_INTERVAL_S, self.membership.expire, now=False)
        self.periodic.every(PUSH_INTERVAL_S, self.federation.push_changes, now=False)
        self.periodic.every(ANTI_ENTROPY_INTERVAL_S, self.federation.anti_entropy, now=False)
        self.periodic.every(REPLICATION_TICK_S, self.replication.tick, now=False)
        self.periodic.every(SEAL_TICK_S, self.secrets.ask_sealers, now=False)
        if self.payments is not None:
            self.periodic.every(self.payments.epoch_s, self.payments.epoch_tick, now=False)
            self.periodic.every(PAYMENTS_FLUSH_S, self.payments.flush, now=False)
        self.canary.start()

    def _on_announce(self, record, message, request_id):
        self.membership.on_announce(record, message, request_id)
        self.secrets.announce_seen(record, message)

    def publish_self(self):
        """Sign our own tracker record afresh: at start and every TRACKER_RESIGN_S."""
        self.registry.publish_self([self.local.advertise] if self.local.advertise else [],
                                   [self.gateway] if self.gateway else [],
                                   self.payments.signer if self.payments is not None else "")

    def gateway_listening(self, gateway):
        """The HTTP gateway listens at ``gateway`` (host, port): say so in our tracker record (DNS A answers)."""
        self.gateway = gateway
        self.publish_self()

    def stop(self):
        self.periodic.stop()
        self.canary.stop()
        self.table.close_all()
        if self.packages is not None:
            self.deployments.runner.stop()  # the jail's zygote and children
        if self.payments is not None:
            self.payments.close()  # flushes the tally

    def _count_frame(self, direction, message_type, size_bytes):
        way = "in" if direction == "rx" else "out"
        self.stats.count_message(way, message_type.name)
        self.stats.count_bytes(way, message_type.name, size_bytes)

    def _greet(self, record):
        self.gossip.advertise(record)
        if not record.inbound:
            self.gossip.ask(record)

    def _gossip_extras(self):
        """GETADDR answers carry the other trackers and a sample of reachable peers."""
        now = int(self.clock.seconds())
        entries = self.federation.tracker_entries()
        peers = [p for p in self.registry.peers() if p.reachability == Reachability.REACHABLE.value and p.addresses]
        for peer in self.rng.sample(peers, min(MAX_GETADDR_PEERS, len(peers))):
            host, port = peer.addresses[0]
            entries.append(m.AddrEntry(now, host, port, peer.roles & 0xFF or int(Role.PEER), peer.node_id))
        return entries

    def status(self):
        return session_status(self.table, self.addrbook)

