# -*- test-case-name: tests.test_registry -*-
"""
Tracker federation payloads: the JSON inside SYNC and DELTA (RFC section 8.6).

Pure wire format: records, changes, digests, deltas and snapshot parts,
their validators, the canonical form, the signed bytes and the state hash.
The tracker's registry core (``orb.tracker.registry``) builds and applies
these; a third party reimplements them from the RFC alone.

Records carry their own proof.  Each is a statement signed by the key it
speaks for, over a per-kind domain-separation prefix and the JCS of the
statement: a peer's record is the peer's statement plus its home tracker's
observation of it; a tracker's record is its own; a function's is its
owner's.  A tracker relays them as they are and cannot alter one.  Writes
to one key are ordered by the subject's own sequence number
(``record.order()``), never by a clock a remote could push.

Canonical form.  Every payload is JSON in the JSON Canonicalization Scheme
(RFC 8785, "JCS"), produced by the maintained ``rfc8785`` package.  The
payloads hold integers only, and every number is within I-JSON's safe range
(RFC 7493, below 2**53).  A u64 counter (``seq``) is written as a decimal
string, so a JavaScript ``JSON.parse`` never rounds it.

Kinds.  What the registry can hold is one table, ``KINDS``: each
``KindSpec`` names a record class, its entity-key prefix, how its key's
identifier is validated, how many records of it a registry keeps, and
whether its records expire with age.  A new kind (replica placements, NAME
records, revocations) is one more entry; ``Kinds.with_kind`` builds a
table with it, and the core and the store take the table as a parameter.
"""

import functools
import hashlib
import itertools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import rfc8785

from orb.protocol import addresses
from orb.protocol import fid as fidmod
from orb.protocol.codes import Role
from orb.protocol.messages import (
    MAX_ANNOUNCE_ENTRIES,
    MAX_LISTEN_ADDRESSES,
    MAX_REGISTRY_JSON_BYTES,
)

MAX_ADDRESSES = MAX_LISTEN_ADDRESSES  # a record's addresses are the node's HELLO listen list
MAX_FUNCTIONS_PER_PEER = MAX_ANNOUNCE_ENTRIES  # a peer statement lists every function it hosts
MAX_REPLICAS = 64
MAX_PEERS = 10_000
MAX_FUNCTIONS = 10_000
MAX_TRACKERS = 256
MAX_NAMES = 10_000  # name records (RFC 9.10): one per (owner, name)
MAX_DEPRECATIONS = 10_000  # deprecation records: one per fid
MAX_SECRET_RECORDS = 4096  # sealed secrets (RFC 9.12): one per (fid, host); about 8.5 kB of JSON each at most
MAX_ORIGINS = 1024
MAX_STAMP = 2**63 - 1  # every seq: it must fit SQLite's signed 64-bit INTEGER
MAX_U32 = 2**32 - 1
MAX_LOAD_PERMILLE = 1000
MAX_RTT_MS = 600_000
MAX_REASON_CHARS = 64
MAX_KEY_CHARS = 160  # sec:<fid, 63 chars>.<host node id, 64 hex digits> fits
MAX_CHANGE_BYTES = 512 * 1024  # room for a function's manifest (256 KiB) and a peer listing 1024 fids
MAX_TIME = 2**53 - 1  # a statement's ``time``, unix seconds: a JSON number
MAX_DIGEST_BYTES = 256 * 1024
MAX_PAYLOAD_BYTES = MAX_REGISTRY_JSON_BYTES  # a DELTA payload: a change list or one snapshot part

REACHABILITY = ("reachable", "relayed", "unknown")
_DECIMAL_RE = re.compile(r"(0|[1-9][0-9]{0,18})\Z")
ETH_ADDRESS_RE = re.compile(r"0x[0-9a-f]{40}\Z")  # a tracker record's eth_signer: one spelling per address


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


MAX_JSON_DEPTH = 64  # arrays and objects inside each other; records nest 4 deep
_JSON_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_JSON_BRACKETS_ONLY = re.compile(rb"[\[\]{}]+")
_JSON_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def json_depth(data: bytes) -> int:
    """How deep arrays and objects nest in JSON text ``data`` (brackets inside strings not counted).

    Checked before ``json.loads``, whose C parser recurses once per level: a
    library that raises the interpreter's recursion limit (py-evm sets 12,288,
    py_ecc 100,000) turns a deep document into a C stack overflow, a crash
    rather than a RecursionError."""
    if b"[" not in data and b"{" not in data:
        return 0
    brackets = _JSON_BRACKETS_ONLY.findall(_JSON_STRINGS.sub(b'""', data))
    steps = memoryview(b"".join(brackets).translate(_JSON_STEPS)).cast("b")  # +1 opens, -1 closes
    return max(itertools.accumulate(steps), default=0)


