# -*- test-case-name: tests.test_registry -*-
"""
Tracker federation payloads: the JSON inside SYNC and DELTA (RFC section 8.6).

Pure wire format: records, changes, digests, deltas and snapshot parts,
their validators, the canonical form and the state hash.  The tracker's
last-writer-wins core (``orb.tracker.registry``) builds and applies these;
a third party reimplements them from the RFC alone.

Canonical form.  Every payload is JSON in the JSON Canonicalization Scheme
(RFC 8785, "JCS"), produced by the maintained ``rfc8785`` package.  The
payloads hold integers only, and every number is within I-JSON's safe range
(RFC 7493, below 2**53).  A u64 counter (``seq``, ``lamport``) is written
as a decimal string, so a JavaScript ``JSON.parse`` never rounds it.

Kinds.  What the registry can hold is one table, ``KINDS``: each
``KindSpec`` names a record class, its entity-key prefix, how its key's
identifier is validated, and how many live records of it a registry keeps.
A new kind (replica placements, NAME records, revocations) is one more
entry; ``Kinds.with_kind`` builds a table with it, and the core and the
store take the table as a parameter.  ``KindSpec.check`` runs on every
record accepted from anywhere: it is where a kind whose records are signed
statements verifies the signature.  Such a record carries its subject's
own sequence number; ordering writes to one key by it, rather than by the
trackers' ``(lamport, origin)`` stamp, is one more field of ``KindSpec``
for the core's merge to consult.
"""

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import rfc8785

from orb.protocol import addresses
from orb.protocol import fid as fidmod
from orb.protocol.messages import MAX_LISTEN_ADDRESSES, MAX_REGISTRY_JSON_BYTES

MAX_ADDRESSES = MAX_LISTEN_ADDRESSES  # a record's addresses are the node's HELLO listen list
MAX_FUNCTIONS_PER_PEER = 256
MAX_REPLICAS = 64
MAX_PEERS = 10_000
MAX_FUNCTIONS = 10_000
MAX_TRACKERS = 256
MAX_ORIGINS = 1024
MAX_STAMP = 2**63 - 1  # seq and lamport: they must fit SQLite's signed 64-bit INTEGER
MAX_U32 = 2**32 - 1
MAX_LOAD_PERMILLE = 1000
MAX_RTT_MS = 600_000
MAX_REASON_CHARS = 64
MAX_KEY_CHARS = 80
MAX_CHANGE_BYTES = 64 * 1024
MAX_DIGEST_BYTES = 256 * 1024
MAX_PAYLOAD_BYTES = MAX_REGISTRY_JSON_BYTES  # a DELTA payload: a change list or one snapshot part

REACHABILITY = ("reachable", "relayed", "unknown")
_DECIMAL_RE = re.compile(r"(0|[1-9][0-9]{0,18})\Z")


class RegistryChangeError(ValueError):
    """A change, digest, delta, snapshot or record is malformed."""


# -- canonical JSON (RFC 8785) and parsing --------------------------------------


def canonical_json(obj: Any) -> bytes:
    """The JCS (RFC 8785) bytes of ``obj``.  Raises ``ValueError`` for what
    JCS cannot represent (a bug on our side: payloads hold safe integers)."""
    try:
        return rfc8785.dumps(obj)
    except rfc8785.CanonicalizationError as e:
        raise ValueError(f"not canonicalizable: {e}") from None


def _no_dups(pairs: list[tuple[str, Any]]) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise RegistryChangeError("duplicate key in JSON object")
    return d


def _reject_constant(name: str) -> Any:
    raise RegistryChangeError(f"non-finite number {name} in JSON")


def _reject_float(text: str) -> Any:
    raise RegistryChangeError("non-integer number in JSON")


