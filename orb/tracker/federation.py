# -*- test-case-name: tests.test_tracker_core -*-
"""
Tracker federation (RFC Section 8.6): links to the other trackers, and the
registry kept in step over them with SYNC and DELTA.

Links. A tracker dials every tracker it hears of (configured with --join,
announced in ADDR with the tracker role, or present in the registry), up
to MAX_TRACKER_LINKS, with an exponential back-off per address.

Admission (RFC Section 8.6). Claiming the TRACKER role in HELLO is not
enough to federate. A tracker federates only with the trackers it admits:
the node ids configured with --admit or pinned in --join NODEID@HOST:PORT,
the node that answers its own dial to a configured --join HOST:PORT, the
node that answers a --join-ca NAME:PORT dial whose certificate a CA vouches
for that name, and, with --admit-vouched, any tracker whose own signed
record reached us from an admitted tracker.
Any other node that claims the role gets a peer's privileges: its SYNC is
refused with ERROR(denied), its DELTA is dropped, it gets no tracker record
and no link. A tracker whose SYNC is refused with ERROR(denied) stops
syncing and pushing on that session.

Bounds. SYNC is answered at most SYNC_PER_S per link (after a burst of
SYNC_BURST), and a full snapshot at most once per SNAPSHOT_WINDOW_S per
link; over either, the answer is ERROR(rate_limited) and the asker tries
again at its next anti-entropy round. A snapshot's parts go out one at a
time, each once the remote has read the one before. A DELTA's changes are applied at most
APPLY_CHANGES_PER_S per link, APPLY_BATCH at a time, and the link is not
read meanwhile: one link's DELTAs cannot hold the reactor.

Anti-entropy. On every new tracker session each side sends SYNC(digest)
and applies the DELTA it gets back, so a partition heals on reconnect.
Afterwards every registry change is pushed at once as an unsolicited DELTA
to every tracker session; a gap in an origin's sequence numbers triggers
another SYNC, and a SYNC runs every ANTI_ENTROPY_INTERVAL_S anyway.
"""

import collections

from twisted.internet import error

from orb.net.adapter import RemoteError, RequestTimeout
from orb.net.limits import TokenBuckets
from orb.net.logs import escape, orb_logger
from orb.net.sessions import violation
from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode, Feature, Role
from orb.protocol.messages import MessageType
from orb.tracker import registry as reg

log = orb_logger()

MAX_TRACKER_LINKS = 16
PUSH_INTERVAL_S = 0.2
ANTI_ENTROPY_INTERVAL_S = 30.0
SYNC_TIMEOUT_S = 30.0
MAX_PENDING_PUSH = 2000
RETRY_BASE_S = 1.0
RETRY_MAX_S = 30.0
MAX_RETRY_ENTRIES = 1024
SYNC_PER_S = 0.2  # SYNCs answered per link: one every 5 s on average ...
SYNC_BURST = 5  # ... after a burst (a catch-up pages through DELTAs with "more")
SNAPSHOT_WINDOW_S = 60.0  # at most one full snapshot per link in this window
MAX_SNAPSHOT_MEMORY = 1024
SNAPSHOT_PACE_S = 0.05  # while the remote is not reading, look again this often before the next snapshot part
# Applying a DELTA is paced per link: at most APPLY_CHANGES_PER_S changes a
# second, APPLY_BATCH at a time with the reactor free in between, and the
# link is not read while a DELTA of it is being applied.
APPLY_CHANGES_PER_S = 2000
APPLY_BATCH = 200
MAX_QUEUED_DELTAS = 4  # more from one link while applying: dropped, and a SYNC catches up afterwards