def parse_json(data: Any, max_bytes: int, what: str) -> Any:
    """Parse ``data`` (at most ``max_bytes``) as JSON.  Duplicate keys,
    non-finite and non-integer numbers are refused; anything wrong raises
    ``RegistryChangeError`` and nothing else."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise RegistryChangeError(f"{what}: expected bytes")
    if len(data) > max_bytes:
        raise RegistryChangeError(f"{what}: {len(data)} bytes is over the {max_bytes} limit")
    if json_depth(bytes(data)) > MAX_JSON_DEPTH:
        raise RegistryChangeError(f"{what}: arrays and objects nested deeper than {MAX_JSON_DEPTH}")
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


# -- signatures -------------------------------------------------------------------
#
# Every record is a statement signed by the key it speaks for (RFC 8.6.1):
# the signed bytes are a per-kind domain-separation prefix, then the JCS of
# the statement object without its "sig" member.

PEER_DOMAIN = b"ORB-PEER-v1\x00"
OBSERVATION_DOMAIN = b"ORB-OBSERVATION-v1\x00"
TRACKER_DOMAIN = b"ORB-TRACKER-v1\x00"
PLACEMENT_DOMAIN = b"ORB-PLACEMENT-v1\x00"


def signed_bytes(domain: bytes, statement: Mapping[str, Any]) -> bytes:
    """What a statement's ``sig`` covers: ``domain || JCS(statement minus "sig")``."""
    return domain + canonical_json({k: v for k, v in statement.items() if k != "sig"})


def sign_statement(domain: bytes, statement: Mapping[str, Any], sign: Callable[[bytes], bytes]) -> bytes:
    return sign(signed_bytes(domain, statement))


def verify_statement(domain: bytes, statement: Mapping[str, Any], key: bytes, sig: bytes) -> bool:
    """True when ``sig`` is ``key``'s Ed25519 signature of the statement."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(key).verify(sig, signed_bytes(domain, statement))
    except (InvalidSignature, ValueError):
        return False
    return True


def node_id_of_key(key: bytes) -> bytes:
    """node id = SHA-256 of the raw Ed25519 public key (RFC 7.1)."""
    return hashlib.sha256(key).digest()


def _check_key(v: Any, what: str) -> bytes:
    return check_hex_id(v, what)  # 32 bytes as 64 lowercase hex digits, like a node id


def _check_sig(v: Any, what: str) -> bytes:
    if not isinstance(v, str) or not re.fullmatch(r"[0-9a-f]{128}", v):
        raise RegistryChangeError(f"{what}: expected 128 lowercase hex digits")
    return bytes.fromhex(v)


class BadSignature(RegistryChangeError):
    """A statement is not validly signed by the key it speaks for."""


# -- records --------------------------------------------------------------------


def _freeze_functions(v: Mapping[str, int] | Iterable[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    items = v.items() if isinstance(v, Mapping) else v
    return tuple(sorted(items))


def _order_tail(record: Any) -> bytes:
    """The tie-break between two statements with equal sequence numbers
    (an equivocation): the greater SHA-256 of the record's JCS wins."""
    return hashlib.sha256(canonical_json(record.to_dict())).digest()


@attrs.frozen
class PeerStatement:
    """What a peer says of itself, signed by its node key: where it listens,
    what it hosts, its load, and which tracker is its home."""

    node_id: bytes
    key: bytes
    seq: int
    time: int
    home: bytes
    addresses: tuple[tuple[str, int], ...] = ()
    load_permille: int = 0
    functions: tuple[tuple[str, int], ...] = attrs.field(default=(), converter=_freeze_functions)
    roles: int = 0
    sig: bytes = b""

    def statement(self) -> dict:
        return {
            "node_id": self.node_id.hex(),
            "key": self.key.hex(),
            "seq": u64_text(self.seq),
            "time": self.time,
            "home": self.home.hex(),
            "addresses": _addresses_json(self.addresses),
            "load_permille": self.load_permille,
            "functions": {fid: v for fid, v in self.functions},
            "roles": self.roles,
        }

    def to_dict(self) -> dict:
        return {**self.statement(), "sig": self.sig.hex()}

    def signed(self, sign: Callable[[bytes], bytes]) -> "PeerStatement":
        return attrs.evolve(self, sig=sign_statement(PEER_DOMAIN, self.statement(), sign))

    def verify(self) -> None:
        if node_id_of_key(self.key) != self.node_id:
            raise BadSignature("peer statement: key does not hash to node_id")
        if not verify_statement(PEER_DOMAIN, self.statement(), self.key, self.sig):
            raise BadSignature("peer statement: bad signature")

    @classmethod
    def from_dict(cls, d: Any) -> "PeerStatement":
        d = _fields(
            d,
            {"node_id", "key", "seq", "time", "home", "addresses", "load_permille", "functions", "roles", "sig"},
            "peer statement",
        )
        fns = d["functions"]
        if not isinstance(fns, dict) or len(fns) > MAX_FUNCTIONS_PER_PEER:
            raise RegistryChangeError(f"peer functions: expected an object of at most {MAX_FUNCTIONS_PER_PEER}")
        return cls(
            node_id=check_hex_id(d["node_id"], "peer node_id"),
            key=_check_key(d["key"], "peer key"),
            seq=check_u64_text(d["seq"], 1, MAX_STAMP, "peer seq"),
            time=check_int(d["time"], 0, MAX_TIME, "peer time"),
            home=check_hex_id(d["home"], "peer home"),
            addresses=_addresses(d["addresses"], "peer addresses"),
            load_permille=check_int(d["load_permille"], 0, MAX_LOAD_PERMILLE, "peer load_permille"),
            functions={check_fid_text(k): check_int(v, 0, MAX_U32, "function version") for k, v in fns.items()},
            roles=check_int(d["roles"], 0, MAX_U32, "peer roles"),
            sig=_check_sig(d["sig"], "peer sig"),
        )