def parse_json(data: Any, max_bytes: int, what: str) -> Any:
    """Parse ``data`` (at most ``max_bytes``) as JSON.  Duplicate keys,
    non-finite and non-integer numbers are refused; anything wrong raises
    ``RegistryChangeError`` and nothing else."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise RegistryChangeError(f"{what}: expected bytes")
    if len(data) > max_bytes:
        raise RegistryChangeError(f"{what}: {len(data)} bytes is over the {max_bytes} limit")
    try:
        return json.loads(
            bytes(data).decode("utf-8"),
            object_pairs_hook=_no_dups,
            parse_constant=_reject_constant,
            parse_float=_reject_float,
        )
    except RegistryChangeError as e:
        raise RegistryChangeError(f"{what}: {e}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise RegistryChangeError(f"{what}: not JSON ({type(e).__name__})") from None


# -- field validators ---------------------------------------------------------


def _fields(d: Any, required: set[str], what: str) -> dict:
    if not isinstance(d, dict):
        raise RegistryChangeError(f"{what}: expected an object")
    if set(d) != required:
        raise RegistryChangeError(f"{what}: fields {sorted(d)[:16]!r} != {sorted(required)!r}")
    return d


def check_int(v: Any, lo: int, hi: int, what: str) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise RegistryChangeError(f"{what}: expected an integer in [{lo}, {hi}]")
    return v


def u64_text(n: int) -> str:
    """A counter as JSON carries it: a decimal string."""
    return str(n)


def check_u64_text(v: Any, lo: int, hi: int, what: str) -> int:
    """A counter written as a decimal string (no sign, no leading zeros)."""
    if not isinstance(v, str) or not _DECIMAL_RE.match(v):
        raise RegistryChangeError(f"{what}: expected a decimal string")
    n = int(v)
    if not lo <= n <= hi:
        raise RegistryChangeError(f"{what}: expected a value in [{lo}, {hi}]")
    return n


def check_hex_id(v: Any, what: str) -> bytes:
    try:
        return addresses.node_id_from_hex(v, what)
    except addresses.AddressError as e:
        raise RegistryChangeError(str(e)) from None


def check_fid_text(v: Any, what: str = "fid") -> str:
    """A fid in text form, validated by the one fid definition."""
    try:
        fidmod.from_text(v)
    except fidmod.FidError:
        raise RegistryChangeError(f"{what}: not a fid") from None
    return v


def check_text(v: Any, max_chars: int, what: str) -> str:
    if not isinstance(v, str) or len(v) > max_chars:
        raise RegistryChangeError(f"{what}: expected text of at most {max_chars} characters")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise RegistryChangeError(f"{what}: not valid Unicode text") from None
    return v


def _addresses(v: Any, what: str) -> tuple[tuple[str, int], ...]:
    if not isinstance(v, list) or len(v) > MAX_ADDRESSES:
        raise RegistryChangeError(f"{what}: expected a list of at most {MAX_ADDRESSES} addresses")
    out = []
    for item in v:
        if not isinstance(item, list) or len(item) != 2:
            raise RegistryChangeError(f"{what}: expected [ip, port]")
        if not addresses.is_canonical_ip(item[0]):
            raise RegistryChangeError(f"{what}: expected an IP address in canonical form")
        try:
            out.append((item[0], addresses.check_port(item[1], f"{what} port")))
        except addresses.AddressError as e:
            raise RegistryChangeError(str(e)) from None
    return tuple(out)


def canonical_addresses(v: Iterable[tuple[str, int]], what: str = "addresses") -> tuple[tuple[str, int], ...]:
    """Local input (``(host, port)`` pairs) in the records' canonical form.
    Raises ``RegistryChangeError`` where remote input would be refused."""
    try:
        return tuple(addresses.check_endpoint(host, port, what) for host, port in v)
    except (addresses.AddressError, TypeError, ValueError) as e:
        raise RegistryChangeError(f"{what}: {e}") from None


def _addresses_json(v: tuple[tuple[str, int], ...]) -> list:
    return [[ip, port] for ip, port in v]


# -- records --------------------------------------------------------------------


def _freeze_functions(v: Mapping[str, int] | Iterable[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    items = v.items() if isinstance(v, Mapping) else v
    return tuple(sorted(items))


@attrs.frozen
class PeerRecord:
    """A peer as replicated between trackers.  ``home`` is the tracker it
    announces to; ``rtt_ms`` is that tracker's measurement (None: not yet)."""

    node_id: bytes
    home: bytes
    addresses: tuple[tuple[str, int], ...] = ()
    reachability: str = "unknown"
    rtt_ms: int | None = None
    load_permille: int = 0
    functions: tuple[tuple[str, int], ...] = attrs.field(default=(), converter=_freeze_functions)
    roles: int = 0

    @property
    def ident(self) -> str:
        return self.node_id.hex()

    @property
    def function_map(self) -> dict[str, int]:
        return dict(self.functions)

    def to_dict(self) -> dict:
        return {
            "node_id": self.node_id.hex(),
            "home": self.home.hex(),
            "addresses": _addresses_json(self.addresses),
            "reachability": self.reachability,
            "rtt_ms": self.rtt_ms,
            "load_permille": self.load_permille,
            "functions": {fid: v for fid, v in self.functions},
            "roles": self.roles,
        }

    @classmethod
    def from_dict(cls, d: Any) -> "PeerRecord":
        d = _fields(
            d, {"node_id", "home", "addresses", "reachability", "rtt_ms", "load_permille", "functions", "roles"}, "peer"
        )
        if d["reachability"] not in REACHABILITY:
            raise RegistryChangeError("peer reachability: unknown value")
        fns = d["functions"]
        if not isinstance(fns, dict) or len(fns) > MAX_FUNCTIONS_PER_PEER:
            raise RegistryChangeError(f"peer functions: expected an object of at most {MAX_FUNCTIONS_PER_PEER}")
        return cls(
            node_id=check_hex_id(d["node_id"], "peer node_id"),
            home=check_hex_id(d["home"], "peer home"),
            addresses=_addresses(d["addresses"], "peer addresses"),
            reachability=d["reachability"],
            rtt_ms=None if d["rtt_ms"] is None else check_int(d["rtt_ms"], 0, MAX_RTT_MS, "peer rtt_ms"),
            load_permille=check_int(d["load_permille"], 0, MAX_LOAD_PERMILLE, "peer load_permille"),
            functions={check_fid_text(k): check_int(v, 0, MAX_U32, "function version") for k, v in fns.items()},
            roles=check_int(d["roles"], 0, MAX_U32, "peer roles"),
        )


