# -*- test-case-name: tests.test_registry -*-
"""
The tracker registry core: peers, trackers and functions, and how trackers
keep their registries in agreement.  Pure: it takes a clock and does no
I/O.  The wire format of what it exchanges is ``orb.protocol.federation``;
its SQL store is ``orb.tracker.store``; which replica serves a call is
``orb.tracker.routing``.

Records carry their own proof (RFC 8.6.1).  The replicated state is a map
from an entity key (``peer:<hex>``, ``fn:<fid>``, ``tracker:<hex>``, one
prefix per entry of the kinds table) to a record that is a statement signed
by the key it speaks for:

* a peer's record is the peer's own statement (addresses, hosted fids,
  load, home tracker, ``seq``, ``time``) and, beside it, its home tracker's
  observation of it (reachability, RTT, whether its session is up), signed
  by that tracker and bound to the statement's ``seq``;
* a tracker's record is its own statement of its addresses;
* a function's record is its owner's statement.

Every record is verified before it is taken, from a peer, from an owner or
from another tracker; a tracker relays records as they are and cannot alter
one.  Writes to one key are ordered by ``record.order()``: the subject's
own sequence number (then the observation's), never a clock a remote can
push.

Liveness is judged here, from the age of the latest signed statement: a
peer or tracker record whose ``time`` is more than the kind's TTL old is
*stale*: kept (so that every tracker holds the same map) but not served;
older than ``PURGE_AFTER_S`` it is forgotten.  A peer whose home observes
its session gone is not served either.  Nothing is ever removed on another
tracker's word.

Delivery.  Every record taken in is logged as a ``Change`` stamped with
``origin`` (the tracker that first took it in) and that origin's ``seq``
(1, 2, 3, ... with no gaps).  A tracker accepts origin O's change ``n``
only after ``n - 1`` (``GAP`` otherwise), so a digest summarises what a
tracker has as one number per origin plus a hash of its map.
``delta_since(their_digest)`` returns the changes they lack from the
bounded change log, or a ``Snapshot`` when the log no longer reaches back
far enough, or when the numbers agree but the hashes do not.

Bounds.  Each kind holds at most ``max_records`` (a stale record makes room
first); at most MAX_ORIGINS origins, of which one federation link may
introduce MAX_ORIGINS_PER_LINK; a tracker record enters by federation only
as its own tracker's change; a statement dated more than
MAX_CLOCK_AHEAD_S ahead of this clock is not taken; and a remote change may
move our own seq ahead by at most MAX_STAMP_STEP.
"""

from __future__ import annotations

import collections
import enum
import heapq
import math
from collections.abc import Callable, Iterable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from orb.protocol.federation import (  # re-exported: the daemon and bench use them from here
    FUNCTION,
    KINDS,
    PLACEMENT,
    MAX_ADDRESSES,
    MAX_FUNCTIONS_PER_PEER,
    MAX_ORIGINS,
    MAX_PAYLOAD_BYTES,
    MAX_PEERS,
    MAX_RTT_MS,
    PEER,
    TRACKER,
    BadSignature,
    Change,
    Delta,
    Digest,
    FunctionRecord,
    Kinds,
    KindSpec,
    Observation,
    PeerRecord,
    Placement,
    PeerStatement,
    RegistryChangeError,
    Snapshot,
    SnapshotEntry,
    TrackerRecord,
    canonical_addresses,
    entry_bytes,
    hash_lines,
)
from orb.tracker import store
from orb.tracker.store import MIGRATIONS, StoredEntry, StoredState

log = Logger()

__all__ = [
    "MAX_ADDRESSES", "MAX_FUNCTIONS_PER_PEER", "MAX_PEERS", "MIGRATIONS", "DEFAULT_PEER_TTL_S",
    "ApplyResult", "BadSignature", "Change", "Delta", "Digest", "FunctionRecord", "KindSpec", "Kinds",
    "Observation", "PeerRecord", "PeerStatement", "Placement", "Registry", "RegistryChangeError", "RegistryFull", "Snapshot",
    "SnapshotEntry", "TrackerRecord", "canonical_addresses",
]