@attrs.frozen
class Observation:
    """What a peer's home tracker observes of it, signed by that tracker
    and bound to the peer statement it accompanies (``statement_seq``)."""

    peer: bytes
    statement_seq: int
    tracker: bytes
    key: bytes
    seq: int
    time: int
    reachability: str = "unknown"
    rtt_ms: int | None = None
    connected: bool = True
    sig: bytes = b""

    def statement(self) -> dict:
        return {
            "peer": self.peer.hex(),
            "statement_seq": u64_text(self.statement_seq),
            "tracker": self.tracker.hex(),
            "key": self.key.hex(),
            "seq": u64_text(self.seq),
            "time": self.time,
            "reachability": self.reachability,
            "rtt_ms": self.rtt_ms,
            "connected": self.connected,
        }

    def to_dict(self) -> dict:
        return {**self.statement(), "sig": self.sig.hex()}

    def signed(self, sign: Callable[[bytes], bytes]) -> "Observation":
        return attrs.evolve(self, sig=sign_statement(OBSERVATION_DOMAIN, self.statement(), sign))

    def verify(self) -> None:
        if node_id_of_key(self.key) != self.tracker:
            raise BadSignature("observation: key does not hash to tracker")
        if not verify_statement(OBSERVATION_DOMAIN, self.statement(), self.key, self.sig):
            raise BadSignature("observation: bad signature")

    @classmethod
    def from_dict(cls, d: Any) -> "Observation":
        d = _fields(
            d,
            {"peer", "statement_seq", "tracker", "key", "seq", "time", "reachability", "rtt_ms", "connected", "sig"},
            "observation",
        )
        if d["reachability"] not in REACHABILITY:
            raise RegistryChangeError("observation reachability: unknown value")
        if not isinstance(d["connected"], bool):
            raise RegistryChangeError("observation connected: expected true or false")
        return cls(
            peer=check_hex_id(d["peer"], "observation peer"),
            statement_seq=check_u64_text(d["statement_seq"], 1, MAX_STAMP, "observation statement_seq"),
            tracker=check_hex_id(d["tracker"], "observation tracker"),
            key=_check_key(d["key"], "observation key"),
            seq=check_u64_text(d["seq"], 1, MAX_STAMP, "observation seq"),
            time=check_int(d["time"], 0, MAX_TIME, "observation time"),
            reachability=d["reachability"],
            rtt_ms=None if d["rtt_ms"] is None else check_int(d["rtt_ms"], 0, MAX_RTT_MS, "observation rtt_ms"),
            connected=d["connected"],
            sig=_check_sig(d["sig"], "observation sig"),
        )


@attrs.frozen
class PeerRecord:
    """A peer as trackers replicate it: the peer's own signed statement, and
    beside it its home tracker's signed observation.  Neither can be
    altered by anyone else; the properties read them together."""

    statement: PeerStatement
    observation: Observation

    @property
    def ident(self) -> str:
        return self.statement.node_id.hex()

    node_id = property(lambda self: self.statement.node_id)
    home = property(lambda self: self.statement.home)
    addresses = property(lambda self: self.statement.addresses)
    load_permille = property(lambda self: self.statement.load_permille)
    functions = property(lambda self: self.statement.functions)
    time = property(lambda self: self.statement.time)
    seq = property(lambda self: self.statement.seq)
    reachability = property(lambda self: self.observation.reachability)
    rtt_ms = property(lambda self: self.observation.rtt_ms)
    connected = property(lambda self: self.observation.connected)

    @property
    def roles(self) -> int:
        """The peer's role bits, without TRACKER and RELAY: a peer's own word
        never makes it a tracker (only a tracker record does)."""
        return self.statement.roles & ~int(Role.TRACKER | Role.RELAY)

    @property
    def function_map(self) -> dict[str, int]:
        return dict(self.statement.functions)

    def order(self) -> tuple:
        return (self.statement.seq, self.observation.seq, _order_tail(self))

    def to_dict(self) -> dict:
        return {"statement": self.statement.to_dict(), "observation": self.observation.to_dict()}

    @classmethod
    def from_dict(cls, d: Any) -> "PeerRecord":
        d = _fields(d, {"statement", "observation"}, "peer")
        return cls(PeerStatement.from_dict(d["statement"]), Observation.from_dict(d["observation"]))

    def verify(self) -> None:
        """Both signatures, and that the observation is by the peer's home
        about this very statement."""
        obs, st = self.observation, self.statement
        if obs.peer != st.node_id or obs.statement_seq != st.seq:
            raise BadSignature("observation is not about this statement")
        if obs.tracker != st.home:
            raise BadSignature("observation is not by the peer's home tracker")
        st.verify()
        obs.verify()