@attrs.frozen
class FunctionRecord:
    """A deployed function: its current version, owner key and replication target."""

    fid: str
    version: int
    owner: bytes
    replicas: int = 3

    @property
    def ident(self) -> str:
        return self.fid

    def to_dict(self) -> dict:
        return {"fid": self.fid, "version": self.version, "owner": self.owner.hex(), "replicas": self.replicas}

    @classmethod
    def from_dict(cls, d: Any) -> "FunctionRecord":
        d = _fields(d, {"fid", "version", "owner", "replicas"}, "function")
        return cls(
            fid=check_fid_text(d["fid"]),
            version=check_int(d["version"], 0, MAX_U32, "function version"),
            owner=check_hex_id(d["owner"], "function owner"),
            replicas=check_int(d["replicas"], 1, MAX_REPLICAS, "function replicas"),
        )


@attrs.frozen
class TrackerRecord:
    """A tracker and the addresses it accepts connections on."""

    node_id: bytes
    addresses: tuple[tuple[str, int], ...] = ()

    @property
    def ident(self) -> str:
        return self.node_id.hex()

    def to_dict(self) -> dict:
        return {"node_id": self.node_id.hex(), "addresses": _addresses_json(self.addresses)}

    @classmethod
    def from_dict(cls, d: Any) -> "TrackerRecord":
        d = _fields(d, {"node_id", "addresses"}, "tracker")
        return cls(
            node_id=check_hex_id(d["node_id"], "tracker node_id"),
            addresses=_addresses(d["addresses"], "tracker addresses"),
        )


def _hex_ident(text: Any) -> str:
    check_hex_id(text, "entry id")
    return text


def _no_check(record: Any) -> None:
    return None


# -- the kinds table -----------------------------------------------------------