class Federation:
    def __init__(self, clock, local, table, registry, bootstrap=(), admit=(), pinned=None, ca_joins=(),
                 admit_vouched=False):
        self.clock = clock
        self.ca_joins = tuple(ca_joins)  # (DNS name, port): admitted when a CA-verified dial reaches them
        self.admit_vouched = admit_vouched
        self.local = local
        self.table = table
        self.registry = registry
        self.bootstrap = tuple(bootstrap)
        self.pinned = dict(pinned or {})  # (host, port) -> the node id --join expects there
        self.admitted = set(admit) | set(self.pinned.values())
        self._refused_by = set()  # admitted trackers that refused to federate with us (ERROR denied)
        self._syncs = TokenBuckets(clock, SYNC_PER_S, SYNC_BURST, max_keys=MAX_SNAPSHOT_MEMORY)
        self._snapshot_sent_at = collections.OrderedDict()  # tracker id -> when we last sent it a snapshot
        self._applying = {}  # tracker id -> _Applying: the DELTAs of that link being applied, paced
        self._pending_push = []
        self._push_overflow = False
        self._retry = {}  # (host, port) -> (next try at, delay)
        self._link_ids = {}  # (host, port) dialled -> tracker node id
        registry.subscribe(self._queue_push)

    def handlers(self):
        return {MessageType.SYNC: self.on_sync, MessageType.DELTA: self.on_delta}

    def admits(self, record):
        """Whether this session's remote is a tracker we federate with."""
        if not record.is_tracker:
            return False
        if record.node_id in self.admitted:
            return True
        # Vouched for: its own signed record reached us from an admitted tracker, and is live.
        return self.admit_vouched and self.registry.tracker(record.node_id) is not None

    def links(self):
        return [r for r in self.table.records()
                if r.remote.features & Feature.FEDERATION and r.node_id not in self._refused_by and self.admits(r)]

    # --- sessions ---------------------------------------------------------------------

    def session_ready(self, record):
        if (record.is_tracker and not record.inbound and record.dialled in self.bootstrap + self.ca_joins
                and len(self.admitted) < MAX_RETRY_ENTRIES):
            # Whoever answers where the operator pointed --join; for --join-ca, TLS has
            # verified the name against the CA already, or there would be no session.
            self.admitted.add(record.node_id)
        if not self.admits(record):
            if record.is_tracker:
                log.info("{peer} claims the tracker role but is not admitted: served as a peer", peer=record.name)
            return
        self._refused_by.discard(record.node_id)  # its own signed record reaches us by federation
        self.registry.set_tracker_connected(record.node_id, True)
        if not record.inbound:
            if len(self._link_ids) >= MAX_RETRY_ENTRIES:
                self._link_ids.pop(next(iter(self._link_ids)))
            self._link_ids[record.dialled] = record.node_id
        if record.remote.features & Feature.FEDERATION:
            self.sync_with(record)
        log.info("tracker {peer} linked", peer=record.name)

    def session_lost(self, record):
        if record.is_tracker and record.node_id in self.admitted:
            self.registry.set_tracker_connected(record.node_id, False)
            log.info("tracker {peer} unlinked", peer=record.name)

    # --- addresses the tracker adds to its gossip ---------------------------------------

    def tracker_entries(self, exclude=None, limit=MAX_TRACKER_LINKS):
        """ADDR entries for the other trackers the registry knows (first address each)."""
        now = int(self.clock.seconds())
        roles = int(Role.TRACKER | Role.RELAY)
        others = [t for t in self.registry.trackers()
                  if t.node_id not in (self.local.node_id, exclude) and t.addresses]
        return [m.AddrEntry(now, *t.addresses[0], roles, t.node_id) for t in others[:limit]]

    # --- links ------------------------------------------------------------------------

    def maintain(self):
        """Keep a link to every tracker we know of, up to MAX_TRACKER_LINKS."""
        linked = {r.node_id for r in self.links()}
        if len(linked) >= MAX_TRACKER_LINKS:
            return
        now = self.clock.seconds()
        candidates = list(self.bootstrap) + list(self.ca_joins)
        for tracker in self.registry.trackers():
            if tracker.node_id != self.local.node_id and tracker.node_id not in linked:
                candidates.extend(tracker.addresses[:1])
        for address in candidates:
            host, port = address
            if self.local.is_own(address) or self.table.is_dialling(host, port):
                continue
            if self._link_ids.get(address) in linked:
                continue
            next_try, delay = self._retry.get(address, (0.0, RETRY_BASE_S))
            if now < next_try:
                continue
            if address not in self._retry and len(self._retry) >= MAX_RETRY_ENTRIES:
                self._retry.pop(next(iter(self._retry)))
            self._retry[address] = (now + delay, min(delay * 2, RETRY_MAX_S))
            if address in self.ca_joins:
                d = self.table.dial(host, port, server_name=host)
            else:
                d = self.table.dial(host, port, expected_node_id=self.pinned.get(address))
            d.addCallbacks(lambda r, a=address: self._retry.pop(a, None), lambda f: None)

    # --- SYNC and DELTA ---------------------------------------------------------------

    def sync_with(self, record):
        if record.syncing or not record.ready:
            return
        record.syncing = True
        d = record.request(m.Sync(digest=self.registry.digest().to_bytes()), timeout_s=SYNC_TIMEOUT_S)

        def done(result):
            record.syncing = False
            return result

        def refused(failure):
            failure.trap(RemoteError)
            if failure.value.code == ErrorCode.DENIED:
                log.warn("tracker {peer} does not admit us: no federation on this link", peer=record.name)
                self._refused_by.add(record.node_id)

        d.addBoth(done)
        d.addCallbacks(lambda delta: self.apply(record, delta), refused)
        d.addErrback(lambda f: f.trap(RequestTimeout, error.ConnectionLost, error.ConnectionDone))

    def anti_entropy(self):
        for record in self.links():
            self.sync_with(record)

    def on_sync(self, record, message, request_id):
        if not self.admits(record):
            record.refuse(request_id, ErrorCode.DENIED, "SYNC is for admitted trackers")
            self.table.misbehaved(record.protocol, violation("SYNC from an unadmitted node", ErrorCode.DENIED,
                                                             fatal=False))
            return
        try:
            digest = reg.Digest.from_bytes(message.digest)
        except reg.RegistryChangeError as e:
            record.refuse(request_id, ErrorCode.MALFORMED, f"bad digest: {e}")
            self.table.misbehaved(record.protocol, violation(e))
            return
        if not self._syncs.allow(record.node_id):
            record.refuse(request_id, ErrorCode.RATE_LIMITED, "SYNC rate exceeded: at most one every 5 s")
            return
        answer = self.registry.delta_since(digest)
        if isinstance(answer, reg.Snapshot):
            now = self.clock.seconds()
            last = self._snapshot_sent_at.get(record.node_id)
            if last is not None and now - last < SNAPSHOT_WINDOW_S:
                record.refuse(request_id, ErrorCode.RATE_LIMITED,
                              f"a full snapshot was sent {now - last:.0f} s ago; ask again after {SNAPSHOT_WINDOW_S:g} s")
                return
            self._snapshot_sent_at.pop(record.node_id, None)
            self._snapshot_sent_at[record.node_id] = now
            while len(self._snapshot_sent_at) > MAX_SNAPSHOT_MEMORY:
                self._snapshot_sent_at.popitem(last=False)
            self._send_snapshot(record, collections.deque(self.registry.snapshot_parts()), request_id)
        else:
            record.send(m.Delta(kind=int(m.DeltaKind.CHANGES), payload=answer.to_bytes()), response_to=request_id)

    def _send_snapshot(self, record, parts, request_id):
        """Send a snapshot's parts, each only once the remote has read the one before (backpressure)."""
        while parts:
            if not record.ready:
                return
            if record.protocol.output_paused:
                self.clock.callLater(SNAPSHOT_PACE_S, self._send_snapshot, record, parts, request_id)
                return
            part = parts.popleft()
            delta = m.Delta(kind=int(m.DeltaKind.SNAPSHOT), payload=part.to_bytes())
            record.send(delta, response_to=0 if parts else request_id)

    def on_delta(self, record, message, request_id):
        if not record.is_tracker:
            self.table.misbehaved(record.protocol, violation("DELTA from a non-tracker", ErrorCode.DENIED))
            return
        if not self.admits(record):
            # Dropped unread. Not fatal: a tracker that has not yet seen our refusal may push once or twice.
            self.table.misbehaved(record.protocol, violation("DELTA from an unadmitted tracker", ErrorCode.DENIED,
                                                             fatal=False))
            return
        self.apply(record, message)

    def apply(self, record, message):
        try:
            if message.kind == m.DeltaKind.SNAPSHOT:
                self.registry.apply_snapshot(reg.Snapshot.from_bytes(message.payload), link=record.node_id)
                return
            delta = reg.Delta.from_bytes(message.payload)
        except reg.RegistryChangeError as e:
            log.warn("bad DELTA from {peer}: {error}", peer=record.name, error=escape(e, 120))
            self.table.misbehaved(record.protocol, violation(e))
            return
        work = self._applying.get(record.node_id)
        if work is None:
            work = self._applying[record.node_id] = _Applying(record)
            record.protocol.pause_reading("apply")
            self.clock.callLater(0, self._apply_batch, record.node_id)
        if len(work.deltas) >= MAX_QUEUED_DELTAS:
            work.resync = True  # the rest comes by SYNC once this link's queue is applied
            return
        work.deltas.append(delta)

    def _apply_batch(self, node_id):
        work = self._applying.get(node_id)
        if work is None:
            return
        budget = APPLY_BATCH
        while budget > 0 and (work.changes or work.deltas):
            if not work.changes:
                delta = work.deltas.popleft()
                work.changes = collections.deque(delta.changes)
                work.resync = work.resync or delta.more
                continue
            change = work.changes.popleft()
            result = self.registry.apply_remote(change, link=node_id)
            if result is reg.ApplyResult.GAP:
                work.resync = True
            elif result is reg.ApplyResult.REFUSED:
                # A forged or over-bound change: what follows from its origin would be a gap.
                work.changes = collections.deque(c for c in work.changes if c.origin != change.origin)
                self.table.misbehaved(work.record.protocol, violation(
                    f"DELTA change from {change.origin.hex()[:16]} #{change.seq} refused", fatal=False))
            budget -= 1
        if work.changes or work.deltas:
            self.clock.callLater((APPLY_BATCH - budget) / APPLY_CHANGES_PER_S, self._apply_batch, node_id)
            return
        del self._applying[node_id]
        work.record.protocol.resume_reading("apply")
        if work.resync:
            self.clock.callLater(0, self.sync_with, work.record)

    # --- pushing our changes ----------------------------------------------------------

    def _queue_push(self, change):
        if len(self._pending_push) >= MAX_PENDING_PUSH:
            self._push_overflow = True  # anti-entropy will carry the rest
            return
        self._pending_push.append(change)

    def push_changes(self):
        if self._push_overflow:
            self._push_overflow = False
            self._pending_push.clear()
            self.anti_entropy()
            return
        if not self._pending_push:
            return
        changes, self._pending_push = self._pending_push, []
        links = self.links()
        if not links:
            return
        payload = reg.Delta(changes=tuple(changes), more=False).to_bytes()
        if len(payload) > m.MAX_REGISTRY_JSON_BYTES:
            self.anti_entropy()
            return
        for record in links:
            record.send(m.Delta(kind=int(m.DeltaKind.CHANGES), payload=payload))


class _Applying:
    """One link's DELTAs waiting to be applied, and the one being applied."""

    def __init__(self, record):
        self.record = record
        self.deltas = collections.deque()
        self.changes = collections.deque()
        self.resync = False