@attrs.frozen
class FunctionRecord:
    """A deployed function: its owner's signed deploy statement (RFC 9.8),
    with the manifest it covers.  ``manifest`` holds the manifest's
    canonical JSON bytes; the record carries the JSON object."""

    fid: str
    owner: bytes  # the owner's raw Ed25519 public key
    manifest: bytes  # JCS bytes of orb-manifest.json
    package_size: int
    issued_at: int
    sig: bytes = b""

    @property
    def ident(self) -> str:
        return self.fid

    @property
    def time(self) -> int:
        return self.issued_at

    def manifest_json(self) -> dict:
        """The manifest parsed (a fresh top-level dict; parsed once per manifest: routers read it per call)."""
        return dict(_parsed_manifest(self.manifest))

    @property
    def version(self) -> str:
        return self.manifest_json()["version"]

    @property
    def replicas(self) -> int:
        return self.manifest_json()["replicas"]

    def to_dict(self) -> dict:
        return {
            "fid": self.fid,
            "owner": self.owner.hex(),
            "manifest": self.manifest_json(),
            "package_size": self.package_size,
            "issued_at": self.issued_at,
            "sig": self.sig.hex(),
        }

    def verify(self) -> None:
        from orb.protocol.deploy import verify_deploy

        if not verify_deploy(self.owner, self.sig, fidmod.from_text(self.fid), self.manifest, self.package_size,
                             self.issued_at):
            raise BadSignature("function: not the owner's signature of this deploy statement")

    def order(self) -> tuple:
        return (self.issued_at, _order_tail(self))

    @classmethod
    def from_dict(cls, d: Any) -> "FunctionRecord":
        from orb.protocol import manifest as manifestmod

        d = _fields(d, {"fid", "owner", "manifest", "package_size", "issued_at", "sig"}, "function")
        try:
            parsed = manifestmod.from_json(d["manifest"])
        except manifestmod.ManifestError as e:
            raise RegistryChangeError(f"function manifest: {str(e)[:200]}") from None
        data = manifestmod.canonical_bytes(parsed)
        if data != canonical_json(d["manifest"]):
            raise RegistryChangeError("function manifest: not in canonical form (defaults must be written out)")
        return cls(
            fid=check_fid_text(d["fid"]),
            owner=_check_key(d["owner"], "function owner"),
            manifest=data,
            package_size=check_int(d["package_size"], 1, MAX_TIME, "function package_size"),
            issued_at=check_int(d["issued_at"], 0, MAX_TIME, "function issued_at"),
            sig=_check_sig(d["sig"], "function sig"),
        )


@attrs.frozen
class TrackerRecord:
    """A tracker and the addresses it accepts connections on, signed by the
    tracker itself and re-signed at least every TRACKER_RESIGN_S."""

    node_id: bytes
    key: bytes
    seq: int
    time: int
    addresses: tuple[tuple[str, int], ...] = ()
    sig: bytes = b""
    gateways: tuple[tuple[str, int], ...] = ()  # its HTTP gateways; the member is absent when there are none
    eth_signer: str = ""  # its payment voucher signer, "0x" + 40 lowercase hex (RFC 10.10); absent when none

    @property
    def ident(self) -> str:
        return self.node_id.hex()

    def statement(self) -> dict:
        statement = {
            "node_id": self.node_id.hex(),
            "key": self.key.hex(),
            "seq": u64_text(self.seq),
            "time": self.time,
            "addresses": _addresses_json(self.addresses),
        }
        if self.gateways:
            statement["gateways"] = _addresses_json(self.gateways)
        if self.eth_signer:
            statement["eth_signer"] = self.eth_signer
        return statement

    def to_dict(self) -> dict:
        return {**self.statement(), "sig": self.sig.hex()}

    def signed(self, sign: Callable[[bytes], bytes]) -> "TrackerRecord":
        return attrs.evolve(self, sig=sign_statement(TRACKER_DOMAIN, self.statement(), sign))

    def verify(self) -> None:
        if node_id_of_key(self.key) != self.node_id:
            raise BadSignature("tracker: key does not hash to node_id")
        if not verify_statement(TRACKER_DOMAIN, self.statement(), self.key, self.sig):
            raise BadSignature("tracker: bad signature")

    def order(self) -> tuple:
        return (self.seq, _order_tail(self))

    @classmethod
    def from_dict(cls, d: Any) -> "TrackerRecord":
        fields = {"node_id", "key", "seq", "time", "addresses", "sig"}
        if isinstance(d, dict):
            fields |= {"gateways", "eth_signer"} & set(d)
        d = _fields(d, fields, "tracker")
        gateways = _addresses(d["gateways"], "tracker gateways") if "gateways" in d else ()
        if "gateways" in d and not gateways:
            raise RegistryChangeError("tracker gateways: present but empty (leave the member out)")
        eth_signer = d.get("eth_signer", "")
        if "eth_signer" in d and not (isinstance(eth_signer, str) and ETH_ADDRESS_RE.match(eth_signer)):
            raise RegistryChangeError('tracker eth_signer: "0x" and 40 lowercase hex digits (leave the member out '
                                      "when the tracker signs no vouchers)")
        return cls(
            node_id=check_hex_id(d["node_id"], "tracker node_id"),
            key=_check_key(d["key"], "tracker key"),
            seq=check_u64_text(d["seq"], 1, MAX_STAMP, "tracker seq"),
            time=check_int(d["time"], 0, MAX_TIME, "tracker time"),
            addresses=_addresses(d["addresses"], "tracker addresses"),
            sig=_check_sig(d["sig"], "tracker sig"),
            gateways=gateways,
            eth_signer=eth_signer,
        )