@attrs.frozen
class KindSpec:
    """One kind of registry record.

    ``record_type`` has ``to_dict()``, ``from_dict(d)`` (raising
    ``RegistryChangeError``) and an ``ident`` property (its key's id text).
    Changes of this kind are ``<name>_upsert`` (body: the record) and
    ``<name>_remove`` (body: ``{"id", "reason"}``); its entity keys are
    ``<prefix>:<ident>``.  ``check(record)`` runs on every record accepted,
    local or remote, after ``from_dict``.
    """

    name: str
    prefix: str
    record_type: type
    parse_ident: Callable[[Any], str]
    max_records: int
    check: Callable[[Any], None] = _no_check

    @property
    def upsert(self) -> str:
        return self.name + "_upsert"

    @property
    def remove(self) -> str:
        return self.name + "_remove"

    def key(self, ident: str) -> str:
        return f"{self.prefix}:{ident}"

    def parse_record(self, d: Any) -> Any:
        record = self.record_type.from_dict(d)
        self.check(record)
        return record

    def validate(self, record: Any) -> Any:
        """A locally built record put through the rules remote input meets."""
        if type(record) is not self.record_type:
            raise TypeError(f"expected a {self.record_type.__name__}")
        return self.parse_record(record.to_dict())


class Kinds:
    """The table of record kinds, looked up by name, change kind, key
    prefix or record class."""

    def __init__(self, specs: Iterable[KindSpec]) -> None:
        self.specs = tuple(specs)
        self._by_name = {s.name: s for s in self.specs}
        self._by_prefix = {s.prefix: s for s in self.specs}
        self._by_type = {s.record_type: s for s in self.specs}
        self._by_change = {c: s for s in self.specs for c in (s.upsert, s.remove)}
        if not len(self._by_name) == len(self._by_prefix) == len(self._by_type) == len(self.specs):
            raise ValueError("kind names, prefixes and record types must be unique")

    def with_kind(self, spec: KindSpec) -> "Kinds":
        """This table plus ``spec``."""
        return Kinds((*self.specs, spec))

    def __iter__(self):
        return iter(self.specs)

    def named(self, name: str) -> KindSpec:
        return self._by_name[name]

    def of_record(self, record: Any) -> KindSpec:
        spec = self._by_type.get(type(record))
        if spec is None:
            raise TypeError(f"no registry kind holds {type(record).__name__}")
        return spec

    def of_change(self, kind: Any) -> KindSpec:
        spec = self._by_change.get(kind) if isinstance(kind, str) else None
        if spec is None:
            raise RegistryChangeError("change kind: unknown")
        return spec

    def of_key(self, key: Any) -> tuple[KindSpec, str]:
        """The kind and the id text of an entity key, validated."""
        if not isinstance(key, str) or len(key) > MAX_KEY_CHARS:
            raise RegistryChangeError("entry key: malformed")
        prefix, _, ident = key.partition(":")
        spec = self._by_prefix.get(prefix)
        if spec is None:
            raise RegistryChangeError("entry key: unknown kind")
        return spec, spec.parse_ident(ident)

    def key_of(self, record: Any) -> str:
        return self.of_record(record).key(record.ident)


PEER = KindSpec("peer", "peer", PeerRecord, _hex_ident, MAX_PEERS)
FUNCTION = KindSpec("function", "fn", FunctionRecord, check_fid_text, MAX_FUNCTIONS)
TRACKER = KindSpec("tracker", "tracker", TrackerRecord, _hex_ident, MAX_TRACKERS)
KINDS = Kinds([PEER, FUNCTION, TRACKER])


# -- changes and anti-entropy messages ----------------------------------------


