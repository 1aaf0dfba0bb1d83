"""
Daemon cores joined by in-memory transports (twisted.test.iosim) on one
task.Clock, in place of TLS over TCP: the real session table, codec,
session state machine and components, with no sockets and no threads.
Keys, address-book secrets and choices come from seeded generators, so a
test sees the same run every time.
"""

import itertools
import random

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.internet import defer, error
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.test import iosim

from orb.identity import NodeKey
from orb.net.addrbook import AddressBook, prefix_group
from orb.net.config import NodeConfig
from orb.peer.wiring import Peer, PeerConfig
from orb.tracker import registry as reg
from orb.tracker.wiring import Tracker, TrackerConfig

PORT = 7400
EPOCH = 1_800_000_000  # address-book timestamps need a realistic clock


class MemoryNet:
    """Listeners by (host, port), and the pumps of every open connection."""

    def __init__(self, clock=None):
        self.clock = clock or Clock()
        if self.clock.seconds() < EPOCH:
            self.clock.advance(EPOCH)
        self.listeners = {}
        self.pumps = []
        self._ports = itertools.count(40000)
        self._seeds = itertools.count(1)
        self.trackers = []

    # --- the network -----------------------------------------------------------------

    def connector(self, host):
        net = self

        class Connector:
            def connect(self, to_host, to_port, factory):
                return net.connect(host, to_host, to_port, factory)

        return Connector()

    def connect(self, from_host, host, port, factory):
        target = self.listeners.get((host, port))
        if target is None:
            return defer.fail(error.ConnectionRefusedError(f"nothing listens on {host}:{port}"))
        client_addr = IPv4Address("TCP", from_host, next(self._ports))
        server_addr = IPv4Address("TCP", host, port)
        server = target.table.factory().buildProtocol(client_addr)
        client = factory.buildProtocol(server_addr)
        pump = iosim.connect(
            server, iosim.FakeTransport(server, True, hostAddress=server_addr, peerAddress=client_addr),
            client, iosim.FakeTransport(client, False, hostAddress=client_addr, peerAddress=server_addr),
            greet=False, clock=self.clock,
        )
        pump.hosts = {from_host, host}
        self.pumps.append(pump)
        return defer.succeed(client)

    def flush(self, rounds=10_000):
        for _ in range(rounds):
            moved = False
            for pump in list(self.pumps):
                moved = pump.pump() or moved
            self.pumps = [p for p in self.pumps if not (p.serverIO.disconnected and p.clientIO.disconnected)]
            if not moved:
                return
        raise AssertionError("the network did not settle")

    def run(self, seconds, step_s=0.25):
        """Advance the clock by ``seconds``, delivering everything on the way."""
        self.flush()
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            self.clock.advance(min(step_s, end - self.clock.seconds()))
            self.flush()

    # --- nodes -----------------------------------------------------------------------

    def _rng(self):
        return random.Random(next(self._seeds))

    def _key(self, rng):
        return NodeKey(Ed25519PrivateKey.from_private_bytes(rng.randbytes(32)))

    def _book(self, rng):
        return AddressBook(self.clock, key=rng.randbytes(32), rng=random.Random(rng.getrandbits(64)),
                           allow_loopback=True, allow_private=True, group_fn=prefix_group)

    def tracker(self, host, join=(), peer_ttl_s=90.0, listen=True, admitted=True, admit_vouched=False, payments=None):
        """A tracker; ``admitted``: the others admit it and it admits them, as
        if each had been started with --admit for every other; ``payments``: its Payments, wired as in a daemon."""
        rng = self._rng()
        key = self._key(rng)
        config = TrackerConfig(NodeConfig("unused", advertise=(host, PORT), bootstrap=tuple(join)), http="",
                               peer_ttl_s=peer_ttl_s, admit_vouched=admit_vouched)
        core = Tracker(config, self.clock, key, rng, addrbook=self._book(rng),
                       registry=reg.Registry(self.clock, key, peer_ttl_s=peer_ttl_s),
                       connector=self.connector(host), tls_binding=False, payments=payments)
        if admitted:
            for other in self.trackers:
                other.federation.admitted.add(core.node_id)
                core.federation.admitted.add(other.node_id)
            self.trackers.append(core)
        return self._start(core, host, listen)

    def peer(self, host, trackers=(), listen=True, outbound_trackers=2, outbound_peers=8, advertise=True,
             packages=None, hosting=None, owner_key=None):
        """A peer; ``packages``: its PackageStore (it hosts nothing without one), ``hosting``: its policy,
        ``owner_key``: an owner key it seals secrets for (--owner-key)."""
        config = PeerConfig(
            NodeConfig("unused", advertise=(host, PORT) if advertise else None, bootstrap=tuple(trackers)),
            outbound_peers=outbound_peers, outbound_trackers=outbound_trackers, group_fn=prefix_group,
            owner_key=owner_key, **({"hosting": hosting} if hosting is not None else {}),
        )
        rng = self._rng()
        core = Peer(config, self.clock, self._key(rng), rng, addrbook=self._book(rng),
                    connector=self.connector(host), tls_binding=False, packages=packages)
        return self._start(core, host, listen)

    def _start(self, core, host, listen):
        core.local.listening = (host, PORT)
        if listen:
            self.listeners[(host, PORT)] = core
        core.start()
        return core

    def kill(self, core):
        """Stop a node: it closes its sessions and stops listening."""
        for address, listener in list(self.listeners.items()):
            if listener is core:
                del self.listeners[address]
        core.stop()
        self.flush()

    def cut(self, host):
        """Drop every connection of ``host`` at once, without a goodbye."""
        for pump in list(self.pumps):
            if host in pump.hosts:
                pump.clientIO.loseConnection()
        self.flush()