@attrs.frozen
class Placement:
    """Where a function's replicas are, as the tracker that manages it
    (the fid's home, RFC 9.4) states it, signed by that tracker: each host
    with the time of its last passed integrity challenge (0: not yet)."""

    fid: str
    tracker: bytes
    key: bytes
    seq: int
    time: int
    hosts: tuple[tuple[bytes, int], ...] = ()  # (node id, verified_at)
    sig: bytes = b""

    @property
    def ident(self) -> str:
        return self.fid

    @property
    def verified(self) -> tuple[bytes, ...]:
        return tuple(node for node, at in self.hosts if at > 0)

    def statement(self) -> dict:
        return {
            "fid": self.fid,
            "tracker": self.tracker.hex(),
            "key": self.key.hex(),
            "seq": u64_text(self.seq),
            "time": self.time,
            "hosts": [[node.hex(), at] for node, at in self.hosts],
        }

    def to_dict(self) -> dict:
        return {**self.statement(), "sig": self.sig.hex()}

    def signed(self, sign: Callable[[bytes], bytes]) -> "Placement":
        return attrs.evolve(self, sig=sign_statement(PLACEMENT_DOMAIN, self.statement(), sign))

    def verify(self) -> None:
        if node_id_of_key(self.key) != self.tracker:
            raise BadSignature("placement: key does not hash to tracker")
        if not verify_statement(PLACEMENT_DOMAIN, self.statement(), self.key, self.sig):
            raise BadSignature("placement: bad signature")

    def order(self) -> tuple:
        return (self.seq, _order_tail(self))

    @classmethod
    def from_dict(cls, d: Any) -> "Placement":
        d = _fields(d, {"fid", "tracker", "key", "seq", "time", "hosts", "sig"}, "placement")
        hosts = d["hosts"]
        if not isinstance(hosts, list) or len(hosts) > MAX_REPLICAS:
            raise RegistryChangeError(f"placement hosts: expected a list of at most {MAX_REPLICAS}")
        parsed = []
        for item in hosts:
            if not isinstance(item, list) or len(item) != 2:
                raise RegistryChangeError("placement host: expected [node id, verified_at]")
            parsed.append((check_hex_id(item[0], "placement host"), check_int(item[1], 0, MAX_TIME, "verified_at")))
        if len({node for node, _ in parsed}) != len(parsed):
            raise RegistryChangeError("placement hosts: a host is listed twice")
        return cls(
            fid=check_fid_text(d["fid"]),
            tracker=check_hex_id(d["tracker"], "placement tracker"),
            key=_check_key(d["key"], "placement key"),
            seq=check_u64_text(d["seq"], 1, MAX_STAMP, "placement seq"),
            time=check_int(d["time"], 0, MAX_TIME, "placement time"),
            hosts=tuple(parsed),
            sig=_check_sig(d["sig"], "placement sig"),
        )


MAX_REVOCATIONS = 100_000


def revocation_ident(token_id: bytes, issuer: bytes) -> str:
    """``<token id hex>.<first 8 bytes of SHA-256(issuer) hex>``: one issuer's revocation of one link,
    which nobody else's can shadow."""
    return f"{token_id.hex()}.{hashlib.sha256(issuer).digest()[:8].hex()}"


_REVOCATION_IDENT_RE = re.compile(r"[0-9a-f]{32}\.[0-9a-f]{16}\Z")


def _revocation_ident(text: Any) -> str:
    if not isinstance(text, str) or not _REVOCATION_IDENT_RE.match(text):
        raise RegistryChangeError("revocation id: expected <32 hex>.<16 hex>")
    return text


@attrs.frozen
class Revocation:
    """A signed revocation of one capability token link (RFC 9.11): the REVOKE message's fields.  It
    applies to a link its ``issuer`` signed, or to any link of a chain whose root owner it is; it may be
    forgotten once past ``not_after`` (the token's own expiry)."""

    issuer: bytes
    token_id: bytes
    not_after: int
    sig: bytes = b""

    @property
    def ident(self) -> str:
        return revocation_ident(self.token_id, self.issuer)

    def to_dict(self) -> dict:
        return {"issuer": self.issuer.hex(), "token_id": self.token_id.hex(), "not_after": self.not_after,
                "sig": self.sig.hex()}

    def signed_bytes(self) -> bytes:
        from orb.protocol.messages import revoke_signed_bytes

        return revoke_signed_bytes(self.issuer, self.token_id, self.not_after)

    def verify(self) -> None:
        from orb.protocol.deploy import Ed25519PublicKey, InvalidSignature

        try:
            Ed25519PublicKey.from_public_bytes(self.issuer).verify(self.sig, self.signed_bytes())
        except (InvalidSignature, ValueError):
            raise BadSignature("revocation: not the issuer's signature") from None

    def order(self) -> tuple:
        return (self.not_after, _order_tail(self))

    @classmethod
    def from_dict(cls, d: Any) -> "Revocation":
        d = _fields(d, {"issuer", "token_id", "not_after", "sig"}, "revocation")
        token_id = d["token_id"]
        if not isinstance(token_id, str) or not re.fullmatch(r"[0-9a-f]{32}", token_id):
            raise RegistryChangeError("revocation token_id: expected 32 hex digits")
        return cls(
            issuer=_check_key(d["issuer"], "revocation issuer"),
            token_id=bytes.fromhex(token_id),
            not_after=check_int(d["not_after"], 0, MAX_TIME, "revocation not_after"),
            sig=_check_sig(d["sig"], "revocation sig"),
        )