MAX_CHANGE_LOG = 10_000
DEFAULT_PEER_TTL_S = 90.0  # three missed ANNOUNCE refreshes (every 30 s)
TRACKER_RESIGN_S = 60.0  # a tracker re-signs its own record this often
PURGE_AFTER_S = 3600.0  # a stale record is forgotten once its statement is this old
MAX_CLOCK_AHEAD_S = 120  # a statement dated further ahead of our clock is not taken
MAX_ORIGINS_PER_LINK = 64  # new origins one federation link may introduce
RTT_REPLICATE_FRACTION = 0.25  # re-sign an observation for an RTT only when it moved this much
SNAPSHOT_ENVELOPE_BYTES = 4096  # room for ``known`` and the envelope in a snapshot part

# How far one remote change may move our own seq ahead.  Honest trackers
# advance it by one per change; without the bound one change stamped
# 2^63-1 would leave no room for the next local one.
MAX_STAMP_STEP = 2**32


class RegistryFull(Exception):
    """A local write would exceed one of the registry's bounds."""


class ApplyResult(enum.Enum):
    APPLIED = "applied"  # delivered (its record may still lose to a newer one)
    STALE = "stale"  # already had it
    GAP = "gap"  # an earlier change from that origin is missing: run anti-entropy
    REFUSED = "refused"  # over a bound, or not validly signed: the sender is scored


def _rtt_ms(v: float | None) -> int | None:
    """A local RTT measurement as the record holds it: whole ms, clamped."""
    if v is None or not 0 <= v < math.inf:  # also None for NaN
        return None
    return min(int(round(v)), MAX_RTT_MS)


@attrs.define
class _Entry:
    record: Any
    changed_s: float
    encoded: bytes | None = None  # its JCS entry bytes, made once when first needed

    def to_bytes(self, key: str) -> bytes:
        if self.encoded is None:
            self.encoded = entry_bytes(SnapshotEntry(key, self.record))
        return self.encoded


