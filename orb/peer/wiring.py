# -*- test-case-name: tests.test_peer_core -*-
"""
What a peer is made of, wired in one place.

    SessionTable   the sessions, admission, misbehaviour, dispatch  (orb.net.sessions)
    Gossip         GETADDR/ADDR                                     (orb.net.gossip)
    Connections    bootstrap, outbound targets, reachability        (orb.peer.connections)
    Homing         the primary tracker and ANNOUNCE                 (orb.peer.homing)
    PackageServer  FETCH -> PACKAGE, CHALLENGE -> PROOF              (orb.net.serving)
    Fetcher        pipelined, resumable FETCH from OFFER's sources   (orb.net.fetch)
    Hosting        OFFER: the hosting policy, fetch, announce       (orb.peer.hosting)
    Invocations    INVOKE -> RESULT in the jail                     (orb.peer.invoke)
    Deprecations   DEPRECATE from trackers; sunsets drop packages   (orb.peer.deprecation)
    CallLog        recent calls' stderr; LOGS -> LOG_LINES          (orb.peer.logs)
    RelayedCalls   RELAY: calls that reach us through a tracker     (orb.peer.relay)
    HostSecrets    SECRET: sealed secrets, opened for each call     (orb.peer.secrets)
    Sealer         SEAL, with --owner-key: reseal to waiting hosts  (orb.peer.secrets)
    Payout         VOUCHER_ASK to the home tracker, the voucher book, auto-claims (orb.peer.payments)

The package store (``orb.net.packages``) is opened by the service layer
and handed in as ``packages``; without one the peer hosts nothing and
answers OFFER, FETCH and CHALLENGE as unsupported.

``Peer`` is the core: it takes a clock, an address book and a connector,
and never listens, writes files, prints or exits. The service layer
(``orb.net.service``, ``orb.peer.tap``) opens the address book, listens
and hands the core its sessions.
"""

import os

import attrs

from orb.exec import ExecConfig, Executor
from orb.net import addrbook as ab
from orb.net.config import NodeConfig
from orb.net.fetch import Fetcher
from orb.net.gossip import Gossip
from orb.net.logs import orb_logger
from orb.net.periodic import Periodic
from orb.net.serving import PackageServer
from orb.net.sessions import LocalNode, SessionTable, session_status
from orb.peer.connections import Connections
from orb.peer.deprecation import Deprecations
from orb.peer.homing import ANNOUNCE_INTERVAL_S, Homing
from orb.peer.hosting import Hosting, HostingPolicy
from orb.peer.invoke import Invocations
from orb.peer.logs import CallLog
from orb.peer.relay import RelayedCalls
from orb.peer.tokens import HostTokens
from orb.peer.secrets import HostSecrets, Sealer, node_x25519_secret
from orb.protocol.codes import Role
from orb.protocol.messages import MessageType

MAINTAIN_INTERVAL_S = 1.0
log = orb_logger()


@attrs.frozen
class PeerConfig:
    node: NodeConfig
    outbound_peers: int = 8
    outbound_trackers: int = 2
    dialback_wait_s: float = 10.0
    group_fn: object = ab.network_group
    hosting: HostingPolicy = HostingPolicy()
    allow_unconfined: bool = False  # run functions even where a jail layer is missing (--allow-unconfined)
    dns_seed: tuple | None = None  # --dns-seed (host, port): the DNS server the seed_lookup hook asks for seed.orb
    fetch_rate: int | None = None  # --fetch-rate: package downloads ask for at most this many bytes a second
    owner_key: object = None  # --owner-key: an owner's NodeKey; this peer then seals that owner's secrets (SEAL)