@attrs.frozen
class SecretRecord:
    """A function's secrets sealed to one host (RFC 9.12): the owner's signed SECRET as trackers keep and
    federate it. Only the sealed bytes: no tracker can open them. The signature is checked against the
    key the record names; a tracker takes one from an owner only when that key is the function's owner,
    and a host checks it against the owner it holds."""

    fid: str
    host: bytes  # the node id of the host it is sealed to
    owner: bytes  # the owner's raw Ed25519 public key
    seq: int
    sealed: bytes
    sig: bytes = b""

    @property
    def ident(self) -> str:
        return f"{self.fid}.{self.host.hex()}"

    def to_dict(self) -> dict:
        return {"fid": self.fid, "host": self.host.hex(), "owner": self.owner.hex(), "seq": u64_text(self.seq),
                "sealed": self.sealed.hex(), "sig": self.sig.hex()}

    def verify(self) -> None:
        from orb.protocol import secrets as secretsmod

        if not secretsmod.verify(self.owner, self.sig, fidmod.from_text(self.fid), self.host, self.seq,
                                 self.sealed):
            raise BadSignature("secret: not the owner's signature of these sealed bytes")

    def order(self) -> tuple:
        return (self.seq, _order_tail(self))

    @classmethod
    def from_dict(cls, d: Any) -> "SecretRecord":
        from orb.protocol.limits import MAX_SEALED_BYTES

        d = _fields(d, {"fid", "host", "owner", "seq", "sealed", "sig"}, "secret")
        sealed = d["sealed"]
        if not isinstance(sealed, str) or not 98 <= len(sealed) <= 2 * MAX_SEALED_BYTES or len(sealed) % 2:
            raise RegistryChangeError(f"secret sealed: expected 49..{MAX_SEALED_BYTES} bytes in hex")
        try:
            raw = bytes.fromhex(sealed)
        except ValueError:
            raise RegistryChangeError("secret sealed: not hex") from None
        if raw.hex() != sealed:
            raise RegistryChangeError("secret sealed: write lowercase hex")
        return cls(
            fid=check_fid_text(d["fid"], "secret fid"),
            host=check_hex_id(d["host"], "secret host"),
            owner=_check_key(d["owner"], "secret owner"),
            seq=check_u64_text(d["seq"], 1, MAX_STAMP, "secret seq"),
            sealed=raw,
            sig=_check_sig(d["sig"], "secret sig"),
        )


def _secret_ident(text: Any) -> str:
    if not isinstance(text, str):
        raise RegistryChangeError("secret id: expected <fid>.<host node id>")
    fid, dot, host = text.rpartition(".")
    check_fid_text(fid, "secret id fid")
    check_hex_id(host, "secret id host")
    return text


def _statement_fields(d: Any, extra: set[str], what: str) -> dict:
    """The members NAME and DEPRECATE records share, parsed (RFC 9.10); ``extra``: the other members
    the record must have (checked by the caller)."""
    d = _fields(d, {"owner_key", "seq", "fid", "deprecated", "successor", "sunset", "signature"} | extra, what)
    fid = check_fid_text(d["fid"], f"{what} fid")
    successor = d["successor"]
    if successor != "":
        check_fid_text(successor, f"{what} successor")
    if successor == fid:
        raise RegistryChangeError(f"{what}: a fid cannot succeed itself")
    if type(d["deprecated"]) is not bool:
        raise RegistryChangeError(f"{what} deprecated: expected true or false")
    sunset = check_int(d["sunset"], 0, MAX_TIME, f"{what} sunset")
    if not d["deprecated"] and (successor or sunset):
        raise RegistryChangeError(f"{what}: successor and sunset need deprecated")
    return {
        "owner_key": _check_key(d["owner_key"], f"{what} owner_key"),
        "seq": check_u64_text(d["seq"], 1, MAX_STAMP, f"{what} seq"),
        "fid": fid,
        "deprecated": d["deprecated"],
        "successor": successor,
        "sunset": sunset,
        "signature": _check_sig(d["signature"], f"{what} signature"),
    }


class _OwnerStatement:
    """What NameRecord and DeprecationRecord share: the owner's binary statement (NAME or DEPRECATE)
    carried as JSON, verified by rebuilding the binary form."""

    def to_dict(self) -> dict:
        d = {f: getattr(self, f) for f in self._FIELDS}
        d.update(owner_key=self.owner_key.hex(), seq=u64_text(self.seq), signature=self.signature.hex())
        return d

    def _wire_fields(self) -> dict:
        d = {f: getattr(self, f) for f in self._FIELDS}
        d.update(fid=fidmod.from_text(self.fid), deprecated=int(self.deprecated),
                 successor=fidmod.from_text(self.successor) if self.successor else b"")
        return d

    def verify(self) -> None:
        from orb.protocol.names import verify_signature

        if not verify_signature(self.to_message()):
            raise BadSignature(f"{self._WHAT}: not the owner's signature")

    def order(self) -> tuple:
        return (self.seq, _order_tail(self))

    @property
    def time(self) -> int:
        return 0  # these kinds never expire


@attrs.frozen
class NameRecord(_OwnerStatement):
    """A NAME (RFC 5.24) as a registry record of kind ``name``: ``<name>.<owner label>`` -> ``fid``."""

    _FIELDS = ("owner_key", "name", "seq", "fid", "deprecated", "successor", "sunset", "signature")
    _WHAT = "name"

    owner_key: bytes
    name: str
    seq: int
    fid: str
    deprecated: bool
    successor: str  # fid text, or ""
    sunset: int
    signature: bytes

    @property
    def ident(self) -> str:
        from orb.protocol.names import owner_label

        return f"{self.name}.{owner_label(self.owner_key)}"

    def to_message(self):
        from orb.protocol import messages as m

        return m.Name(**self._wire_fields())

    @classmethod
    def from_message(cls, msg) -> "NameRecord":
        return cls(owner_key=msg.owner_key, name=msg.name, seq=msg.seq, fid=fidmod.to_text(msg.fid),
                   deprecated=bool(msg.deprecated), successor=fidmod.to_text(msg.successor) if msg.successor else "",
                   sunset=msg.sunset, signature=msg.signature)

    @classmethod
    def from_dict(cls, d: Any) -> "NameRecord":
        from orb.protocol.names import check_name

        fields = _statement_fields(d, {"name"}, "name")
        name = d["name"]
        try:
            check_name(name)
        except ValueError:
            raise RegistryChangeError("name: not a valid name label") from None
        return cls(name=name, **fields)