@attrs.frozen
class Change:
    """One replicated write: an upsert of ``record``, or (``record`` None)
    the removal of the entity ``ident`` of kind ``spec``."""

    origin: bytes
    seq: int
    lamport: int
    spec: KindSpec
    record: Any = None
    removed: str | None = None
    reason: str = ""
    # ``to_bytes()`` when the maker already has it (the core caches it).
    encoded: bytes | None = attrs.field(default=None, eq=False, repr=False, kw_only=True)

    @property
    def kind(self) -> str:
        return self.spec.upsert if self.record is not None else self.spec.remove

    @property
    def ident(self) -> str:
        return self.record.ident if self.record is not None else self.removed

    @property
    def key(self) -> str:
        return self.spec.key(self.ident)

    @property
    def stamp(self) -> tuple[int, bytes]:
        return (self.lamport, self.origin)

    def to_dict(self) -> dict:
        if self.record is not None:
            body = self.record.to_dict()
        else:
            body = {"id": self.removed, "reason": self.reason}
        return {
            "origin": self.origin.hex(),
            "seq": u64_text(self.seq),
            "lamport": u64_text(self.lamport),
            "kind": self.kind,
            "body": body,
        }

    @classmethod
    def from_dict(cls, d: Any, kinds: Kinds = KINDS) -> "Change":
        d = _fields(d, {"origin", "seq", "lamport", "kind", "body"}, "change")
        spec = kinds.of_change(d["kind"])
        origin = check_hex_id(d["origin"], "change origin")
        seq = check_u64_text(d["seq"], 1, MAX_STAMP, "change seq")
        lamport = check_u64_text(d["lamport"], 1, MAX_STAMP, "change lamport")
        if d["kind"] == spec.upsert:
            return cls(origin, seq, lamport, spec, record=spec.parse_record(d["body"]))
        body = _fields(d["body"], {"id", "reason"}, "removal")
        ident = spec.parse_ident(body["id"])
        reason = check_text(body["reason"], MAX_REASON_CHARS, "removal reason")
        return cls(origin, seq, lamport, spec, removed=ident, reason=reason)

    def to_bytes(self) -> bytes:
        if self.encoded is not None:
            return self.encoded
        data = canonical_json(self.to_dict())
        if len(data) > MAX_CHANGE_BYTES:
            raise ValueError(f"change of {len(data)} bytes exceeds MAX_CHANGE_BYTES")
        return data

    @classmethod
    def from_bytes(cls, data: bytes, kinds: Kinds = KINDS) -> "Change":
        return cls.from_dict(parse_json(data, MAX_CHANGE_BYTES, "change"), kinds)


def known_to_dict(known: Mapping[bytes, int]) -> dict:
    return {o.hex(): u64_text(s) for o, s in known.items()}


def known_from_dict(d: Any) -> dict[bytes, int]:
    if not isinstance(d, dict) or len(d) > MAX_ORIGINS:
        raise RegistryChangeError(f"known: expected an object of at most {MAX_ORIGINS} origins")
    return {check_hex_id(k, "origin"): check_u64_text(v, 0, MAX_STAMP, "origin seq") for k, v in d.items()}


@attrs.frozen
class Digest:
    """What a tracker has: the highest contiguous seq per origin, and a
    hash of its live state (``state_hash``)."""

    known: Mapping[bytes, int]
    state_hash: bytes

    def to_bytes(self) -> bytes:
        return canonical_json({"known": known_to_dict(self.known), "hash": self.state_hash.hex()})

    @classmethod
    def from_bytes(cls, data: bytes) -> "Digest":
        d = _fields(parse_json(data, MAX_DIGEST_BYTES, "digest"), {"known", "hash"}, "digest")
        return cls(known=known_from_dict(d["known"]), state_hash=check_hex_id(d["hash"], "digest hash"))


@attrs.frozen
class Delta:
    """Changes in per-origin order.  ``more`` means the byte budget cut it
    short: ask again after applying."""

    changes: tuple[Change, ...]
    more: bool = False

    def to_bytes(self) -> bytes:
        # JCS assembled from the changes' own JCS bytes ("changes" < "more").
        changes = b",".join(c.to_bytes() for c in self.changes)
        return b'{"changes":[' + changes + b'],"more":' + (b"true" if self.more else b"false") + b"}"

    @classmethod
    def from_bytes(cls, data: bytes, kinds: Kinds = KINDS) -> "Delta":
        d = _fields(parse_json(data, MAX_PAYLOAD_BYTES, "delta"), {"changes", "more"}, "delta")
        if not isinstance(d["changes"], list) or not isinstance(d["more"], bool):
            raise RegistryChangeError("delta: malformed")
        return cls(changes=tuple(Change.from_dict(c, kinds) for c in d["changes"]), more=d["more"])


