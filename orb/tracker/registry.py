# -*- test-case-name: tests.test_registry -*-
"""
The tracker registry core: live peers, trackers and functions, and how
trackers keep their registries in agreement.  Pure: it takes a clock and
does no I/O.  The wire format of what it exchanges is
``orb.protocol.federation``; its SQL store is ``orb.tracker.store``; which
replica serves a call is ``orb.tracker.routing``.

State model.  The replicated state is a last-writer-wins map from an entity
key (``peer:<hex>``, ``fn:<fid>``, ``tracker:<hex>``, one prefix per entry
of the kinds table) to a record, or to a tombstone for a removal.  Every
write is a ``Change`` stamped with

* ``origin``: the id of the tracker that made it;
* ``seq``: that origin's own counter, 1, 2, 3, ... with no gaps;
* ``lamport``: a Lamport clock (one more than the highest seen anywhere).

Writes to one key are ordered by ``(lamport, origin)``, so replicas that
saw the same set of changes hold the same state whatever the order of
arrival.  ``seq`` makes delivery exact: a tracker accepts origin O's change
``n`` only after ``n - 1`` (``apply_remote`` answers ``GAP`` otherwise),
which lets a digest summarise everything a tracker has as one number per
origin.

Kinds.  The core is generic over ``federation.KINDS``: ``upsert(record)``,
``remove(kind, ident)``, ``records(kind)`` and ``record(kind, ident)``
work for every kind, and each kind's ``max_records`` bounds it.  Peers and
trackers also have soft state and liveness, below; the named methods
(``upsert_peer``, ``upsert_function``, ...) are the daemon's vocabulary
over the generic ones.

Anti-entropy.  ``digest()`` is ``{origin: highest seq}`` plus a hash of
the live state.  ``delta_since(their_digest)`` returns the changes they lack
from the bounded change log, or a ``Snapshot`` (the whole map, tombstones
included) when the log no longer reaches back far enough, or when the
sequence numbers agree but the hashes do not.

Soft state never leaves the tracker: ``last_seen`` of peers and trackers and
the ``connected`` flag.  A peer's *home* tracker is the only one that
refreshes it; ``expire`` removes (as a replicated change) the home peers not
seen for ``peer_ttl_s``, and the peers of a home tracker that has been gone
for ``tracker_ttl_s`` — those peers re-home and are announced again by their
new home.  If a remote removal hits a peer that is alive here and homed
here, the registry re-announces it at once.
"""

from __future__ import annotations

import collections
import enum
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from orb.protocol import addresses
from orb.protocol.federation import (  # re-exported: the daemon and bench use them from here
    FUNCTION,
    KINDS,
    MAX_ADDRESSES,
    MAX_FUNCTIONS_PER_PEER,
    MAX_ORIGINS,
    MAX_PAYLOAD_BYTES,
    MAX_PEERS,
    MAX_REASON_CHARS,
    MAX_RTT_MS,
    PEER,
    TRACKER,
    Change,
    Delta,
    Digest,
    FunctionRecord,
    KindSpec,
    Kinds,
    PeerRecord,
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
    "ApplyResult", "Change", "Delta", "Digest", "FunctionRecord", "KindSpec", "Kinds", "PeerRecord",
    "Registry", "RegistryChangeError", "RegistryFull", "Snapshot", "SnapshotEntry", "TrackerRecord",
]

MAX_CHANGE_LOG = 10_000
MAX_TOMBSTONES = 10_000
DEFAULT_PEER_TTL_S = 90.0
DEFAULT_TOMBSTONE_TTL_S = 3600.0
RTT_REPLICATE_FRACTION = 0.25  # replicate an RTT only when it moved this much
SNAPSHOT_ENVELOPE_BYTES = 4096  # room for ``known`` and the envelope in a snapshot part


class RegistryFull(Exception):
    """A local write would exceed one of the registry's bounds."""


class ApplyResult(enum.Enum):
    APPLIED = "applied"  # new to us (it may still lose to a newer write)
    STALE = "stale"  # already had it
    GAP = "gap"  # an earlier change from that origin is missing: run anti-entropy
    REFUSED = "refused"  # over a bound (too many origins, or a stamp jumping too far ahead)


# How far one remote change may move the Lamport clock or our own seq ahead.
# Honest trackers advance them by one per change; a jump of 2^32 would take
# years of changes. Without the bound one change stamped 2^63-1 made every
# later local change overflow the store's 64-bit integers.
MAX_STAMP_STEP = 2**32


def _check_id(v: Any, what: str) -> bytes:
    try:
        return addresses.check_node_id(v, what)
    except addresses.AddressError as e:
        raise ValueError(str(e)) from None