@attrs.frozen
class DeprecationRecord(_OwnerStatement):
    """A DEPRECATE (RFC 5.29) as a registry record of kind ``deprecation``, keyed by the fid and the
    signer's owner label: a record signed by another key than the function's owner takes no place
    of the owner's, whatever its seq, and means nothing."""

    _FIELDS = ("owner_key", "fid", "seq", "deprecated", "successor", "sunset", "signature")
    _WHAT = "deprecation"

    owner_key: bytes
    fid: str
    seq: int
    deprecated: bool
    successor: str  # fid text, or ""
    sunset: int
    signature: bytes

    @property
    def ident(self) -> str:
        from orb.protocol.names import owner_label

        return f"{self.fid}.{owner_label(self.owner_key)}"

    def to_message(self):
        from orb.protocol import messages as m

        return m.Deprecate(**self._wire_fields())

    @classmethod
    def from_message(cls, msg) -> "DeprecationRecord":
        return cls(owner_key=msg.owner_key, fid=fidmod.to_text(msg.fid), seq=msg.seq, deprecated=bool(msg.deprecated),
                   successor=fidmod.to_text(msg.successor) if msg.successor else "", sunset=msg.sunset,
                   signature=msg.signature)

    @classmethod
    def from_dict(cls, d: Any) -> "DeprecationRecord":
        return cls(**_statement_fields(d, set(), "deprecation"))


def _name_ident(text: Any) -> str:
    from orb.protocol.names import check_name, is_owner_label

    if not isinstance(text, str):
        raise RegistryChangeError("name key: malformed")
    name, _, label = text.rpartition(".")
    try:
        check_name(name)
    except ValueError:
        raise RegistryChangeError("name key: not <name>.<owner label>") from None
    if not is_owner_label(label):
        raise RegistryChangeError("name key: not <name>.<owner label>")
    return text


def _dep_ident(text: Any) -> str:
    from orb.protocol.names import is_owner_label

    if not isinstance(text, str):
        raise RegistryChangeError("deprecation key: malformed")
    fid, _, label = text.rpartition(".")
    check_fid_text(fid, "deprecation key fid")
    if not is_owner_label(label):
        raise RegistryChangeError("deprecation key: not <fid>.<owner label>")
    return text


def _hex_ident(text: Any) -> str:
    check_hex_id(text, "entry id")
    return text


# -- the kinds table -----------------------------------------------------------


@attrs.frozen
class KindSpec:
    """One kind of registry record.

    ``record_type`` has ``to_dict()``, ``from_dict(d)`` (raising
    ``RegistryChangeError``), ``verify()`` (raising ``BadSignature``),
    ``order()`` (a tuple: of two records for one key, the greater wins) and
    an ``ident`` property (its key's id text).  A change of this kind is
    named ``name``; its entity keys are ``<prefix>:<ident>``.  A kind that
    ``expires`` has a ``time`` on its records: a record older than the
    registry's TTL for the kind is stale (kept, not served) and is purged
    once older than ``PURGE_AFTER_S``.
    """

    name: str
    prefix: str
    record_type: type
    parse_ident: Callable[[Any], str]
    max_records: int
    expires: bool = False

    def key(self, ident: str) -> str:
        return f"{self.prefix}:{ident}"

    def parse_record(self, d: Any) -> Any:
        return self.record_type.from_dict(d)

    def validate(self, record: Any) -> Any:
        """A locally built record put through the rules remote input meets
        (signature included)."""
        if type(record) is not self.record_type:
            raise TypeError(f"expected a {self.record_type.__name__}")
        parsed = self.parse_record(record.to_dict())
        parsed.verify()
        return parsed


class Kinds:
    """The table of record kinds, looked up by name (= change kind), key
    prefix or record class."""

    def __init__(self, specs: Iterable[KindSpec]) -> None:
        self.specs = tuple(specs)
        self._by_name = {s.name: s for s in self.specs}
        self._by_prefix = {s.prefix: s for s in self.specs}
        self._by_type = {s.record_type: s for s in self.specs}
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
        spec = self._by_name.get(kind) if isinstance(kind, str) else None
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


PEER = KindSpec("peer", "peer", PeerRecord, _hex_ident, MAX_PEERS, expires=True)
FUNCTION = KindSpec("function", "fn", FunctionRecord, check_fid_text, MAX_FUNCTIONS)
TRACKER = KindSpec("tracker", "tracker", TrackerRecord, _hex_ident, MAX_TRACKERS, expires=True)
PLACEMENT = KindSpec("placement", "rep", Placement, check_fid_text, MAX_FUNCTIONS)
REVOCATION = KindSpec("revocation", "rev", Revocation, _revocation_ident, MAX_REVOCATIONS)
SECRET = KindSpec("secret", "sec", SecretRecord, _secret_ident, MAX_SECRET_RECORDS)
NAME = KindSpec("name", "name", NameRecord, _name_ident, MAX_NAMES)
DEPRECATION = KindSpec("deprecation", "dep", DeprecationRecord, _dep_ident, MAX_DEPRECATIONS)
KINDS = Kinds([PEER, FUNCTION, TRACKER, PLACEMENT, NAME, DEPRECATION, REVOCATION, SECRET])


