# -*- test-case-name: tests.test_network -*-
"""
The peer core: joining the network and staying connected.

Bootstrap order (Bitcoin's): the persisted address book first, then the
configured trackers (--tracker), then the DNS seed ``seed.orb`` (a hook,
``seed_lookup``, until the DNS issue lands). The peer keeps
``outbound_peers`` outbound peer sessions and ``outbound_trackers``
outbound tracker sessions, at most one outbound peer per network group,
and accepts inbound sessions up to ``max_inbound``.

Reachability. After its first tracker session the peer waits
``dialback_wait_s`` for that tracker to dial back its advertised address.
A dial-back shows up as a second, inbound session from a tracker we are
already connected to; it marks the peer ``reachable``. Without one the
peer is ``relayed`` and keeps at least 2 tracker sessions open, through
which the trackers will relay calls to it.

Homing. The peer ANNOUNCEs its functions and load to one tracker, its
primary, every ANNOUNCE_INTERVAL_S; when the primary's session is lost it
announces to another tracker at once.
"""

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from orb.node import Node, NodeConfig, is_loopback, peer_ip
from orb.net import addrbook as ab
from orb.protocol import messages as m
from orb.protocol.codes import Role

log = Logger()

ANNOUNCE_INTERVAL_S = 30.0
READDR_INTERVAL_S = 15.0
DURABLE_SESSION_S = 60.0  # a session this old clears its address's redial back-off  # ask trackers for addresses again while short of outbound peers
MAX_DIALS_PER_TICK = 4
MIN_RELAYED_TRACKERS = 2
RETRY_BASE_S = 1.0
RETRY_MAX_S = 30.0
MAX_RETRY_ENTRIES = 4096


@attrs.frozen
class PeerConfig:
    node: NodeConfig
    outbound_peers: int = 8
    outbound_trackers: int = 2
    dialback_wait_s: float = 10.0
    group_fn: object = ab.network_group