def _rtt_ms(v: float | None) -> int | None:
    """A local RTT measurement as the record holds it: whole ms, clamped."""
    if v is None or not 0 <= v < math.inf:  # also None for NaN
        return None
    return min(int(round(v)), MAX_RTT_MS)


@attrs.define
class _Entry:
    lamport: int
    origin: bytes
    record: Any  # None: a tombstone
    changed_s: float
    encoded: bytes | None = None  # its JCS bytes, made once when first needed

    @property
    def stamp(self) -> tuple[int, bytes]:
        return (self.lamport, self.origin)

    def to_bytes(self, key: str) -> bytes:
        if self.encoded is None:
            self.encoded = entry_bytes(SnapshotEntry(key, self.lamport, self.origin, self.record))
        return self.encoded


class Registry:
    """See the module docstring.  ``subscribe(fn)`` gets every change that
    enters the log (local ones and newly applied remote ones): that is what
    the federation adapter forwards to the other trackers."""

    def __init__(
        self,
        clock: Any,
        tracker_id: bytes,
        peer_ttl_s: float = DEFAULT_PEER_TTL_S,
        tracker_ttl_s: float | None = None,
        tombstone_ttl_s: float = DEFAULT_TOMBSTONE_TTL_S,
        kinds: Kinds = KINDS,
    ) -> None:
        self._clock = clock
        self.tracker_id = _check_id(tracker_id, "tracker id")
        self.peer_ttl_s = peer_ttl_s
        self.tracker_ttl_s = tracker_ttl_s if tracker_ttl_s is not None else 2 * peer_ttl_s
        self.tombstone_ttl_s = tombstone_ttl_s
        for base in (PEER, FUNCTION, TRACKER):
            if base.name not in {spec.name for spec in kinds}:
                raise ValueError(f"the kinds table lacks {base.name!r}, which the core relies on")
        self.kinds = kinds
        self._entries: dict[str, _Entry] = {}
        self._views: dict[str, dict[str, Any]] = {spec.name: {} for spec in kinds}
        self._tombstones: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._peer_seen: dict[bytes, float] = {}
        self._tracker_seen: dict[bytes, float] = {}
        self._tracker_connected: dict[bytes, bool] = {}
        self._seq = 0
        self._lamport = 0
        self._known: dict[bytes, int] = {}
        self._log: dict[bytes, collections.deque[Change]] = {}
        self._log_order: collections.deque[bytes] = collections.deque()
        self._observer: Callable[[Change], None] | None = None
        self._hash: bytes | None = None

    # -- queries ----------------------------------------------------------------

    def now(self) -> float:
        return self._clock.seconds()

    def records(self, kind: str) -> list[Any]:
        """The live records of ``kind`` (a name in the kinds table)."""
        return list(self._views[kind].values())

    def record(self, kind: str, ident: str) -> Any:
        return self._views[kind].get(ident)

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

    def trackers(self) -> list[TrackerRecord]:
        return self.records(TRACKER.name)

    def tracker(self, node_id: bytes) -> TrackerRecord | None:
        return self._views[TRACKER.name].get(node_id.hex())

    def tracker_last_seen(self, node_id: bytes) -> float | None:
        return self._tracker_seen.get(node_id)

    def tracker_connected(self, node_id: bytes) -> bool:
        return self._tracker_connected.get(node_id, False)

    def counts(self) -> dict[str, int]:
        return {
            "peers": len(self._views[PEER.name]),
            "trackers": len(self._views[TRACKER.name]),
            "functions": len(self._views[FUNCTION.name]),
            "changes_logged": len(self._log_order),
            "tombstones": len(self._tombstones),
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

    # -- the LWW map ------------------------------------------------------------

    def _merge(self, key: str, lamport: int, origin: bytes, record: Any, now: float) -> bool:
        """Last-writer-wins.  True if the state changed."""
        cur = self._entries.get(key)
        if cur is not None and cur.stamp >= (lamport, origin):
            return False
        spec, ident = self.kinds.of_key(key)
        live = cur is not None and cur.record is not None
        if record is not None and not live and len(self._views[spec.name]) >= spec.max_records:
            log.warn("registry full: dropping {key}", key=key[:80])
            return False
        self._tombstones.pop(key, None)
        self._entries[key] = _Entry(lamport, origin, record, now)
        self._hash = None
        if record is None:
            self._tombstones[key] = now
            self._drop_view(spec, ident)
            self._prune_tombstones(now)
        else:
            self._set_view(spec, record, now)
        return True

    def _set_view(self, spec: KindSpec, record: Any, now: float) -> None:
        self._views[spec.name][record.ident] = record
        if spec.name == PEER.name:
            # For a peer homed elsewhere, "seen" is the last news of it.
            self._peer_seen[record.node_id] = now
        elif spec.name == TRACKER.name:
            self._tracker_seen.setdefault(record.node_id, now)

    def _drop_view(self, spec: KindSpec, ident: str) -> None:
        self._views[spec.name].pop(ident, None)
        if spec.name == PEER.name:
            self._peer_seen.pop(bytes.fromhex(ident), None)
        elif spec.name == TRACKER.name:
            nid = bytes.fromhex(ident)
            self._tracker_seen.pop(nid, None)
            self._tracker_connected.pop(nid, None)

    def _prune_tombstones(self, now: float) -> None:
        """Forget tombstones past their TTL, or the oldest beyond the cap.
        (Insertion order is time order: tombstones are made at ``now``.)"""
        while self._tombstones:
            key, made_s = next(iter(self._tombstones.items()))
            if len(self._tombstones) <= MAX_TOMBSTONES and now - made_s <= self.tombstone_ttl_s:
                break
            del self._tombstones[key]
            del self._entries[key]

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
        if self._observer is not None:
            try:
                self._observer(change)
            except Exception:
                log.failure("registry observer failed on {kind}", kind=change.kind)
        return change

    def _emit(self, spec: KindSpec, record: Any = None, ident: str | None = None, reason: str = "") -> Change:
        self._seq += 1
        self._lamport += 1
        self._known[self.tracker_id] = self._seq
        change = Change(self.tracker_id, self._seq, self._lamport, spec, record=record, removed=ident, reason=reason)
        self._merge(change.key, change.lamport, change.origin, record, self.now())
        return self._log_change(change)

    # -- local writes, any kind -------------------------------------------------

    def upsert(self, record: Any) -> Change | None:
        """Write ``record`` (of any kind in the table) as this tracker.
        None if it is already the current record.  Raises
        ``RegistryChangeError`` for what remote input may not hold either,
        ``RegistryFull`` when its kind is at its bound."""
        spec = self.kinds.of_record(record)
        spec.validate(record)
        view = self._views[spec.name]
        if view.get(record.ident) == record:
            return None
        if record.ident not in view and len(view) >= spec.max_records:
            raise RegistryFull(f"registry holds {spec.max_records} {spec.name} records")
        return self._emit(spec, record)

    def remove(self, kind: str, ident: str, reason: str = "") -> Change | None:
        """Remove the record ``ident`` of ``kind``; None if there is none."""
        spec = self.kinds.named(kind)
        if ident not in self._views[spec.name]:
            return None
        return self._emit(spec, ident=ident, reason=reason[:MAX_REASON_CHARS])

    # -- local writes: the daemon's vocabulary ----------------------------------

    def upsert_peer(
        self,
        node_id: bytes,
        addresses: Iterable[tuple[str, int]] = (),
        reachability: str = "unknown",
        rtt_ms: float | None = None,
        load_permille: int = 0,
        functions: Mapping[str, int] | None = None,
        roles: int = 0,
    ) -> Change | None:
        """A peer joined (or re-announced itself) here; we become its home.
        Returns the change, or None if nothing replicated changed.
        ``rtt_ms`` is rounded to whole ms."""
        record = PeerRecord(
            node_id=_check_id(node_id, "peer id"),
            home=self.tracker_id,
            addresses=canonical_addresses(addresses, "peer addresses"),
            reachability=reachability,
            rtt_ms=_rtt_ms(rtt_ms),
            load_permille=load_permille,
            functions=dict(functions or {}),
            roles=roles,
        )
        change = self.upsert(record)
        self._peer_seen[node_id] = self.now()
        return change

    def update_peer(self, node_id: bytes, **fields: Any) -> Change | None:
        """Change some fields of a peer homed here (``reachability``,
        ``load_permille``, ``functions``, ``addresses``, ``roles``,
        ``rtt_ms``)."""
        cur = self.peer(node_id)
        if cur is None:
            raise KeyError(node_id.hex())
        merged = {
            "addresses": cur.addresses,
            "reachability": cur.reachability,
            "rtt_ms": cur.rtt_ms,
            "load_permille": cur.load_permille,
            "functions": cur.function_map,
            "roles": cur.roles,
        }
        unknown = set(fields) - set(merged) - {"load"}
        if unknown:
            raise TypeError(f"unknown peer fields {sorted(unknown)}")
        merged.update(fields)
        return self.upsert_peer(node_id, **merged)

    def record_rtt(self, node_id: bytes, rtt_ms: float) -> Change | None:
        """A PONG came back.  The RTT is replicated only when it moved by
        more than RTT_REPLICATE_FRACTION, so pings do not flood federation."""
        cur = self.peer(node_id)
        if cur is None:
            return None
        self._peer_seen[node_id] = self.now()
        old, new = cur.rtt_ms, _rtt_ms(rtt_ms)
        if new is None or old is not None and abs(new - old) <= RTT_REPLICATE_FRACTION * max(old, 1):
            return None
        return self.update_peer(node_id, rtt_ms=new)

    def remove_peer(self, node_id: bytes, reason: str = "left") -> Change | None:
        return self.remove(PEER.name, node_id.hex(), reason)

    def upsert_function(self, fid: str, version: int, owner: bytes, replicas: int = 3) -> Change | None:
        return self.upsert(FunctionRecord(fid=fid, version=version, owner=_check_id(owner, "owner"), replicas=replicas))

    def remove_function(self, fid: str, reason: str = "deprecated") -> Change | None:
        return self.remove(FUNCTION.name, fid, reason)

    def upsert_tracker(self, node_id: bytes, addresses: Iterable[tuple[str, int]] = ()) -> Change | None:
        record = TrackerRecord(_check_id(node_id, "tracker id"), canonical_addresses(addresses, "tracker addresses"))
        change = self.upsert(record)
        self._tracker_seen[node_id] = self.now()
        return change

    def remove_tracker(self, node_id: bytes, reason: str = "gone") -> Change | None:
        return self.remove(TRACKER.name, node_id.hex(), reason)

    # -- liveness (soft state) ------------------------------------------------

    def touch(self, peer_id: bytes, now: float | None = None) -> bool:
        """The peer showed a sign of life.  False if we do not know it."""
        if self.peer(peer_id) is None:
            return False
        self._peer_seen[peer_id] = self.now() if now is None else now
        return True

    def touch_tracker(self, node_id: bytes, now: float | None = None) -> bool:
        if self.tracker(node_id) is None:
            return False
        self._tracker_seen[node_id] = self.now() if now is None else now
        return True

    def set_tracker_connected(self, node_id: bytes, connected: bool) -> None:
        if self.tracker(node_id) is not None:
            self._tracker_connected[node_id] = connected
            if connected:
                self._tracker_seen[node_id] = self.now()

    def _tracker_alive(self, node_id: bytes, now: float) -> bool:
        """Whether ``node_id`` counts as alive here. Only a tracker we have
        been linked to is judged: the trackers linked to one judge it, and
        their removals of its peers reach us by federation. (Judging one we
        never see would make its peers flap here: soft state is not
        replicated.)"""
        if node_id == self.tracker_id:
            return True
        if node_id not in self._tracker_connected:
            return True
        if self._tracker_connected[node_id]:
            return True
        seen = self._tracker_seen.get(node_id)
        return seen is not None and now - seen <= self.tracker_ttl_s

    def expire(self, now: float | None = None) -> list[Change]:
        """Remove dead peers: ours not seen for ``peer_ttl_s``, and those
        whose home tracker is gone.  Also forgets old tombstones."""
        now = self.now() if now is None else now
        out = []
        for rec in self.peers():
            seen = self._peer_seen.get(rec.node_id, now)
            if now - seen <= self.peer_ttl_s:
                continue
            if rec.home == self.tracker_id:
                reason = "timeout"
            elif not self._tracker_alive(rec.home, now):
                reason = "home-gone"
            else:
                continue
            change = self.remove_peer(rec.node_id, reason)
            if change is not None:
                out.append(change)
        self._prune_tombstones(now)
        return out

    # -- federation -----------------------------------------------------------

    def apply_remote(self, change: Change, now: float | None = None) -> ApplyResult:
        """Apply a change another tracker sent.  Idempotent; changes from
        one origin must arrive in seq order (``GAP`` otherwise)."""
        now = self.now() if now is None else now
        origin = change.origin
        if change.lamport > self._lamport + MAX_STAMP_STEP:
            return ApplyResult.REFUSED
        if origin == self.tracker_id:
            if change.seq <= self._seq:
                return ApplyResult.STALE
            if change.seq > self._seq + MAX_STAMP_STEP:
                return ApplyResult.REFUSED
            # Our own past, from before we lost our database: never reuse
            # it.  Our log no longer runs without gaps, so drop it.
            self._seq = change.seq
            self._drop_log(origin)
        else:
            known = self._known.get(origin, 0)
            if change.seq <= known:
                return ApplyResult.STALE
            if change.seq > known + 1:
                return ApplyResult.GAP
            if origin not in self._known and len(self._known) >= MAX_ORIGINS:
                return ApplyResult.REFUSED
        self._known[origin] = change.seq
        self._lamport = max(self._lamport, change.lamport)
        mine = seen = None
        if change.record is None and change.spec.name == PEER.name:
            mine = self._views[PEER.name].get(change.ident)
            seen = None if mine is None else self._peer_seen.get(mine.node_id)
        self._merge(change.key, change.lamport, origin, change.record, now)
        self._log_change(change)
        if (
            mine is not None
            and seen is not None
            and mine.home == self.tracker_id
            and now - seen <= self.peer_ttl_s
            and self.peer(mine.node_id) is None
        ):
            # A remote removal of a peer alive and homed here loses: say so.
            log.info("re-announcing peer {peer_id} removed by {origin}", peer_id=mine.ident[:16],
                     origin=origin.hex()[:16])
            self._emit(self.kinds.named(PEER.name), mine)
            self._peer_seen[mine.node_id] = seen
        return ApplyResult.APPLIED

    def digest(self) -> Digest:
        return Digest(known=dict(self._known), state_hash=self.state_hash())

    def state_hash(self) -> bytes:
        if self._hash is None:
            self._hash = hash_lines((k, e.to_bytes(k)) for k, e in self._entries.items() if e.record is not None)
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
        entries = tuple(
            SnapshotEntry(k, e.lamport, e.origin, e.record) for k, e in sorted(self._entries.items())
        )
        return Snapshot(entries=entries, known=dict(self._known), lamport=self._lamport)

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
            batch.append(SnapshotEntry(key, e.lamport, e.origin, e.record, encoded=e.to_bytes(key)))
            size += n
        parts.append(Snapshot(entries=tuple(batch), known=dict(self._known), lamport=self._lamport))
        return parts

    def apply_snapshot(self, snap: Snapshot, now: float | None = None) -> int:
        """Merge a snapshot (or part).  Returns the number of entries that
        changed here."""
        now = self.now() if now is None else now
        changed = 0
        for e in snap.entries:
            if self._merge(e.key, e.lamport, e.origin, e.record, now):
                changed += 1
        for origin, seq in snap.known.items():
            if origin == self.tracker_id:
                if seq > self._seq:
                    self._seq = seq
                    self._known[origin] = seq
                continue
            if seq > self._known.get(origin, 0):
                if origin not in self._known and len(self._known) >= MAX_ORIGINS:
                    continue
                self._known[origin] = seq
                # Our log for that origin is no longer contiguous up to seq.
                self._drop_log(origin)
        self._lamport = max(self._lamport, snap.lamport)
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
            entries.append(StoredEntry(k, e.lamport, e.origin, e.record, e.changed_s, seen))
        return StoredState(self.tracker_id, self._seq, self._lamport, dict(self._known), tuple(entries))

    def restore(self, state: StoredState) -> None:
        """Rebuild from a validated ``StoredState`` (into an empty registry)."""
        now = self.now()
        self._seq, self._lamport, self._known = state.seq, state.lamport, dict(state.known)
        for e in sorted(state.entries, key=lambda e: e.changed_s):
            self._merge(e.key, e.lamport, e.origin, e.record, e.changed_s)
            self._lamport = max(self._lamport, e.lamport)
            if isinstance(e.record, PeerRecord) and e.last_seen_s is not None and self.peer(e.record.node_id):
                self._peer_seen[e.record.node_id] = min(e.last_seen_s, now)
        self._seq = max(self._seq, self._known.get(self.tracker_id, 0))
        if self._seq:
            self._known[self.tracker_id] = self._seq
        self._prune_tombstones(now)

    def save(self, db: Any) -> Deferred[None]:
        """Write everything to ``db`` (opened with ``MIGRATIONS``) in one
        transaction.  The copy is taken now; the SQL runs on the database
        thread."""
        return store.save(db, self.stored_state())

    @classmethod
    def load(cls, db: Any, clock: Any, tracker_id: bytes, **kw: Any) -> Deferred[Registry]:
        """A registry rebuilt from ``db``.  Stored rows are validated like
        remote input; bad ones are skipped.  A database written by another
        tracker id is ignored (logged) rather than adopted."""

        def build(state: StoredState | None) -> Registry:
            reg = cls(clock, tracker_id, **kw)
            if state is not None:
                reg.restore(state)
            return reg

        return store.load(db, tracker_id, kw.get("kinds", KINDS)).addCallback(build)