# -- changes and anti-entropy messages ----------------------------------------


@attrs.frozen
class Change:
    """One replicated write: ``record`` (of kind ``spec``) as the tracker
    ``origin`` first took it in, as that origin's ``seq``-th change.  The
    record carries its own proof; ``origin`` and ``seq`` only make delivery
    exact."""

    origin: bytes
    seq: int
    spec: KindSpec
    record: Any
    # ``to_bytes()`` when the maker already has it (the core caches it).
    encoded: bytes | None = attrs.field(default=None, eq=False, repr=False, kw_only=True)

    @property
    def kind(self) -> str:
        return self.spec.name

    @property
    def ident(self) -> str:
        return self.record.ident

    @property
    def key(self) -> str:
        return self.spec.key(self.ident)

    def to_dict(self) -> dict:
        return {"origin": self.origin.hex(), "seq": u64_text(self.seq), "kind": self.kind, "body": self.record.to_dict()}

    @classmethod
    def from_dict(cls, d: Any, kinds: Kinds = KINDS) -> "Change":
        d = _fields(d, {"origin", "seq", "kind", "body"}, "change")
        spec = kinds.of_change(d["kind"])
        origin = check_hex_id(d["origin"], "change origin")
        seq = check_u64_text(d["seq"], 1, MAX_STAMP, "change seq")
        return cls(origin, seq, spec, spec.parse_record(d["body"]))

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
    hash of its entries (``state_hash``)."""

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
    """One entry of the map: an entity key and its current record."""

    key: str
    record: Any
    # ``entry_bytes(self)`` when the maker already has it (the core caches it).
    encoded: bytes | None = attrs.field(default=None, eq=False, repr=False, kw_only=True)

    def to_list(self) -> list:
        return [self.key, self.record.to_dict()]

    @classmethod
    def from_list(cls, v: Any, kinds: Kinds = KINDS) -> "SnapshotEntry":
        if not isinstance(v, list) or len(v) != 2:
            raise RegistryChangeError("snapshot entry: expected [key, record]")
        spec, ident = kinds.of_key(v[0])
        record = spec.parse_record(v[1])
        if record.ident != ident:
            raise RegistryChangeError("entry key does not match its record")
        return cls(v[0], record)


@attrs.frozen
class Snapshot:
    """Entries of the map.  A large snapshot is sent in parts; only the last
    part carries ``known`` (applying entries alone is always safe)."""

    entries: tuple[SnapshotEntry, ...]
    known: Mapping[bytes, int] = attrs.field(factory=dict)

    def to_bytes(self) -> bytes:
        # JCS of this object, assembled from the entries' own JCS bytes (an
        # array's JCS is its elements' JCS joined by commas, and the member
        # names "entries" < "known" are already in JCS order).
        return b"".join(
            (
                b'{"entries":[',
                b",".join(entry_bytes(e) for e in self.entries),
                b'],"known":',
                canonical_json(known_to_dict(self.known)),
                b"}",
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes, kinds: Kinds = KINDS) -> "Snapshot":
        d = _fields(parse_json(data, MAX_PAYLOAD_BYTES, "snapshot"), {"entries", "known"}, "snapshot")
        if not isinstance(d["entries"], list):
            raise RegistryChangeError("snapshot entries: expected a list")
        return cls(
            entries=tuple(SnapshotEntry.from_list(e, kinds) for e in d["entries"]),
            known=known_from_dict(d["known"]),
        )


def entry_bytes(entry: SnapshotEntry) -> bytes:
    """One entry's JCS bytes: its element of a snapshot's ``entries`` and,
    for a live entry, its line of the state hash.  Worth caching."""
    if entry.encoded is not None:
        return entry.encoded
    return canonical_json(entry.to_list())


def state_hash(entries: Iterable[SnapshotEntry]) -> bytes:
    """The digest's ``hash``: SHA-256 over the entries in key order, each
    contributing ``JCS([key, record]) || "\\n"``.  ``hash_lines`` is the
    same over entry bytes already encoded."""
    return hash_lines((e.key, entry_bytes(e)) for e in entries)


def hash_lines(keyed_lines: Iterable[tuple[str, bytes]]) -> bytes:
    """``state_hash`` from ``(key, entry_bytes(entry))`` of the entries."""
    h = hashlib.sha256()
    for _, line in sorted(keyed_lines, key=lambda kl: kl[0]):
        h.update(line)
        h.update(b"\n")
    return h.digest()


def make_peer_statement(
    key: Any,
    seq: int,
    time: int,
    home: bytes,
    addresses: Iterable[tuple[str, int]] = (),
    load_permille: int = 0,
    functions: Mapping[str, int] | None = None,
    roles: int = 0,
) -> PeerStatement:
    """A peer statement signed with ``key`` (anything with ``node_id``,
    ``public_bytes`` and ``sign``): what a peer's ANNOUNCE carries."""
    return PeerStatement(
        node_id=key.node_id,
        key=key.public_bytes,
        seq=seq,
        time=time,
        home=home,
        addresses=canonical_addresses(addresses, "peer addresses"),
        load_permille=load_permille,
        functions=dict(functions or {}),
        roles=roles,
    ).signed(key.sign)


@functools.lru_cache(maxsize=1024)
def _parsed_manifest(manifest: bytes) -> dict:
    return json.loads(manifest)