@attrs.frozen
class SnapshotEntry:
    """One entry of the last-writer-wins map; ``record`` None is a tombstone."""

    key: str
    lamport: int
    origin: bytes
    record: Any
    # ``entry_bytes(self)`` when the maker already has it (the core caches it).
    encoded: bytes | None = attrs.field(default=None, eq=False, repr=False, kw_only=True)

    def to_list(self) -> list:
        record = None if self.record is None else self.record.to_dict()
        return [self.key, u64_text(self.lamport), self.origin.hex(), record]

    @classmethod
    def from_list(cls, v: Any, kinds: Kinds = KINDS) -> "SnapshotEntry":
        if not isinstance(v, list) or len(v) != 4:
            raise RegistryChangeError("snapshot entry: expected [key, lamport, origin, record]")
        spec, ident = kinds.of_key(v[0])
        record = None
        if v[3] is not None:
            record = spec.parse_record(v[3])
            if record.ident != ident:
                raise RegistryChangeError("entry key does not match its record")
        lamport = check_u64_text(v[1], 1, MAX_STAMP, "entry lamport")
        return cls(v[0], lamport, check_hex_id(v[2], "entry origin"), record)


@attrs.frozen
class Snapshot:
    """Entries of the LWW map, tombstones included.  A large snapshot is
    sent in parts; only the last part carries ``known`` and ``lamport``
    (applying entries alone is always safe)."""

    entries: tuple[SnapshotEntry, ...]
    known: Mapping[bytes, int] = attrs.field(factory=dict)
    lamport: int = 0

    def to_bytes(self) -> bytes:
        # JCS of this object, assembled from the entries' own JCS bytes (an
        # array's JCS is its elements' JCS joined by commas, and the member
        # names "entries" < "known" < "lamport" are already in JCS order).
        return b"".join(
            (
                b'{"entries":[',
                b",".join(entry_bytes(e) for e in self.entries),
                b'],"known":',
                canonical_json(known_to_dict(self.known)),
                b',"lamport":',
                canonical_json(u64_text(self.lamport)),
                b"}",
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes, kinds: Kinds = KINDS) -> "Snapshot":
        d = _fields(parse_json(data, MAX_PAYLOAD_BYTES, "snapshot"), {"entries", "known", "lamport"}, "snapshot")
        if not isinstance(d["entries"], list):
            raise RegistryChangeError("snapshot entries: expected a list")
        return cls(
            entries=tuple(SnapshotEntry.from_list(e, kinds) for e in d["entries"]),
            known=known_from_dict(d["known"]),
            lamport=check_u64_text(d["lamport"], 0, MAX_STAMP, "snapshot lamport"),
        )


def entry_bytes(entry: SnapshotEntry) -> bytes:
    """One entry's JCS bytes: its element of a snapshot's ``entries`` and,
    for a live entry, its line of the state hash.  Worth caching."""
    if entry.encoded is not None:
        return entry.encoded
    return canonical_json(entry.to_list())


def state_hash(live_entries: Iterable[SnapshotEntry]) -> bytes:
    """The digest's ``hash``: SHA-256 over the live entries in key order,
    each contributing ``JCS([key, lamport, origin, record]) || "\\n"``.
    ``hash_lines`` is the same over entry bytes already encoded."""
    return hash_lines((e.key, entry_bytes(e)) for e in live_entries if e.record is not None)


def hash_lines(keyed_lines: Iterable[tuple[str, bytes]]) -> bytes:
    """``state_hash`` from ``(key, entry_bytes(entry))`` of the live entries."""
    h = hashlib.sha256()
    for _, line in sorted(keyed_lines, key=lambda kl: kl[0]):
        h.update(line)
        h.update(b"\n")
    return h.digest()
