# -*- test-case-name: tests.test_registry -*-
"""
The tracker registry: live peers, trackers and functions, and how trackers
keep their registries in agreement.

State model.  The replicated state is a last-writer-wins map from an entity
key (``peer:<hex>``, ``fn:<fid>``, ``tracker:<hex>``) to a record, or to a
tombstone for a removal.  Every write is a ``Change`` stamped with

* ``origin``: the id of the tracker that made it;
* ``seq``: that origin's own counter, 1, 2, 3, ... with no gaps;
* ``lamport``: a Lamport clock (one more than the highest seen anywhere).

Writes to one key are ordered by ``(lamport, origin)``, so replicas that
saw the same set of changes hold the same state whatever the order of
arrival.  ``seq`` makes delivery exact: a tracker accepts origin O's change
``n`` only after ``n - 1`` (``apply_remote`` answers ``GAP`` otherwise),
which lets a digest summarise everything a tracker has as one number per
origin.

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

The core does no I/O; ``clock.seconds()`` is its only source of time, and
``save``/``load`` go through ``orb._db.Database``.
"""

from __future__ import annotations

import collections
import enum
import hashlib
import json
import math
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

log = Logger()

ID_BYTES = 32
MAX_PEERS = 10_000
MAX_FUNCTIONS = 10_000
MAX_TRACKERS = 256
MAX_CHANGE_LOG = 10_000
MAX_TOMBSTONES = 10_000
MAX_ORIGINS = 1024
MAX_ADDRESSES = 8
MAX_FUNCTIONS_PER_PEER = 256
MAX_REPLICAS = 64
MAX_SEQ = 2**63 - 1
MAX_LOAD = 1e6
MAX_RTT_MS = 600_000.0
MAX_REASON_CHARS = 64
MAX_CHANGE_BYTES = 64 * 1024
MAX_DIGEST_BYTES = 256 * 1024
MAX_DELTA_BYTES = 3 * 1024 * 1024  # leaves room inside a 4 MiB frame
MAX_SNAPSHOT_PART_BYTES = MAX_DELTA_BYTES
DEFAULT_PEER_TTL_S = 90.0
DEFAULT_TOMBSTONE_TTL_S = 3600.0
RTT_REPLICATE_FRACTION = 0.25  # replicate an RTT only when it moved this much

REACHABILITY = ("reachable", "relayed", "unknown")
FID_RE = re.compile(r"[a-z2-7]{1,63}\Z")


class RegistryChangeError(ValueError):
    """A change, digest, delta or snapshot from elsewhere is malformed."""


class RegistryFull(Exception):
    """A local write would exceed one of the registry's bounds."""


class ApplyResult(enum.Enum):
    APPLIED = "applied"  # new to us (it may still lose to a newer write)
    STALE = "stale"  # already had it
    GAP = "gap"  # an earlier change from that origin is missing: run anti-entropy
    REFUSED = "refused"  # over a bound (too many origins)


# -- validation helpers --------------------------------------------------------


def _fail(what: str) -> RegistryChangeError:
    return RegistryChangeError(what)


def _fields(d: Any, required: set[str], what: str) -> dict:
    if not isinstance(d, dict):
        raise _fail(f"{what}: expected an object")
    keys = set(d)
    if keys != required:
        raise _fail(f"{what}: fields {sorted(keys)[:16]!r} != {sorted(required)!r}")
    return d


def _int(v: Any, lo: int, hi: int, what: str) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise _fail(f"{what}: expected an integer in [{lo}, {hi}]")
    return v


def _num(v: Any, lo: float, hi: float, what: str) -> float:
    if type(v) not in (int, float) or not math.isfinite(v) or not lo <= v <= hi:
        raise _fail(f"{what}: expected a number in [{lo}, {hi}]")
    return float(v)


def _id(v: Any, what: str) -> bytes:
    if not isinstance(v, str) or len(v) != 2 * ID_BYTES:
        raise _fail(f"{what}: expected {2 * ID_BYTES} hex digits")
    try:
        return bytes.fromhex(v)
    except ValueError:
        raise _fail(f"{what}: expected {2 * ID_BYTES} hex digits") from None


def _fid(v: Any, what: str = "fid") -> str:
    if not isinstance(v, str) or not FID_RE.match(v):
        raise _fail(f"{what}: expected lowercase base32, 1-63 characters")
    return v


def _ip(v: Any, what: str) -> str:
    import ipaddress

    if not isinstance(v, str) or len(v) > 45:
        raise _fail(f"{what}: expected an IP address")
    try:
        return ipaddress.ip_address(v).compressed
    except ValueError:
        raise _fail(f"{what}: expected an IP address") from None