class Peer(Node):
    roles = Role.PEER

    def __init__(self, config, reactor, key=None, rng=None, seed_lookup=None):
        super().__init__(config.node, reactor, key, rng)
        self.peer_config = config
        self.seed_lookup = seed_lookup  # () -> Deferred[list[(host, port)]], the DNS seed hook
        self.reachability = "unknown"
        self.primary = None  # the tracker session we announce to
        self.functions = {}  # fid bytes -> version (filled by the hosting issue)
        self.load_permille = 0
        self._dialback_timer = None
        self._retry = {}  # (host, port) -> (next try at, delay)
        self._seeded = False

    def status(self):
        return {**super().status(), "reachability": self.reachability,
                "primary": self.primary.remote.node_id.hex() if self.primary else None}

    def on_started(self):
        self.start_loop(self.announce, ANNOUNCE_INTERVAL_S, now=False)
        return defer.succeed(None)

    # --- sessions ---------------------------------------------------------------------

    def outbound(self, role=None):
        found = [p for p in self.sessions.values() if p.factory.initiator and p.ready]
        if role is Role.TRACKER:
            return [p for p in found if p.remote.roles & Role.TRACKER]
        if role is Role.PEER:
            return [p for p in found if not p.remote.roles & Role.TRACKER]
        return found

    def on_session_ready(self, protocol):
        remote = protocol.remote
        if self.advertise is None and remote.roles & Role.TRACKER and self.listening_port is not None:
            # Listening on a wildcard address: advertise what the tracker sees, at our port.
            self.advertise = (remote.observed_us.host, self.listening_port.getHost().port)
            log.info("advertising {addr}, as observed by tracker {peer}", addr=self.advertise,
                     peer=remote.node_id.hex()[:16])
        if protocol.factory.initiator:
            protocol.asked_addr_at = self.clock.seconds()
            self.ask_addresses(protocol)
        if remote.roles & Role.TRACKER and protocol.factory.initiator:
            if self.primary is None:
                self.set_primary(protocol)
            if self._dialback_timer is None and self.reachability == "unknown":
                self._dialback_timer = self.clock.callLater(self.peer_config.dialback_wait_s, self._no_dialback)
        if self.reachability == "reachable":
            self.advertise_self(protocol)

    def on_session_lost(self, protocol):
        if protocol is self.primary:
            self.primary = None
            trackers = self.outbound(Role.TRACKER)
            if trackers:
                self.set_primary(trackers[0])
            log.info("primary tracker lost; re-homing to {peer}",
                     peer=self.primary.remote.node_id.hex()[:16] if self.primary else "nobody yet")

    def set_primary(self, protocol):
        self.primary = protocol
        self.announce()

    def announce(self):
        if self.primary is None or not self.primary.ready:
            return
        functions = [m.FunctionEntry(fid, version) for fid, version in sorted(self.functions.items())]
        self.primary.send(m.Announce(load_permille=self.load_permille, functions=functions))

    # --- reachability --------------------------------------------------------------------

    def _refusal(self, protocol, inbound):
        remote = protocol.remote
        if inbound and remote.roles & Role.TRACKER and remote.node_id in self.sessions:
            self.dialback_received(protocol)
            return "dial-back answered"
        return super()._refusal(protocol, inbound)

    def dialback_received(self, protocol):
        if self.reachability != "reachable":
            log.info("tracker {peer} reached us at {addr}: we are reachable",
                     peer=protocol.remote.node_id.hex()[:16], addr=self.advertise)
        self.reachability = "reachable"
        if self._dialback_timer is not None and self._dialback_timer.active():
            self._dialback_timer.cancel()
        self._dialback_timer = None
        for p in self.sessions.values():
            self.advertise_self(p)

    def _no_dialback(self):
        self._dialback_timer = None
        if self.reachability == "unknown":
            self.reachability = "relayed"
            log.info("no tracker could dial us back: relayed through trackers")

    # --- keeping connected ---------------------------------------------------------------

    def maintain(self):
        now = self.clock.seconds()
        # A session that lasted clears its address's back-off; one refused right
        # after the handshake (a full tracker says BUSY) does not.
        for p in self.outbound():
            ready_at = getattr(p, "ready_at", None)
            if ready_at is None:
                p.ready_at = now
            elif now - ready_at >= DURABLE_SESSION_S:
                self._retry.pop(self._dialled(p), None)
        budget = MAX_DIALS_PER_TICK - sum(1 for key in self.dialling if key[2] == "regular")
        want_trackers = self.peer_config.outbound_trackers
        if self.reachability == "relayed":
            want_trackers = max(want_trackers, MIN_RELAYED_TRACKERS)
        trackers = len(self.outbound(Role.TRACKER))
        # The candidate list scans the whole address book: build it only when short of trackers.
        for host, port in self._tracker_candidates() if trackers < want_trackers else ():
            if trackers >= want_trackers or budget <= 0:
                break
            if self._try(host, port, now):
                trackers += 1
                budget -= 1
        peers = self.outbound(Role.PEER)
        groups = {self.peer_config.group_fn(peer_ip(p)) for p in peers if peer_ip(p)}
        missing = self.peer_config.outbound_peers - len(peers)
        for _ in range(min(missing, budget) * 4):
            if missing <= 0 or budget <= 0:
                break
            address = self.addrbook.select()
            if address is None:
                break
            if address.roles & Role.TRACKER and not address.roles & Role.PEER:
                continue
            group = self.peer_config.group_fn(address.ip)
            if group in groups and not is_loopback(address.ip):
                continue  # one outbound peer per network group (eclipse resistance)
            if self._try(address.ip, address.port, now, address.node_id):
                groups.add(group)
                missing -= 1
                budget -= 1
        self._test_before_evict(now)
        if not self.sessions and not self.dialling and not self._tracker_candidates():
            self._seed()
        if len(self.outbound(Role.PEER)) < self.peer_config.outbound_peers:
            for tracker in self.outbound(Role.TRACKER):
                asked = getattr(tracker, "asked_addr_at", None)
                if asked is None or now - asked >= READDR_INTERVAL_S:
                    tracker.asked_addr_at = now
                    self.ask_addresses(tracker)

    def _test_before_evict(self, now):
        """Dial a tried address that a newcomer wants to evict; evict it only if it fails."""
        self.addrbook.resolve_collisions()
        victim = self.addrbook.select_tried_collision()
        if victim is None or self.is_dialling(victim.ip, victim.port, "probe"):
            return
        d = self.dial(victim.ip, victim.port, expected_node_id=None, purpose="probe")

        def alive(protocol):
            self.addrbook.good(victim.ip, victim.port, node_id=protocol.remote.node_id)
            protocol.close("probe done")

        d.addCallbacks(alive, lambda f: self.addrbook.attempt(victim.ip, victim.port))

    def _tracker_candidates(self):
        """The address book's trackers first, then the configured ones."""
        connected = {p.remote.node_id for p in self.sessions.values()}
        tracker_bit = int(Role.TRACKER)  # plain ints: IntFlag '&' is slow in this loop
        known = [
            a.endpoint for a in self.addrbook.addresses()
            if a.roles & tracker_bit and a.node_id not in connected
        ]
        self.rng.shuffle(known)  # peers must not all crowd the same tracker first
        configured = [a for a in self.config.bootstrap if a not in known]
        own = (self.advertise, self._listen_address())
        return [a for a in known + configured if a not in own]

    def _try(self, host, port, now, node_id=None):
        if node_id is not None and (node_id in self.sessions or node_id == self.node_id):
            return False
        address = (host, port)
        if address in (self.advertise, self._listen_address()) or self.is_dialling(host, port):
            return False
        if any(self._dialled(p) == address for p in self.sessions.values() if p.factory.initiator):
            return False
        next_try, delay = self._retry.get(address, (0.0, RETRY_BASE_S))
        if now < next_try:
            return False
        if len(self._retry) >= MAX_RETRY_ENTRIES:
            self._retry.pop(next(iter(self._retry)))
        self._retry[address] = (now + delay, min(delay * 2, RETRY_MAX_S))
        d = self.dial(host, port, expected_node_id=node_id)
        d.addErrback(lambda f: None)  # the back-off stays until a session proves durable (maintain)
        return True

    def _seed(self):
        if self._seeded or self.seed_lookup is None:
            return
        self._seeded = True
        d = self.seed_lookup()

        def found(addresses):
            entries = [ab.PeerAddress(h, p, int(Role.TRACKER), b"\x00" * 32, int(self.clock.seconds()))
                       for h, p in addresses]
            self.addrbook.add(entries, "127.0.0.1")

        d.addCallbacks(found, lambda f: log.info("DNS seed lookup failed: {e}", e=f.getErrorMessage()))
        d.addBoth(lambda r: setattr(self, "_seeded", False))