class Peer:
    """A peer's components, wired. ``start()`` runs it; ``stop()`` ends it."""

    kind = "peer"

    def __init__(self, config, clock, key, rng, *, addrbook, connector, seed_lookup=None, tls_binding=True,
                 frame_counter=None, packages=None):
        node = config.node
        self.config = config
        self.clock = clock
        self.rng = rng
        self.addrbook = addrbook
        self.local = LocalNode(key, Role.PEER, node.user_agent, node.session, advertise=node.advertise)
        self.table = SessionTable(clock, self.local, addrbook, connector=connector, max_inbound=node.max_inbound,
                                  frame_counter=frame_counter, tls_binding=tls_binding)
        self.gossip = Gossip(clock, self.local, self.table, addrbook, rng)
        self.connections = Connections(
            clock, self.local, self.table, self.gossip, addrbook, rng, bootstrap=node.bootstrap,
            outbound_peers=config.outbound_peers, outbound_trackers=config.outbound_trackers,
            dialback_wait_s=config.dialback_wait_s, group_fn=config.group_fn, seed_lookup=seed_lookup,
        )
        self.homing = Homing(self.table, clock)
        self.table.handlers.update({
            MessageType.GETADDR: self.gossip.on_getaddr,
            MessageType.ADDR: self.gossip.on_addr,
        })
        self.packages = packages
        self.server = self.fetcher = self.hosting = self.invocations = self.call_log = self.relay = None
        self.secrets = None
        self.deprecations = None
        if packages is not None:
            self.server = PackageServer(packages)
            self.fetcher = Fetcher(clock, self.table, packages, max_package_bytes=config.hosting.max_package_bytes,
                                   rate_bytes_per_s=config.fetch_rate)
            self.hosting = Hosting(clock, self.table, packages, self.fetcher, self.homing, config.hosting)
            self.invocations = Invocations(clock, packages, os.path.join(os.path.dirname(packages.root), "run"),
                                           lambda: Executor(clock, ExecConfig(allow_unconfined=config.allow_unconfined)),
                                           downloads=self.hosting.wait_for, tokens=HostTokens(clock, packages))
            self.table.handlers.update(self.invocations.tokens.handlers())  # REVOKE from trackers
            self.table.handlers.update(self.server.handlers())
            self.table.handlers.update(self.hosting.handlers())
            self.table.handlers.update(self.invocations.handlers())
            self.table.lost_listeners.append(self.invocations.session_lost)
            self.call_log = CallLog(clock, self.local.node_id, packages)
            self.table.handlers.update(self.call_log.handlers())
            packages.removed_listeners.append(self.call_log.forget)
            self.invocations.finished_listeners.append(self.call_log.record)
            # SECRET: a function's secrets sealed to this host, opened only for its calls (context.secrets)
            self.secrets = HostSecrets(self.local.node_id, node_x25519_secret(key), packages)
            self.table.handlers.update(self.secrets.handlers())
            self.invocations.secrets_for = self.secrets.values_for
            self.relay = RelayedCalls(clock, self.local, self.table)  # a host's calls, reaching it through RELAY
            self.table.handlers.update(self.relay.handlers())
            self.table.lost_listeners.append(self.relay.session_lost)
            self.deprecations = Deprecations(clock, packages)
            self.table.handlers.update(self.deprecations.handlers())
            self.invocations.is_gone = self.hosting.is_gone = self.deprecations.is_gone
        self.sealer = None
        if config.owner_key is not None:
            self.sealer = Sealer(clock, config.owner_key)  # SEAL: reseal the owner copy to a waiting host
            self.table.handlers.update(self.sealer.handlers())
            self.homing.extra_tlvs = lambda: (self.sealer.proof(self.local.node_id),)
        self.table.admission.append(self.connections.admit)
        self.gossip.learned_listeners.append(self.connections.addresses_learned)
        self.table.ready_listeners.extend([self.connections.session_ready, self.homing.session_ready])
        self.table.lost_listeners.append(self.homing.session_lost)
        self.payout = self.claimer = None  # orb.peer.payments.Payout, orb.pay.claimer.AutoClaimer (add_payout)
        self.periodic = Periodic(clock)

    def add_payout(self, payout, claimer=None):
        """Be paid: VOUCHER_ASK to the home tracker (``payout``), claims on the escrow (``claimer``). Before start()."""
        self.payout, self.claimer = payout, claimer
        if self.invocations is not None:
            self.invocations.finished_listeners.append(payout.call_finished)

    @property
    def node_id(self):
        return self.local.node_id

    @property
    def reachability(self):
        return self.connections.reachability

    def start(self):
        if self.hosting is not None:
            self.deprecations.start()  # first: a fid already past its sunset is dropped, not announced
            self.hosting.start()
            self.invocations.tokens.load().addErrback(lambda f: log.failure("loading revocations", f))
        self.periodic.every(MAINTAIN_INTERVAL_S, self.connections.maintain)
        self.periodic.every(ANNOUNCE_INTERVAL_S, self.announce, now=False)
        if self.payout is not None:
            self.periodic.every(self.payout.ask_every_s, self.payout.ask, now=False)
        if self.claimer is not None:
            self.claimer.start()

    def announce(self):
        """ANNOUNCE to the home tracker, with the jail's load (running + queued calls against its capacity)."""
        if self.invocations is not None:
            self.homing.load_permille = self.invocations.load_permille()
        self.homing.announce()

    def stop(self):
        self.periodic.stop()
        if self.claimer is not None:
            self.claimer.stop()
        self.connections.stop()
        self.table.close_all()
        if self.invocations is not None:
            self.invocations.stop()  # the jail's zygote and children
            self.deprecations.stop()

    def status(self):
        primary = self.homing.primary
        return {**session_status(self.table, self.addrbook), "reachability": self.reachability.value,
                "primary": primary.node_id.hex() if primary else None, "functions": len(self.homing.functions),
                "fetching": len(self.fetcher) if self.fetcher is not None else 0}