def _addresses(v: Any, what: str) -> tuple[tuple[str, int], ...]:
    if not isinstance(v, list) or len(v) > MAX_ADDRESSES:
        raise _fail(f"{what}: expected a list of at most {MAX_ADDRESSES} addresses")
    out = []
    for item in v:
        if not isinstance(item, list) or len(item) != 2:
            raise _fail(f"{what}: expected [ip, port]")
        out.append((_ip(item[0], what), _int(item[1], 1, 65535, f"{what} port")))
    return tuple(out)


def check_id(v: Any, what: str = "id") -> bytes:
    if not isinstance(v, bytes) or len(v) != ID_BYTES:
        raise ValueError(f"{what} must be {ID_BYTES} bytes")
    return v


# -- records -------------------------------------------------------------------


def _freeze_functions(v: Mapping[str, int] | Iterable[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    items = v.items() if isinstance(v, Mapping) else v
    return tuple(sorted(items))


@attrs.frozen
class PeerRecord:
    """A peer as replicated between trackers."""

    node_id: bytes
    home: bytes
    addresses: tuple[tuple[str, int], ...] = ()
    reachability: str = "unknown"
    rtt_ms: float | None = None
    load: float = 0.0
    functions: tuple[tuple[str, int], ...] = attrs.field(default=(), converter=_freeze_functions)
    roles: int = 0

    @property
    def function_map(self) -> dict[str, int]:
        return dict(self.functions)

    def to_dict(self) -> dict:
        return {
            "node_id": self.node_id.hex(),
            "home": self.home.hex(),
            "addresses": [[ip, port] for ip, port in self.addresses],
            "reachability": self.reachability,
            "rtt_ms": self.rtt_ms,
            "load": self.load,
            "functions": {fid: v for fid, v in self.functions},
            "roles": self.roles,
        }

    @classmethod
    def from_dict(cls, d: Any) -> PeerRecord:
        d = _fields(d, {"node_id", "home", "addresses", "reachability", "rtt_ms", "load", "functions", "roles"}, "peer")
        if d["reachability"] not in REACHABILITY:
            raise _fail("peer reachability: unknown value")
        fns = d["functions"]
        if not isinstance(fns, dict) or len(fns) > MAX_FUNCTIONS_PER_PEER:
            raise _fail(f"peer functions: expected an object of at most {MAX_FUNCTIONS_PER_PEER}")
        return cls(
            node_id=_id(d["node_id"], "peer node_id"),
            home=_id(d["home"], "peer home"),
            addresses=_addresses(d["addresses"], "peer addresses"),
            reachability=d["reachability"],
            rtt_ms=None if d["rtt_ms"] is None else _num(d["rtt_ms"], 0, MAX_RTT_MS, "peer rtt_ms"),
            load=_num(d["load"], 0, MAX_LOAD, "peer load"),
            functions={_fid(k): _int(v, 0, 2**32 - 1, "function version") for k, v in fns.items()},
            roles=_int(d["roles"], 0, 2**32 - 1, "peer roles"),
        )


@attrs.frozen
class FunctionRecord:
    """A deployed function: its current version, owner key and replication target."""

    fid: str
    version: int
    owner: bytes
    replicas: int = 3

    def to_dict(self) -> dict:
        return {"fid": self.fid, "version": self.version, "owner": self.owner.hex(), "replicas": self.replicas}

    @classmethod
    def from_dict(cls, d: Any) -> FunctionRecord:
        d = _fields(d, {"fid", "version", "owner", "replicas"}, "function")
        return cls(
            fid=_fid(d["fid"]),
            version=_int(d["version"], 0, 2**32 - 1, "function version"),
            owner=_id(d["owner"], "function owner"),
            replicas=_int(d["replicas"], 1, MAX_REPLICAS, "function replicas"),
        )


@attrs.frozen
class TrackerRecord:
    node_id: bytes
    addresses: tuple[tuple[str, int], ...] = ()

    def to_dict(self) -> dict:
        return {"node_id": self.node_id.hex(), "addresses": [[ip, port] for ip, port in self.addresses]}

    @classmethod
    def from_dict(cls, d: Any) -> TrackerRecord:
        d = _fields(d, {"node_id", "addresses"}, "tracker")
        return cls(node_id=_id(d["node_id"], "tracker node_id"), addresses=_addresses(d["addresses"], "tracker addresses"))


Record = PeerRecord | FunctionRecord | TrackerRecord

_UPSERTS: dict[str, type] = {
    "peer_upsert": PeerRecord,
    "function_upsert": FunctionRecord,
    "tracker_upsert": TrackerRecord,
}
_REMOVES = {"peer_remove": "peer", "function_remove": "fn", "tracker_remove": "tracker"}
KINDS = tuple(_UPSERTS) + tuple(_REMOVES)


def record_key(record: Record) -> str:
    if isinstance(record, PeerRecord):
        return "peer:" + record.node_id.hex()
    if isinstance(record, FunctionRecord):
        return "fn:" + record.fid
    return "tracker:" + record.node_id.hex()


def _key_from_remove(kind: str, ident: str) -> str:
    return f"{_REMOVES[kind]}:{ident}"


def _record_from_dict(key: str, d: Any) -> Record:
    prefix = key.split(":", 1)[0]
    cls = {"peer": PeerRecord, "fn": FunctionRecord, "tracker": TrackerRecord}.get(prefix)
    if cls is None:
        raise _fail("entry key: unknown kind")
    rec = cls.from_dict(d)
    if record_key(rec) != key:
        raise _fail("entry key does not match its record")
    return rec


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or len(key) > 80:
        raise _fail("entry key: malformed")
    prefix, _, ident = key.partition(":")
    if prefix in ("peer", "tracker"):
        _id(ident, "entry key")
    elif prefix == "fn":
        _fid(ident, "entry key")
    else:
        raise _fail("entry key: unknown kind")
    return key


# -- canonical JSON -------------------------------------------------------------


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def _no_dups(pairs: list[tuple[str, Any]]) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise _fail("duplicate key in JSON object")
    return d


def _reject_constant(name: str) -> Any:
    raise _fail(f"non-finite number {name} in JSON")


def parse_json(data: Any, max_bytes: int, what: str) -> Any:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _fail(f"{what}: expected bytes")
    if len(data) > max_bytes:
        raise _fail(f"{what}: {len(data)} bytes is over the {max_bytes} limit")
    try:
        return json.loads(bytes(data).decode("utf-8"), object_pairs_hook=_no_dups, parse_constant=_reject_constant)
    except RegistryChangeError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _fail(f"{what}: not JSON ({type(e).__name__})") from None


# -- changes and anti-entropy messages ----------------------------------------


@attrs.frozen
class Change:
    """One replicated write.  ``record`` for upserts, ``ident`` (hex id or
    fid) for removals."""

    origin: bytes
    seq: int
    lamport: int
    kind: str
    record: Record | None = None
    ident: str | None = None
    reason: str = ""

    @property
    def key(self) -> str:
        if self.record is not None:
            return record_key(self.record)
        assert self.ident is not None
        return _key_from_remove(self.kind, self.ident)

    @property
    def stamp(self) -> tuple[int, bytes]:
        return (self.lamport, self.origin)

    def to_dict(self) -> dict:
        body: dict[str, Any]
        if self.record is not None:
            body = self.record.to_dict()
        else:
            body = {"id": self.ident, "reason": self.reason}
        return {
            "origin": self.origin.hex(),
            "seq": self.seq,
            "lamport": self.lamport,
            "kind": self.kind,
            "body": body,
        }

    @classmethod
    def from_dict(cls, d: Any) -> Change:
        d = _fields(d, {"origin", "seq", "lamport", "kind", "body"}, "change")
        kind = d["kind"]
        if kind not in KINDS:
            raise _fail("change kind: unknown")
        origin = _id(d["origin"], "change origin")
        seq = _int(d["seq"], 1, MAX_SEQ, "change seq")
        lamport = _int(d["lamport"], 1, MAX_SEQ, "change lamport")
        if kind in _UPSERTS:
            return cls(origin, seq, lamport, kind, record=_UPSERTS[kind].from_dict(d["body"]))
        body = _fields(d["body"], {"id", "reason"}, "removal")
        ident = body["id"]
        if kind == "function_remove":
            _fid(ident)
        else:
            _id(ident, "removal id")
        reason = body["reason"]
        if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
            raise _fail("removal reason: expected a short string")
        return cls(origin, seq, lamport, kind, ident=ident, reason=reason)

    def to_bytes(self) -> bytes:
        data = canonical_json(self.to_dict())
        if len(data) > MAX_CHANGE_BYTES:
            raise ValueError(f"change of {len(data)} bytes exceeds MAX_CHANGE_BYTES")
        return data

    @classmethod
    def from_bytes(cls, data: bytes) -> Change:
        return cls.from_dict(parse_json(data, MAX_CHANGE_BYTES, "change"))


def _known_to_dict(known: Mapping[bytes, int]) -> dict:
    return {o.hex(): s for o, s in known.items()}


def _known_from_dict(d: Any) -> dict[bytes, int]:
    if not isinstance(d, dict) or len(d) > MAX_ORIGINS:
        raise _fail(f"known: expected an object of at most {MAX_ORIGINS} origins")
    return {_id(k, "origin"): _int(v, 0, MAX_SEQ, "origin seq") for k, v in d.items()}


@attrs.frozen
class Digest:
    """What a tracker has: the highest contiguous seq per origin, and a
    hash of its live state."""

    known: Mapping[bytes, int]
    state_hash: bytes

    def to_bytes(self) -> bytes:
        return canonical_json({"known": _known_to_dict(self.known), "hash": self.state_hash.hex()})

    @classmethod
    def from_bytes(cls, data: bytes) -> Digest:
        d = _fields(parse_json(data, MAX_DIGEST_BYTES, "digest"), {"known", "hash"}, "digest")
        return cls(known=_known_from_dict(d["known"]), state_hash=_id(d["hash"], "digest hash"))


@attrs.frozen
class Delta:
    """Changes in per-origin order.  ``more`` means the byte budget cut it
    short: ask again after applying."""

    changes: tuple[Change, ...]
    more: bool = False

    def to_bytes(self) -> bytes:
        return canonical_json({"changes": [c.to_dict() for c in self.changes], "more": self.more})

    @classmethod
    def from_bytes(cls, data: bytes) -> Delta:
        d = _fields(parse_json(data, MAX_DELTA_BYTES, "delta"), {"changes", "more"}, "delta")
        if not isinstance(d["changes"], list) or not isinstance(d["more"], bool):
            raise _fail("delta: malformed")
        return cls(changes=tuple(Change.from_dict(c) for c in d["changes"]), more=d["more"])


@attrs.frozen
class SnapshotEntry:
    key: str
    lamport: int
    origin: bytes
    record: Record | None  # None: a tombstone

    def to_list(self) -> list:
        return [self.key, self.lamport, self.origin.hex(), None if self.record is None else self.record.to_dict()]

    @classmethod
    def from_list(cls, v: Any) -> SnapshotEntry:
        if not isinstance(v, list) or len(v) != 4:
            raise _fail("snapshot entry: expected [key, lamport, origin, record]")
        key = _check_key(v[0])
        rec = None if v[3] is None else _record_from_dict(key, v[3])
        return cls(key, _int(v[1], 1, MAX_SEQ, "entry lamport"), _id(v[2], "entry origin"), rec)


@attrs.frozen
class Snapshot:
    """Entries of the LWW map, tombstones included.  A large snapshot is
    sent in parts; only the last part carries ``known`` (applying entries
    alone is always safe)."""

    entries: tuple[SnapshotEntry, ...]
    known: Mapping[bytes, int] = attrs.field(factory=dict)
    lamport: int = 0

    def to_bytes(self) -> bytes:
        return canonical_json(
            {"entries": [e.to_list() for e in self.entries], "known": _known_to_dict(self.known), "lamport": self.lamport}
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Snapshot:
        d = _fields(parse_json(data, MAX_SNAPSHOT_PART_BYTES, "snapshot"), {"entries", "known", "lamport"}, "snapshot")
        if not isinstance(d["entries"], list):
            raise _fail("snapshot entries: expected a list")
        return cls(
            entries=tuple(SnapshotEntry.from_list(e) for e in d["entries"]),
            known=_known_from_dict(d["known"]),
            lamport=_int(d["lamport"], 0, MAX_SEQ, "snapshot lamport"),
        )


# -- the registry -------------------------------------------------------------


@attrs.define
class _Entry:
    lamport: int
    origin: bytes
    record: Record | None
    changed_s: float

    @property
    def stamp(self) -> tuple[int, bytes]:
        return (self.lamport, self.origin)


MIGRATIONS = [
    """
    CREATE TABLE registry_meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
    CREATE TABLE registry_entry (
        key TEXT PRIMARY KEY,
        lamport INTEGER NOT NULL,
        origin TEXT NOT NULL,
        record TEXT,
        changed_s REAL NOT NULL,
        last_seen_s REAL
    );
    """,
]


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
    ) -> None:
        self._clock = clock
        self.tracker_id = check_id(tracker_id, "tracker id")
        self.peer_ttl_s = peer_ttl_s
        self.tracker_ttl_s = tracker_ttl_s if tracker_ttl_s is not None else 2 * peer_ttl_s
        self.tombstone_ttl_s = tombstone_ttl_s
        self._entries: dict[str, _Entry] = {}
        self._peers: dict[bytes, PeerRecord] = {}
        self._functions: dict[str, FunctionRecord] = {}
        self._trackers: dict[bytes, TrackerRecord] = {}
        self._tombstones: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._peer_seen: dict[bytes, float] = {}
        self._tracker_seen: dict[bytes, float] = {}
        self._tracker_connected: dict[bytes, bool] = {}
        self._seq = 0
        self._lamport = 0
        self._known: dict[bytes, int] = {}
        self._log: dict[bytes, collections.deque[Change]] = {}
        self._log_order: collections.deque[bytes] = collections.deque()
        self._observers: list[Callable[[Change], None]] = []
        self._hash: bytes | None = None

    # -- queries ----------------------------------------------------------------

    def now(self) -> float:
        return self._clock.seconds()

    def peers(self) -> list[PeerRecord]:
        return list(self._peers.values())

    def peer(self, node_id: bytes) -> PeerRecord | None:
        return self._peers.get(node_id)

    def peer_last_seen(self, node_id: bytes) -> float | None:
        return self._peer_seen.get(node_id)

    def functions(self) -> list[FunctionRecord]:
        return list(self._functions.values())

    def function(self, fid: str) -> FunctionRecord | None:
        return self._functions.get(fid)

    def hosts_of(self, fid: str) -> list[PeerRecord]:
        """Peers hosting ``fid``, lowest RTT first (unknown RTT last)."""
        hosts = [p for p in self._peers.values() if any(f == fid for f, _ in p.functions)]
        return sorted(hosts, key=lambda p: (p.rtt_ms is None, p.rtt_ms or 0.0, p.load))

    def trackers(self) -> list[TrackerRecord]:
        return list(self._trackers.values())

    def tracker(self, node_id: bytes) -> TrackerRecord | None:
        return self._trackers.get(node_id)

    def tracker_last_seen(self, node_id: bytes) -> float | None:
        return self._tracker_seen.get(node_id)

    def tracker_connected(self, node_id: bytes) -> bool:
        return self._tracker_connected.get(node_id, False)

    def counts(self) -> dict[str, int]:
        return {
            "peers": len(self._peers),
            "trackers": len(self._trackers),
            "functions": len(self._functions),
            "changes_logged": len(self._log_order),
            "tombstones": len(self._tombstones),
        }

    @property
    def seq(self) -> int:
        return self._seq

    def subscribe(self, observer: Callable[[Change], None]) -> None:
        """Call ``observer(change)`` for every change entering the log.
        It runs synchronously inside the registry call: it must only queue
        (e.g. write to transports), never call back into the registry."""
        self._observers.append(observer)

    def unsubscribe(self, observer: Callable[[Change], None]) -> None:
        self._observers.remove(observer)

    # -- the LWW map ------------------------------------------------------------

    def _merge(self, key: str, lamport: int, origin: bytes, record: Record | None, now: float) -> bool:
        """Last-writer-wins.  True if the state changed."""
        cur = self._entries.get(key)
        if cur is not None and cur.stamp >= (lamport, origin):
            return False
        live = cur is not None and cur.record is not None
        if record is not None and not live and not self._has_room(record):
            log.warn("registry full: dropping {key}", key=key)
            return False
        self._tombstones.pop(key, None)
        self._entries[key] = _Entry(lamport, origin, record, now)
        self._hash = None
        if record is None:
            self._tombstones[key] = now
            self._drop_view(key)
            self._prune_tombstones(now)
        else:
            self._set_view(record, now)
        return True

    def _has_room(self, record: Record) -> bool:
        if isinstance(record, PeerRecord):
            return len(self._peers) < MAX_PEERS
        if isinstance(record, FunctionRecord):
            return len(self._functions) < MAX_FUNCTIONS
        return len(self._trackers) < MAX_TRACKERS

    def _set_view(self, record: Record, now: float) -> None:
        if isinstance(record, PeerRecord):
            # For a peer homed elsewhere, "seen" is the last news of it.
            self._peers[record.node_id] = record
            self._peer_seen[record.node_id] = now
        elif isinstance(record, FunctionRecord):
            self._functions[record.fid] = record
        else:
            self._trackers[record.node_id] = record
            self._tracker_seen.setdefault(record.node_id, now)

    def _drop_view(self, key: str) -> None:
        prefix, _, ident = key.partition(":")
        if prefix == "peer":
            nid = bytes.fromhex(ident)
            self._peers.pop(nid, None)
            self._peer_seen.pop(nid, None)
        elif prefix == "fn":
            self._functions.pop(ident, None)
        else:
            nid = bytes.fromhex(ident)
            self._trackers.pop(nid, None)
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

    def _log_change(self, change: Change) -> None:
        per = self._log.setdefault(change.origin, collections.deque())
        per.append(change)
        self._log_order.append(change.origin)
        while len(self._log_order) > MAX_CHANGE_LOG:
            oldest = self._log_order.popleft()
            q = self._log[oldest]
            q.popleft()
            if not q:
                del self._log[oldest]
        for observer in list(self._observers):
            try:
                observer(change)
            except Exception:
                log.failure("registry observer failed on {kind}", kind=change.kind)

    def _emit(self, kind: str, record: Record | None = None, ident: str | None = None, reason: str = "") -> Change:
        self._seq += 1
        self._lamport += 1
        self._known[self.tracker_id] = self._seq
        change = Change(self.tracker_id, self._seq, self._lamport, kind, record=record, ident=ident, reason=reason)
        now = self.now()
        if record is not None:
            self._merge(change.key, change.lamport, change.origin, record, now)
        else:
            self._merge(change.key, change.lamport, change.origin, None, now)
        self._log_change(change)
        return change

    # -- local writes -----------------------------------------------------------

    def upsert_peer(
        self,
        node_id: bytes,
        addresses: Iterable[tuple[str, int]] = (),
        reachability: str = "unknown",
        rtt_ms: float | None = None,
        load: float = 0.0,
        functions: Mapping[str, int] | None = None,
        roles: int = 0,
    ) -> Change | None:
        """A peer joined (or re-announced itself) here; we become its home.
        Returns the change, or None if nothing replicated changed."""
        record = PeerRecord(
            node_id=check_id(node_id, "peer id"),
            home=self.tracker_id,
            addresses=tuple((str(ip), int(port)) for ip, port in addresses),
            reachability=reachability,
            rtt_ms=rtt_ms,
            load=float(load),
            functions=dict(functions or {}),
            roles=roles,
        )
        PeerRecord.from_dict(record.to_dict())  # same rules as remote input
        self._peer_seen[node_id] = self.now()
        if self._peers.get(node_id) == record:
            return None
        if node_id not in self._peers and len(self._peers) >= MAX_PEERS:
            raise RegistryFull(f"registry holds {MAX_PEERS} peers")
        return self._emit("peer_upsert", record)

    def update_peer(self, node_id: bytes, **fields: Any) -> Change | None:
        """Change some fields of a peer homed here (``reachability``,
        ``load``, ``functions``, ``addresses``, ``roles``, ``rtt_ms``)."""
        cur = self._peers.get(node_id)
        if cur is None:
            raise KeyError(node_id.hex())
        merged = {
            "addresses": cur.addresses,
            "reachability": cur.reachability,
            "rtt_ms": cur.rtt_ms,
            "load": cur.load,
            "functions": cur.function_map,
            "roles": cur.roles,
        }
        unknown = set(fields) - set(merged)
        if unknown:
            raise TypeError(f"unknown peer fields {sorted(unknown)}")
        merged.update(fields)
        return self.upsert_peer(node_id, **merged)

    def record_rtt(self, node_id: bytes, rtt_ms: float) -> Change | None:
        """A PONG came back.  The RTT is replicated only when it moved by
        more than RTT_REPLICATE_FRACTION, so pings do not flood federation."""
        cur = self._peers.get(node_id)
        if cur is None:
            return None
        self._peer_seen[node_id] = self.now()
        old = cur.rtt_ms
        if old is not None and abs(rtt_ms - old) <= RTT_REPLICATE_FRACTION * max(old, 1.0):
            return None
        return self.update_peer(node_id, rtt_ms=float(rtt_ms))

    def remove_peer(self, node_id: bytes, reason: str = "left") -> Change | None:
        if node_id not in self._peers:
            return None
        return self._emit("peer_remove", ident=node_id.hex(), reason=reason[:MAX_REASON_CHARS])

    def upsert_function(self, fid: str, version: int, owner: bytes, replicas: int = 3) -> Change | None:
        record = FunctionRecord(fid=fid, version=version, owner=check_id(owner, "owner"), replicas=replicas)
        FunctionRecord.from_dict(record.to_dict())
        if self._functions.get(fid) == record:
            return None
        if fid not in self._functions and len(self._functions) >= MAX_FUNCTIONS:
            raise RegistryFull(f"registry holds {MAX_FUNCTIONS} functions")
        return self._emit("function_upsert", record)

    def remove_function(self, fid: str, reason: str = "deprecated") -> Change | None:
        if fid not in self._functions:
            return None
        return self._emit("function_remove", ident=fid, reason=reason[:MAX_REASON_CHARS])

    def upsert_tracker(self, node_id: bytes, addresses: Iterable[tuple[str, int]] = ()) -> Change | None:
        record = TrackerRecord(check_id(node_id, "tracker id"), tuple((str(ip), int(p)) for ip, p in addresses))
        TrackerRecord.from_dict(record.to_dict())
        self._tracker_seen[node_id] = self.now()
        if self._trackers.get(node_id) == record:
            return None
        if node_id not in self._trackers and len(self._trackers) >= MAX_TRACKERS:
            raise RegistryFull(f"registry holds {MAX_TRACKERS} trackers")
        return self._emit("tracker_upsert", record)

    def remove_tracker(self, node_id: bytes, reason: str = "gone") -> Change | None:
        if node_id not in self._trackers:
            return None
        return self._emit("tracker_remove", ident=node_id.hex(), reason=reason[:MAX_REASON_CHARS])

    # -- liveness (soft state) ------------------------------------------------

    def touch(self, peer_id: bytes, now: float | None = None) -> bool:
        """The peer showed a sign of life.  False if we do not know it."""
        if peer_id not in self._peers:
            return False
        self._peer_seen[peer_id] = self.now() if now is None else now
        return True

    def touch_tracker(self, node_id: bytes, now: float | None = None) -> bool:
        if node_id not in self._trackers:
            return False
        self._tracker_seen[node_id] = self.now() if now is None else now
        return True

    def set_tracker_connected(self, node_id: bytes, connected: bool) -> None:
        if node_id in self._trackers:
            self._tracker_connected[node_id] = connected
            if connected:
                self._tracker_seen[node_id] = self.now()

    def _tracker_alive(self, node_id: bytes, now: float) -> bool:
        if node_id == self.tracker_id:
            return True
        if self._tracker_connected.get(node_id):
            return True
        seen = self._tracker_seen.get(node_id)
        return seen is not None and now - seen <= self.tracker_ttl_s

    def expire(self, now: float | None = None) -> list[Change]:
        """Remove dead peers: ours not seen for ``peer_ttl_s``, and those
        whose home tracker is gone.  Also forgets old tombstones."""
        now = self.now() if now is None else now
        out = []
        for nid, rec in list(self._peers.items()):
            seen = self._peer_seen.get(nid, now)
            if now - seen <= self.peer_ttl_s:
                continue
            if rec.home == self.tracker_id:
                reason = "timeout"
            elif not self._tracker_alive(rec.home, now):
                reason = "home-gone"
            else:
                continue
            change = self.remove_peer(nid, reason)
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
        if origin == self.tracker_id:
            if change.seq <= self._seq:
                return ApplyResult.STALE
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
        if change.kind == "peer_remove":
            nid = bytes.fromhex(change.ident or "")
            mine, seen = self._peers.get(nid), self._peer_seen.get(nid)
        self._merge(change.key, change.lamport, origin, change.record, now)
        self._log_change(change)
        if (
            mine is not None
            and seen is not None
            and mine.home == self.tracker_id
            and now - seen <= self.peer_ttl_s
            and mine.node_id not in self._peers
        ):
            # A remote removal of a peer alive and homed here loses: say so.
            log.info("re-announcing peer {peer_id} removed by {origin}", peer_id=mine.node_id.hex()[:16],
                     origin=origin.hex()[:16])
            self._emit("peer_upsert", mine)
            self._peer_seen[mine.node_id] = seen
        return ApplyResult.APPLIED

    def digest(self) -> Digest:
        known = dict(self._known)
        return Digest(known=known, state_hash=self.state_hash())

    def state_hash(self) -> bytes:
        if self._hash is None:
            h = hashlib.sha256()
            for key in sorted(self._entries):
                e = self._entries[key]
                if e.record is None:
                    continue
                h.update(canonical_json([key, e.lamport, e.origin.hex(), e.record.to_dict()]))
                h.update(b"\n")
            self._hash = h.digest()
        return self._hash

    def delta_since(self, remote: Digest, max_bytes: int = MAX_DELTA_BYTES) -> Delta | Snapshot:
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

    def snapshot_parts(self, max_bytes: int = MAX_SNAPSHOT_PART_BYTES) -> list[Snapshot]:
        """The snapshot cut into parts that each encode under ``max_bytes``;
        the last part carries ``known``."""
        full = self.snapshot()
        parts: list[Snapshot] = []
        batch: list[SnapshotEntry] = []
        size = 4096  # room for known and the envelope
        for e in full.entries:
            n = len(canonical_json(e.to_list())) + 1
            if batch and size + n > max_bytes:
                parts.append(Snapshot(entries=tuple(batch)))
                batch, size = [], 4096
            batch.append(e)
            size += n
        parts.append(Snapshot(entries=tuple(batch), known=full.known, lamport=full.lamport))
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

    def save(self, db: Any) -> Deferred[None]:
        """Write everything to ``db`` (opened with ``MIGRATIONS``) in one
        transaction.  The snapshot is taken now, on the caller's thread."""
        rows = [
            (
                k,
                e.lamport,
                e.origin.hex(),
                None if e.record is None else canonical_json(e.record.to_dict()).decode("ascii"),
                e.changed_s,
                self._peer_seen.get(e.record.node_id) if isinstance(e.record, PeerRecord) else None,
            )
            for k, e in self._entries.items()
        ]
        meta = {
            "tracker_id": self.tracker_id.hex(),
            "seq": str(self._seq),
            "lamport": str(self._lamport),
            "known": canonical_json(_known_to_dict(self._known)).decode("ascii"),
        }

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM registry_entry")
            conn.executemany("INSERT INTO registry_entry VALUES (?, ?, ?, ?, ?, ?)", rows)
            conn.executemany("INSERT OR REPLACE INTO registry_meta (k, v) VALUES (?, ?)", meta.items())

        return db.run(write)

    @classmethod
    def load(cls, db: Any, clock: Any, tracker_id: bytes, **kw: Any) -> Deferred[Registry]:
        """A registry rebuilt from ``db``.  Stored rows are validated like
        remote input; bad ones are skipped.  A database written by another
        tracker id is ignored (logged) rather than adopted."""

        def read(conn: sqlite3.Connection) -> tuple[dict, list]:
            meta = dict(conn.execute("SELECT k, v FROM registry_meta").fetchall())
            rows = conn.execute("SELECT key, lamport, origin, record, changed_s, last_seen_s FROM registry_entry").fetchall()
            return meta, rows

        def build(result: tuple[dict, list]) -> Registry:
            meta, rows = result
            reg = cls(clock, tracker_id, **kw)
            if meta and meta.get("tracker_id") != tracker_id.hex():
                log.warn("registry database belongs to another tracker; starting empty")
                return reg
            reg._restore(meta, rows)
            return reg

        return db.run(read).addCallback(build)

    def _restore(self, meta: dict, rows: list) -> None:
        skipped = 0
        now = self.now()
        try:
            self._seq = int(meta.get("seq", 0))
            self._lamport = int(meta.get("lamport", 0))
            known = meta.get("known")
            self._known = _known_from_dict(json.loads(known)) if known else {}
        except (ValueError, RegistryChangeError):
            log.warn("registry metadata unreadable; sequence numbers restart from the entries")
            self._known = {}
        for key, lamport, origin, record, changed_s, last_seen_s in sorted(rows, key=lambda r: r[4] or 0):
            try:
                entry = SnapshotEntry.from_list(
                    [key, lamport, origin, None if record is None else parse_json(record.encode(), MAX_CHANGE_BYTES, "row")]
                )
                self._merge(entry.key, entry.lamport, entry.origin, entry.record, float(changed_s))
            except (RegistryChangeError, AttributeError, TypeError, ValueError):
                skipped += 1
                continue
            self._lamport = max(self._lamport, entry.lamport)
            if entry.origin == self.tracker_id:
                self._seq = max(self._seq, self._known.get(self.tracker_id, 0))
            if isinstance(entry.record, PeerRecord) and last_seen_s is not None:
                self._peer_seen[entry.record.node_id] = min(float(last_seen_s), now)
        self._known[self.tracker_id] = max(self._seq, self._known.get(self.tracker_id, 0))
        self._seq = self._known[self.tracker_id]
        if self._seq == 0:
            del self._known[self.tracker_id]
        self._prune_tombstones(now)
        if skipped:
            log.info("registry: skipped {count} stored entries", count=skipped)
