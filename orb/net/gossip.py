# -*- test-case-name: tests.test_gossip -*-
"""
GETADDR/ADDR address gossip (RFC Section 8.3), as Bitcoin does it.

Addresses learned from ADDR go into the address book. A small ADDR of
fresh addresses is news: it is relayed to ADDR_RELAY_FANOUT random other
sessions, each address at most once a day. A GETADDR is answered from the
address book (23% of it, at most 1000 entries), plus what the role adds
(``extra_addresses``: a tracker adds itself, the other trackers and
reachable peers). A peer answers once per session, against address
harvesting; a tracker, whose job is discovery, again after
``getaddr_interval_s``.
"""

import collections

from twisted.internet import error

from orb.net import addrbook as ab
from orb.net.adapter import RemoteError, RequestTimeout
from orb.net.logs import orb_logger
from orb.protocol import messages as m
from orb.protocol.messages import MessageType

log = orb_logger()

ADDR_RELAY_FANOUT = 2  # fresh addresses go to this many random sessions
ADDR_RELAY_MAX_ENTRIES = 10  # larger ADDR messages are answers, not news; not relayed
ADDR_FRESH_S = 10 * 60  # an address is fresh if its timestamp is this recent
ADDR_RELAY_ONCE_S = 24 * 3600  # an address is relayed at most once a day (as Bitcoin does)
MAX_RELAYED_REMEMBERED = 10_000
GETADDR_TIMEOUT_S = 30.0


class Gossip:
    """Handles GETADDR and ADDR; asks for and advertises addresses."""

    def __init__(self, clock, local, table, addrbook, rng, *, getaddr_interval_s=None,
                 extra_addresses=None, advertised_extras=None):
        self.clock = clock
        self.local = local
        self.table = table
        self.addrbook = addrbook
        self.rng = rng
        self.getaddr_interval_s = getaddr_interval_s
        self.extra_addresses = extra_addresses or (lambda: [])
        self.advertised_extras = advertised_extras or (lambda record: [])
        self._relayed = collections.OrderedDict()  # (host, port) -> when we last relayed it
        self.learned_listeners = []  # callables(record, entries): every ADDR entry list learned

    def handlers(self):
        return {MessageType.GETADDR: self.on_getaddr, MessageType.ADDR: self.on_addr}

    def self_entries(self):
        return [self.local.addr_entry(self.clock.seconds())] if self.local.advertise else []

    def on_getaddr(self, record, message, request_id):
        now = self.clock.seconds()
        last = record.getaddr_answered_at
        if last is not None and (self.getaddr_interval_s is None or now - last < self.getaddr_interval_s):
            entries = ()
        else:
            record.getaddr_answered_at = now
            entries = [_entry(a) for a in self.addrbook.get_addr()]
            entries = m.dedupe_addr_entries(entries + self.self_entries() + list(self.extra_addresses()))
        record.send(m.Addr(entries=entries), response_to=request_id)

    def on_addr(self, record, message, request_id):
        self.learn(record, message.entries, relay=True)

    def learn(self, record, entries, relay):
        source = record.ip or "::"
        own = self.local.node_id
        addrs = [ab.PeerAddress(e.host, e.port, e.roles, e.node_id, e.timestamp) for e in entries if e.node_id != own]
        self.addrbook.add(addrs, source=source)
        for listener in self.learned_listeners:
            listener(record, entries)
        if not relay or len(entries) > ADDR_RELAY_MAX_ENTRIES:
            return
        now = self.clock.seconds()
        fresh = []
        for e in entries:
            if not now - ADDR_FRESH_S <= e.timestamp <= now + ADDR_FRESH_S or e.node_id == own:
                continue
            last = self._relayed.get((e.host, e.port))
            if last is not None and now - last < ADDR_RELAY_ONCE_S:
                continue  # already relayed: relaying again would only echo around the network
            self._relayed.pop((e.host, e.port), None)
            self._relayed[(e.host, e.port)] = now
            fresh.append(e)
        while len(self._relayed) > MAX_RELAYED_REMEMBERED:
            self._relayed.popitem(last=False)
        if not fresh:
            return
        others = [r for r in self.table.records() if r is not record]
        for target in self.rng.sample(others, min(ADDR_RELAY_FANOUT, len(others))):
            target.send(m.Addr(entries=fresh))

    def ask(self, record):
        """Send GETADDR; learn the answer without relaying it."""
        record.addr_asked_at = self.clock.seconds()
        d = record.request(m.GetAddr(), timeout_s=GETADDR_TIMEOUT_S)
        d.addCallback(lambda addr: self.learn(record, addr.entries, relay=False))
        d.addErrback(lambda f: f.trap(RemoteError, RequestTimeout, error.ConnectionLost, error.ConnectionDone))
        return d

    def advertise(self, record):
        """Tell a session about us (and what the role adds)."""
        if not record.ready:
            return
        entries = m.dedupe_addr_entries(self.self_entries() + list(self.advertised_extras(record)))
        if entries:
            record.send(m.Addr(entries=entries))


def _entry(addr):
    return m.AddrEntry(max(0, int(addr.timestamp)), addr.ip, addr.port, addr.roles & 0xFF, addr.node_id)
