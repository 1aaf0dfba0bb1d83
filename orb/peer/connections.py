# -*- test-case-name: tests.test_peer_core -*-
"""
How a peer joins the network and stays connected (RFC Sections 8.1, 8.2
and 8.7).

Bootstrap order (Bitcoin's): the persisted address book first, then the
configured trackers (--tracker), then the DNS seed ``seed.orb`` (the
``seed_lookup`` hook, until the DNS issue lands). The peer keeps
``outbound_peers`` outbound peer sessions and ``outbound_trackers``
outbound tracker sessions, at most one outbound peer per network group,
and accepts inbound sessions up to ``max_inbound``.

Reachability. After its first tracker session the peer waits
``dialback_wait_s`` for that tracker to dial back its advertised address.
A dial-back shows up as a second, inbound session from a tracker we are
already connected to; it marks the peer ``reachable`` and is refused with
SHUTDOWN("dial-back answered"). Without one the peer is ``relayed`` and
keeps at least MIN_RELAYED_TRACKERS tracker sessions open, through which
the trackers relay calls to it.
"""

import collections

from orb.net import addrbook as ab
from orb.net.logs import orb_logger
from orb.net.sessions import Purpose, Reachability, Refusal, is_loopback
from orb.protocol.codes import ErrorCode, Role

log = orb_logger()

READDR_INTERVAL_S = 15.0  # ask trackers for addresses again while short of outbound peers or trackers
DURABLE_SESSION_S = 60.0  # a session this old clears its address's redial back-off
MAX_DIALS_PER_TICK = 4
MIN_RELAYED_TRACKERS = 2
RETRY_BASE_S = 1.0
RETRY_MAX_S = 30.0
MAX_RETRY_ENTRIES = 4096
MAX_KNOWN_TRACKERS = 64  # tracker addresses our trackers told us of, kept beside the address book