class Registry:
    """See the module docstring.  ``key`` is this tracker's node key (it
    signs the tracker's own record and its observations).
    ``subscribe(fn)`` gets every change that enters the log (local ones and
    newly applied remote ones): that is what the federation adapter
    forwards to the other trackers."""

    def __init__(
        self,
        clock: Any,
        key: Any,
        peer_ttl_s: float = DEFAULT_PEER_TTL_S,
        tracker_ttl_s: float | None = None,
        kinds: Kinds = KINDS,
    ) -> None:
        self._clock = clock
        self._key = key
        self.tracker_id = key.node_id
        self.peer_ttl_s = peer_ttl_s
        self.tracker_ttl_s = tracker_ttl_s if tracker_ttl_s is not None else 3 * TRACKER_RESIGN_S
        for base in (PEER, FUNCTION, TRACKER):
            if base.name not in {spec.name for spec in kinds}:
                raise ValueError(f"the kinds table lacks {base.name!r}, which the core relies on")
        self.kinds = kinds
        self._entries: dict[str, _Entry] = {}
        self._views: dict[str, dict[str, Any]] = {spec.name: {} for spec in kinds}
        self._counts: dict[str, int] = {spec.name: 0 for spec in kinds}
        self._by_age: dict[str, list[tuple[int, str]]] = {spec.name: [] for spec in kinds}
        self._peer_seen: dict[bytes, float] = {}
        self._tracker_connected: dict[bytes, bool] = {}
        self._seq = 0
        self._statement_seq = 0
        self._known: dict[bytes, int] = {}
        self._origin_link: dict[bytes, bytes | None] = {}
        self._log: dict[bytes, collections.deque[Change]] = {}
        self._log_order: collections.deque[bytes] = collections.deque()
        self._observer: Callable[[Change], None] | None = None
        self._watchers: list[Callable[[Change], None]] = []
        self._takers: list[Callable[[KindSpec, Any], None]] = []
        self._hash: bytes | None = None

    # -- queries ----------------------------------------------------------------

    def now(self) -> float:
        return self._clock.seconds()

    def records(self, kind: str) -> list[Any]:
        """The live (not stale) records of ``kind``."""
        return list(self._views[kind].values())

    def record(self, kind: str, ident: str) -> Any:
        return self._views[kind].get(ident)

    def stored(self, kind: str, ident: str) -> Any:
        """The record held for ``ident``, stale or not."""
        entry = self._entries.get(self.kinds.named(kind).key(ident))
        return None if entry is None else entry.record

    def peers(self) -> list[PeerRecord]:
        return self.records(PEER.name)

    def peer(self, node_id: bytes) -> PeerRecord | None:
        return self._views[PEER.name].get(node_id.hex())

    def peer_last_seen(self, node_id: bytes) -> float | None:
        return self._peer_seen.get(node_id)

    def functions(self) -> list[FunctionRecord]:
        return self.records(FUNCTION.name)

    def function(self, fid: str) -> FunctionRecord | None:
        return self._views[FUNCTION.name].get(fid)

    def placement(self, fid: str) -> Placement | None:
        return self._views[PLACEMENT.name].get(fid)

    def trackers(self) -> list[TrackerRecord]:
        return self.records(TRACKER.name)

    def tracker(self, node_id: bytes) -> TrackerRecord | None:
        return self._views[TRACKER.name].get(node_id.hex())

    def tracker_connected(self, node_id: bytes) -> bool:
        return self._tracker_connected.get(node_id, False)

    def counts(self) -> dict[str, int]:
        return {
            "peers": len(self._views[PEER.name]),
            "trackers": len(self._views[TRACKER.name]),
            "functions": len(self._views[FUNCTION.name]),
            "entries": len(self._entries),
            "changes_logged": len(self._log_order),
        }

    @property
    def seq(self) -> int:
        return self._seq

    def subscribe(self, observer: Callable[[Change], None]) -> None:
        """Call ``observer(change)`` for every change entering the log: the
        federation push.  There is one observer.  It runs synchronously
        inside the registry call: it must only queue, never call back into
        the registry."""
        if self._observer is not None:
            raise ValueError("the registry already has an observer")
        self._observer = observer

    def watch(self, listener: Callable[[Change], None]) -> None:
        """Also call ``listener(change)`` for every change entering the log
        (the replication manager reacts to peers and placements at once).
        Same rule as the observer: queue, never call back in."""
        self._watchers.append(listener)

    def watch_records(self, listener: Callable[[KindSpec, Any], None]) -> None:
        """Call ``listener(spec, record)`` for every record that enters the map, however it came:
        a local intake, a remote change, a snapshot entry (which enter no change log) or a restore.
        Same rule as the observer: queue, never call back in."""
        self._takers.append(listener)

    # -- freshness ------------------------------------------------------------

    def ttl_s(self, spec: KindSpec) -> float | None:
        if not spec.expires:
            return None
        return self.peer_ttl_s if spec.name == PEER.name else self.tracker_ttl_s

    def _live(self, spec: KindSpec, record: Any, now: float) -> bool:
        if getattr(record, "not_after", None) is not None and now > record.not_after:
            return False  # a revocation past its token's expiry (RFC 9.11)
        ttl = self.ttl_s(spec)
        if ttl is not None and now - record.time > ttl:
            return False
        return not (spec.name == PEER.name and not record.connected)

    def _purgeable(self, spec: KindSpec, record: Any, now: float) -> bool:
        if getattr(record, "not_after", None) is not None:
            return now > record.not_after  # forgotten once what it revokes has expired anyway
        return spec.expires and now - record.time > PURGE_AFTER_S

    # -- the map ----------------------------------------------------------------

    def _take(self, spec: KindSpec, record: Any, now: float, local: bool, verified: bool = False) -> bool:
        """Merge a validated record: True if the map changed.  Verifies the
        signature (``BadSignature``) only when the record would win.  A
        full kind makes room by dropping its stalest record, else refuses
        (``RegistryFull`` when ``local``)."""
        key = spec.key(record.ident)
        cur = self._entries.get(key)
        if cur is not None and cur.record.order() >= record.order():
            return False
        if not verified:
            record.verify()
        if getattr(record, "time", 0) > now + MAX_CLOCK_AHEAD_S or self._purgeable(spec, record, now):
            if local:
                raise RegistryChangeError(
                    f"{spec.name} statement dated {record.time - now:+.0f} s from now: check the clock")
            return False
        if cur is None and not self._make_room(spec, record, now):
            if local:
                raise RegistryFull(f"registry holds {spec.max_records} {spec.name} records")
            log.warn("registry full: dropping {key}", key=key[:80])
            return False
        self._entries[key] = _Entry(record, now)
        self._index(spec, key, record, new=cur is None)
        self._hash = None
        if self._live(spec, record, now):
            self._views[spec.name][record.ident] = record
        else:
            self._views[spec.name].pop(record.ident, None)
        for listener in self._takers:
            try:
                listener(spec, record)
            except Exception:
                log.failure("registry record listener failed on {kind}", kind=spec.name)
        return True

    def _make_room(self, spec: KindSpec, record: Any, now: float) -> bool:
        """Room for one more record of ``spec``: at the bound, the record
        with the oldest statement goes if it is older than ``record``'s
        (O(log n): a lazy heap of (time, key) per kind)."""
        if self._counts[spec.name] < spec.max_records:
            return True
        if not spec.expires:
            return False
        heap = self._by_age[spec.name]
        while heap:
            time, key = heap[0]
            entry = self._entries.get(key)
            if entry is None or entry.record.time != time:
                heapq.heappop(heap)  # superseded or forgotten
                continue
            if time >= record.time:
                return False
            self._forget(key)
            return True
        return False

    def _index(self, spec: KindSpec, key: str, record: Any, new: bool) -> None:
        if new:
            self._counts[spec.name] += 1
        if spec.expires:
            heap = self._by_age[spec.name]
            heapq.heappush(heap, (record.time, key))
            if len(heap) > 2 * self._counts[spec.name] + 64:
                live = [(e.record.time, k) for k, e in self._entries.items() if k.startswith(spec.prefix + ":")]
                heapq.heapify(live)
                self._by_age[spec.name] = live

    def _forget(self, key: str) -> None:
        entry = self._entries.pop(key)
        spec = self.kinds.of_key(key)[0]
        self._counts[spec.name] -= 1
        self._views[spec.name].pop(entry.record.ident, None)
        self._hash = None
        if spec.name == PEER.name:
            self._peer_seen.pop(entry.record.node_id, None)

    # -- the change log ---------------------------------------------------------

    def _log_change(self, change: Change) -> Change:
        """Log ``change`` with its bytes cached (a delta and the push send
        the same bytes many times), tell the observer, return it."""
        if change.encoded is None:
            change = attrs.evolve(change, encoded=change.to_bytes())
        per = self._log.setdefault(change.origin, collections.deque())
        per.append(change)
        self._log_order.append(change.origin)
        while len(self._log_order) > MAX_CHANGE_LOG:
            oldest = self._log_order.popleft()
            q = self._log[oldest]
            q.popleft()
            if not q:
                del self._log[oldest]
        for observer in ([self._observer] if self._observer is not None else []) + self._watchers:
            try:
                observer(change)
            except Exception:
                log.failure("registry observer failed on {kind}", kind=change.kind)
        return change

    # -- local intake -----------------------------------------------------------

    def accept(self, record: Any) -> Change | None:
        """Take in a signed record (a peer's ANNOUNCE with our observation,
        an owner's function, our own tracker record) and replicate it as
        this tracker's change.  None if it is not newer than what we hold.
        Raises ``BadSignature``/``RegistryChangeError`` for what remote input
        may not hold either, ``RegistryFull`` when its kind is at its
        bound."""
        spec = self.kinds.of_record(record)
        record = spec.validate(record)  # the rules remote input meets, the signature included
        if not self._take(spec, record, self.now(), local=True, verified=True):
            return None
        self._seq += 1
        self._known[self.tracker_id] = self._seq
        return self._log_change(Change(self.tracker_id, self._seq, spec, record))

    def next_statement_seq(self) -> int:
        """A sequence number for a statement we sign: above every earlier one,
        across restarts too (it follows the clock in microseconds)."""
        self._statement_seq = max(self._statement_seq + 1, int(self.now() * 1_000_000))
        return self._statement_seq

    def _observation(self, statement: PeerStatement, **fields: Any) -> Observation:
        obs = Observation(
            peer=statement.node_id,
            statement_seq=statement.seq,
            tracker=self.tracker_id,
            key=self._key.public_bytes,
            seq=self.next_statement_seq(),
            time=int(self.now()),
            **fields,
        )
        return obs.signed(self._key.sign)

    def announce_peer(self, statement: PeerStatement, reachability: str = "unknown",
                      rtt_ms: float | None = None) -> Change | None:
        """A peer's signed statement reached us in its ANNOUNCE: we are its
        home.  Take it with our observation beside it."""
        if statement.home != self.tracker_id:
            raise BadSignature("the statement names another home tracker")
        record = PeerRecord(statement, self._observation(statement, reachability=reachability,
                                                         rtt_ms=_rtt_ms(rtt_ms), connected=True))
        change = self.accept(record)
        if change is not None or self.peer(statement.node_id) is not None:
            self._peer_seen[statement.node_id] = self.now()
        return change

    def observe_peer(self, node_id: bytes, **fields: Any) -> Change | None:
        """Re-sign our observation of a peer homed here with some fields
        changed (``reachability``, ``rtt_ms``, ``connected``).  None if the
        peer is not homed here or nothing changed."""
        cur = self.stored(PEER.name, node_id.hex())
        if cur is None or cur.home != self.tracker_id:
            return None
        current = {"reachability": cur.reachability, "rtt_ms": cur.rtt_ms, "connected": cur.connected}
        unknown = set(fields) - set(current)
        if unknown:
            raise TypeError(f"unknown observation fields {sorted(unknown)}")
        if "rtt_ms" in fields:
            fields["rtt_ms"] = _rtt_ms(fields["rtt_ms"])
        merged = {**current, **fields}
        if merged == current:
            return None
        return self.accept(PeerRecord(cur.statement, self._observation(cur.statement, **merged)))

    def record_rtt(self, node_id: bytes, rtt_ms: float) -> Change | None:
        """A PONG came back.  The observation is re-signed only when the RTT
        moved by more than RTT_REPLICATE_FRACTION, so pings do not flood
        federation."""
        cur = self.peer(node_id)
        if cur is None:
            return None
        self._peer_seen[node_id] = self.now()
        old, new = cur.rtt_ms, _rtt_ms(rtt_ms)
        if new is None or old is not None and abs(new - old) <= RTT_REPLICATE_FRACTION * max(old, 1):
            return None
        return self.observe_peer(node_id, rtt_ms=new)

    def publish_self(self, addresses: Iterable[tuple[str, int]] = (),
                     gateways: Iterable[tuple[str, int]] = (), eth_signer: str = "") -> Change | None:
        """Sign and replicate our own tracker record (wire ``addresses``, HTTP ``gateways``, the payment
        voucher signer ``eth_signer``), with a fresh ``time``: call it at start and at least every
        TRACKER_RESIGN_S."""
        record = TrackerRecord(
            node_id=self.tracker_id,
            key=self._key.public_bytes,
            seq=self.next_statement_seq(),
            time=int(self.now()),
            addresses=canonical_addresses(addresses, "tracker addresses"),
            gateways=canonical_addresses(gateways, "tracker gateways"),
            eth_signer=eth_signer.lower(),
        )
        return self.accept(record.signed(self._key.sign))

    def upsert_function(self, record: FunctionRecord) -> Change | None:
        """An owner's signed function record."""
        return self.accept(record)

    def publish_placement(self, fid: str, hosts: Iterable[tuple[bytes, int]]) -> Change | None:
        """Sign and replicate where ``fid``'s replicas are, as the tracker
        that manages it.  None if that is what we already stated."""
        hosts = tuple(sorted(hosts))
        cur = self.placement(fid)
        if cur is not None and cur.tracker == self.tracker_id and cur.hosts == hosts:
            return None
        record = Placement(fid=fid, tracker=self.tracker_id, key=self._key.public_bytes,
                           seq=self.next_statement_seq(), time=int(self.now()), hosts=hosts)
        return self.accept(record.signed(self._key.sign))

    # -- liveness (soft state) ------------------------------------------------

    def touch(self, peer_id: bytes, now: float | None = None) -> bool:
        """The peer showed a sign of life here.  False if we do not know it."""
        if self.peer(peer_id) is None:
            return False
        self._peer_seen[peer_id] = self.now() if now is None else now
        return True

    def set_tracker_connected(self, node_id: bytes, connected: bool) -> None:
        self._tracker_connected[node_id] = connected
        if len(self._tracker_connected) > 4 * MAX_ORIGINS:
            self._tracker_connected.pop(next(iter(self._tracker_connected)))

    def expire(self, now: float | None = None) -> list[str]:
        """Take stale records out of service and forget those past
        PURGE_AFTER_S; returns the keys that went out of service."""
        now = self.now() if now is None else now
        stale = []
        for key, entry in list(self._entries.items()):
            spec = self.kinds.of_key(key)[0]
            record = entry.record
            if self._purgeable(spec, record, now):
                self._forget(key)
            elif not self._live(spec, record, now) and record.ident in self._views[spec.name]:
                del self._views[spec.name][record.ident]
                stale.append(key)
            elif self._live(spec, record, now) and record.ident not in self._views[spec.name]:
                self._views[spec.name][record.ident] = record  # a clock step back
        return stale

    # -- federation -----------------------------------------------------------

    def apply_remote(self, change: Change, now: float | None = None, link: bytes | None = None) -> ApplyResult:
        """Apply a change another tracker sent (over the federation link
        with ``link``).  Idempotent; changes from one origin must arrive in
        seq order (``GAP`` otherwise)."""
        now = self.now() if now is None else now
        origin = change.origin
        if origin == self.tracker_id:
            if change.seq <= self._seq:
                return ApplyResult.STALE
            if change.seq > self._seq + MAX_STAMP_STEP:
                return ApplyResult.REFUSED
        else:
            known = self._known.get(origin, 0)
            if change.seq <= known:
                return ApplyResult.STALE
            if change.seq > known + 1:
                return ApplyResult.GAP
            if origin not in self._known and not self._may_add_origin(link):
                return ApplyResult.REFUSED
        if change.spec.name == TRACKER.name and change.record.node_id != origin:
            return ApplyResult.REFUSED  # a tracker's record enters federation only as its own change
        try:
            self._take(change.spec, change.record, now, local=False)
        except BadSignature as e:
            log.info("refused a change from {origin}: {why}", origin=origin.hex()[:16], why=e)
            return ApplyResult.REFUSED
        if origin == self.tracker_id:
            # Our own past, from before we lost our database: never reuse
            # it.  Our log no longer runs without gaps, so drop it.
            self._seq = change.seq
            self._drop_log(origin)
        elif origin not in self._known:
            self._origin_link[origin] = link
        self._known[origin] = change.seq
        self._log_change(change)
        return ApplyResult.APPLIED

    def _tracker_may_enter(self, node_id: bytes, link: bytes | None) -> bool:
        """A tracker record in a snapshot counts against the link's quota of
        new identities, as a new origin does."""
        if node_id == self.tracker_id or node_id in self._origin_link:
            return True
        if not self._may_add_origin(link):
            return False
        self._origin_link[node_id] = link
        return True

    def _may_add_origin(self, link: bytes | None) -> bool:
        if len(self._known) >= MAX_ORIGINS:
            return False
        if link is None:
            return True
        return sum(1 for via in self._origin_link.values() if via == link) < MAX_ORIGINS_PER_LINK

    def digest(self) -> Digest:
        return Digest(known=dict(self._known), state_hash=self.state_hash())

    def state_hash(self) -> bytes:
        if self._hash is None:
            self._hash = hash_lines((k, e.to_bytes(k)) for k, e in self._entries.items())
        return self._hash

    def delta_since(self, remote: Digest, max_bytes: int = MAX_PAYLOAD_BYTES) -> Delta | Snapshot:
        """What ``remote`` lacks: a Delta from the log, or a Snapshot when
        the log is too short or the states disagree for another reason."""
        changes: list[Change] = []
        size = 64
        more = False
        for origin, mine in self._known.items():
            theirs = remote.known.get(origin, 0)
            if mine <= theirs:
                continue
            q = self._log.get(origin)
            if not q or q[0].seq > theirs + 1:
                return self.snapshot()
            for c in q:
                if c.seq <= theirs:
                    continue
                n = len(c.to_bytes()) + 1
                if size + n > max_bytes:
                    more = True
                    break
                size += n
                changes.append(c)
            if more:
                break
        if not changes and not more:
            theirs_known = {o: s for o, s in remote.known.items() if s > 0}
            if theirs_known == self._known and remote.state_hash != self.state_hash():
                return self.snapshot()
        return Delta(changes=tuple(changes), more=more)

    def snapshot(self) -> Snapshot:
        entries = tuple(SnapshotEntry(k, e.record) for k, e in sorted(self._entries.items()))
        return Snapshot(entries=entries, known=dict(self._known))

    def snapshot_parts(self, max_bytes: int = MAX_PAYLOAD_BYTES) -> list[Snapshot]:
        """The snapshot cut into parts that each encode under ``max_bytes``;
        the last part carries ``known``."""
        parts: list[Snapshot] = []
        batch: list[SnapshotEntry] = []
        size = SNAPSHOT_ENVELOPE_BYTES
        for key, e in sorted(self._entries.items()):
            n = len(e.to_bytes(key)) + 1
            if batch and size + n > max_bytes:
                parts.append(Snapshot(entries=tuple(batch)))
                batch, size = [], SNAPSHOT_ENVELOPE_BYTES
            batch.append(SnapshotEntry(key, e.record, encoded=e.to_bytes(key)))
            size += n
        parts.append(Snapshot(entries=tuple(batch), known=dict(self._known)))
        return parts

    def apply_snapshot(self, snap: Snapshot, now: float | None = None, link: bytes | None = None) -> int:
        """Merge a snapshot (or part).  Returns the number of entries that
        changed here.  Raises ``BadSignature`` at the first entry that is not
        validly signed (the entries before it are kept: each stands alone)."""
        now = self.now() if now is None else now
        changed = 0
        for e in snap.entries:
            spec, ident = self.kinds.of_key(e.key)
            if e.record.ident != ident:
                raise RegistryChangeError("entry key does not match its record")
            if spec.name == TRACKER.name and not self._tracker_may_enter(e.record.node_id, link):
                continue
            if self._take(spec, e.record, now, local=False):
                changed += 1
        for origin, seq in snap.known.items():
            if origin == self.tracker_id:
                if self._seq < seq <= self._seq + MAX_STAMP_STEP:
                    self._seq = seq
                    self._known[origin] = seq
                continue
            if seq > self._known.get(origin, 0):
                if origin not in self._known:
                    if not self._may_add_origin(link):
                        continue
                    self._origin_link[origin] = link
                self._known[origin] = seq
                # Our log for that origin is no longer contiguous up to seq.
                self._drop_log(origin)
        return changed

    def _drop_log(self, origin: bytes) -> None:
        if origin in self._log:
            del self._log[origin]
            self._log_order = collections.deque(o for o in self._log_order if o != origin)

    # -- persistence ----------------------------------------------------------

    def stored_state(self) -> StoredState:
        """A copy of everything worth keeping, for ``orb.tracker.store``."""
        entries = []
        for k, e in self._entries.items():
            seen = self._peer_seen.get(e.record.node_id) if isinstance(e.record, PeerRecord) else None
            entries.append(StoredEntry(k, e.record, e.changed_s, seen))
        return StoredState(self.tracker_id, self._seq, dict(self._known), tuple(entries))

    def restore(self, state: StoredState) -> None:
        """Rebuild from a validated ``StoredState`` (into an empty registry)."""
        now = self.now()
        self._seq, self._known = state.seq, dict(state.known)
        for e in sorted(state.entries, key=lambda e: e.changed_s):
            spec = self.kinds.of_key(e.key)[0]
            try:
                self._take(spec, e.record, now, local=False)
            except RegistryChangeError:
                continue
            if self.stored(spec.name, e.record.ident) is e.record:
                self._entries[e.key].changed_s = e.changed_s
            if isinstance(e.record, PeerRecord) and e.last_seen_s is not None and self.peer(e.record.node_id):
                self._peer_seen[e.record.node_id] = min(e.last_seen_s, now)
        self._seq = max(self._seq, self._known.get(self.tracker_id, 0))
        if self._seq:
            self._known[self.tracker_id] = self._seq
        for origin in self._known:
            self._origin_link.setdefault(origin, None)

    def save(self, db: Any) -> Deferred[None]:
        """Write everything to ``db`` (opened with ``MIGRATIONS``) in one
        transaction.  The copy is taken now; the SQL runs on the database
        thread."""
        return store.save(db, self.stored_state())

    @classmethod
    def load(cls, db: Any, clock: Any, key: Any, **kw: Any) -> Deferred[Registry]:
        """A registry rebuilt from ``db``.  Stored rows are validated like
        remote input, signatures included; bad ones are skipped.  A database
        written by another tracker id is ignored (logged) rather than
        adopted."""

        def build(state: StoredState | None) -> Registry:
            reg = cls(clock, key, **kw)
            if state is not None:
                reg.restore(state)
            return reg

        return store.load(db, key.node_id, kw.get("kinds", KINDS)).addCallback(build)