class Connections:
    def __init__(self, clock, local, table, gossip, addrbook, rng, *, bootstrap=(), outbound_peers=8,
                 outbound_trackers=2, dialback_wait_s=10.0, group_fn=ab.network_group, seed_lookup=None):
        self.clock = clock
        self.local = local
        self.table = table
        self.gossip = gossip
        self.addrbook = addrbook
        self.rng = rng
        self.bootstrap = tuple(bootstrap)
        self.outbound_peers = outbound_peers
        self.outbound_trackers = outbound_trackers
        self.dialback_wait_s = dialback_wait_s
        self.group_fn = group_fn
        self.seed_lookup = seed_lookup  # () -> Deferred[list[(host, port)]], the DNS seed hook
        self.reachability = Reachability.UNKNOWN
        self._dialback_timer = None
        self._retry = {}  # (host, port) -> (next try at, delay)
        self._seeding = False
        # Trackers our trackers told us of. The address book may drop an entry on a bucket
        # collision; a peer that needs a second tracker must not depend on that.
        self._known_trackers = collections.OrderedDict()  # (host, port) -> node id

    # --- sessions ---------------------------------------------------------------------

    def admit(self, record):
        """Admission check: an inbound session from a tracker we already have is its dial-back."""
        if record.inbound and record.is_tracker and record.node_id in self.table:
            self.dialback_received(record)
            return Refusal("dial-back answered", ErrorCode.SHUTDOWN)
        return None

    def session_ready(self, record):
        if self.local.advertise is None and record.is_tracker and self.local.listening is not None:
            # Listening on a wildcard address: advertise what the tracker sees, at our port.
            self.local.advertise = (record.remote.observed_us.host, self.local.listening[1])
            log.info("advertising {addr}, as observed by tracker {peer}", addr=self.local.advertise, peer=record.name)
        if not record.inbound:
            self.gossip.ask(record)
            if record.is_tracker and self._dialback_timer is None and self.reachability is Reachability.UNKNOWN:
                self._dialback_timer = self.clock.callLater(self.dialback_wait_s, self._no_dialback)
        if self.reachability is Reachability.REACHABLE:
            self.gossip.advertise(record)

    def dialback_received(self, record):
        if self.reachability is not Reachability.REACHABLE:
            log.info("tracker {peer} reached us at {addr}: we are reachable", peer=record.name,
                     addr=self.local.advertise)
        self.reachability = Reachability.REACHABLE
        self._cancel_dialback_timer()
        for other in self.table.records():
            self.gossip.advertise(other)

    def _no_dialback(self):
        self._dialback_timer = None
        if self.reachability is Reachability.UNKNOWN:
            self.reachability = Reachability.RELAYED
            log.info("no tracker could dial us back: relayed through trackers")

    def _cancel_dialback_timer(self):
        if self._dialback_timer is not None and self._dialback_timer.active():
            self._dialback_timer.cancel()
        self._dialback_timer = None

    def stop(self):
        self._cancel_dialback_timer()

    def addresses_learned(self, record, entries):
        """Remember the trackers a tracker tells us of."""
        if not record.is_tracker:
            return
        for e in entries:
            if e.roles & int(Role.TRACKER) and e.node_id != self.local.node_id:
                self._known_trackers.pop((e.host, e.port), None)
                self._known_trackers[(e.host, e.port)] = e.node_id
        while len(self._known_trackers) > MAX_KNOWN_TRACKERS:
            self._known_trackers.popitem(last=False)

    # --- keeping connected ------------------------------------------------------------

    def maintain(self):
        now = self.clock.seconds()
        # A session that lasted clears its address's back-off; one refused right
        # after the handshake (a full tracker says BUSY) does not.
        for record in self.table.outbound():
            if now - record.opened_at >= DURABLE_SESSION_S:
                self._retry.pop(record.dialled, None)
        budget = MAX_DIALS_PER_TICK - self.table.dialling_count(Purpose.REGULAR)
        want_trackers = self.outbound_trackers
        if self.reachability is Reachability.RELAYED:
            want_trackers = max(want_trackers, MIN_RELAYED_TRACKERS)
        trackers = len(self.table.outbound(trackers=True))
        # The candidate list scans the whole address book: build it only when short of trackers.
        for host, port in self._tracker_candidates() if trackers < want_trackers else ():
            if trackers >= want_trackers or budget <= 0:
                break
            if self._try(host, port, now):
                trackers += 1
                budget -= 1
        peers = self.table.outbound(trackers=False)
        groups = {self.group_fn(r.ip) for r in peers if r.ip}
        missing = self.outbound_peers - len(peers)
        for _ in range(min(missing, budget) * 4):
            if missing <= 0 or budget <= 0:
                break
            address = self.addrbook.select()
            if address is None:
                break
            if address.roles & Role.TRACKER and not address.roles & Role.PEER:
                continue
            group = self.group_fn(address.ip)
            if group in groups and not is_loopback(address.ip):
                continue  # one outbound peer per network group (eclipse resistance)
            if self._try(address.ip, address.port, now, address.node_id):
                groups.add(group)
                missing -= 1
                budget -= 1
        self._test_before_evict()
        if not len(self.table) and not self.table.dialling_count() and not self._tracker_candidates():
            self._seed()
        short_of_peers = len(self.table.outbound(trackers=False)) < self.outbound_peers
        short_of_trackers = len(self.table.outbound(trackers=True)) < want_trackers
        if short_of_peers or short_of_trackers:
            # Ask the trackers again: a tracker that appeared after our first GETADDR may have
            # reached us by no relay (ADDR relay goes to two random sessions only).
            for tracker in self.table.outbound(trackers=True):
                asked = tracker.addr_asked_at
                if asked is None or now - asked >= READDR_INTERVAL_S:
                    self.gossip.ask(tracker)

    def _test_before_evict(self):
        """Dial a tried address that a newcomer wants to evict; evict it only if it fails."""
        self.addrbook.resolve_collisions()
        victim = self.addrbook.select_tried_collision()
        if victim is None or self.table.is_dialling(victim.ip, victim.port, Purpose.PROBE):
            return
        d = self.table.dial(victim.ip, victim.port, purpose=Purpose.PROBE)

        def alive(record):
            self.addrbook.good(victim.ip, victim.port, node_id=record.node_id)
            record.close("probe done")

        d.addCallbacks(alive, lambda f: self.addrbook.attempt(victim.ip, victim.port))

    def _tracker_candidates(self):
        """The trackers our trackers told us of and the address book's, in random order, then the configured ones."""
        tracker_bit = int(Role.TRACKER)  # plain ints: IntFlag '&' is slow in this loop
        known = {a.endpoint for a in self.addrbook.addresses() if a.roles & tracker_bit and a.node_id not in self.table}
        known.update(a for a, node_id in self._known_trackers.items() if node_id not in self.table)
        known = sorted(known)
        self.rng.shuffle(known)  # peers must not all crowd the same tracker first
        configured = [a for a in self.bootstrap if a not in known]
        return [a for a in known + configured if not self.local.is_own(a)]

    def _try(self, host, port, now, node_id=None):
        if node_id is not None and (node_id in self.table or node_id == self.local.node_id):
            return False
        address = (host, port)
        if self.local.is_own(address) or self.table.is_dialling(host, port):
            return False
        if any(r.dialled == address for r in self.table.outbound()):
            return False
        next_try, delay = self._retry.get(address, (0.0, RETRY_BASE_S))
        if now < next_try:
            return False
        if address not in self._retry and len(self._retry) >= MAX_RETRY_ENTRIES:
            self._retry.pop(next(iter(self._retry)))
        self._retry[address] = (now + delay, min(delay * 2, RETRY_MAX_S))
        d = self.table.dial(host, port, expected_node_id=node_id)
        d.addErrback(lambda f: None)  # the back-off stays until a session proves durable (maintain)
        return True

    def _seed(self):
        if self._seeding or self.seed_lookup is None:
            return
        self._seeding = True
        d = self.seed_lookup()

        def found(addresses):
            entries = [ab.PeerAddress(h, p, int(Role.TRACKER), b"\x00" * 32, int(self.clock.seconds()))
                       for h, p in addresses]
            self.addrbook.add(entries, "127.0.0.1")

        d.addCallbacks(found, lambda f: log.info("DNS seed lookup failed: {e}", e=f.getErrorMessage()))
        d.addBoth(lambda _: setattr(self, "_seeding", False))
