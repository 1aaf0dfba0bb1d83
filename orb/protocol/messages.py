# -*- test-case-name: tests.test_codec -*-
"""
The v1 message catalogue: one attrs class per message, one construct
declaration per body, compiled at import.

Every body is the message's fields followed by the TLV extension area,
which runs to the end of the body (see docs/rfc-orb.md, "Extensions").
The declarations here are the single source of truth: the RFC's layout
tables are checked against them by tests/test_rfc.py.

The compiled parser does not detect a short read of a fixed-size
``Bytes`` field at the end of the input, so every fixed-size field is
also checked by the message class's validators; a decoder therefore
raises only DecodeError, whatever it is fed.
"""

import builtins
import enum
import socket
import struct

import attrs
from construct import (
    GreedyBytes,
    Int8ub,
    Int16ub,
    Int32ub,
    Int64ub,
    PrefixedArray,
    Struct,
)

from orb.protocol import addresses
from orb.protocol._wiretypes import Bool8, FixedBytes, PrefixedBytes, PrefixedText
from orb.protocol.codes import TLV_CRITICAL, ErrorCode, ResultStatus, TlvType
from orb.protocol.errors import DecodeError, UnsupportedMessage
from orb.protocol.limits import (  # noqa: F401  (re-exported: callers use m.MAX_...)
    DIGEST_BYTES,
    MAX_ADDR_ENTRIES,
    MAX_ANNOUNCE_ENTRIES,
    MAX_ERROR_TEXT_BYTES,
    MAX_FID_BYTES,
    MAX_LISTEN_ADDRESSES,
    MAX_LOAD_PERMILLE,
    MAX_LOG_ENTRIES,
    MAX_LOG_ENTRY_BYTES,
    MAX_NAME_BYTES,
    MAX_REGISTRY_JSON_BYTES,
    MAX_SEALED_BYTES,
    MAX_USER_AGENT_BYTES,
    MAX_VERSIONS,
    NODE_ID_BYTES,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
)

# The key of a field's limit in attrs metadata: the text of the "Limit"
# column of the RFC layout tables, next to the validator that enforces it.
LIMIT = "orb_limit"


class MessageType(enum.IntEnum):
    HELLO = 0x01
    HELLO_ACK = 0x02
    PING = 0x03
    PONG = 0x04
    GETADDR = 0x05
    ADDR = 0x06
    ERROR = 0x07
    ANNOUNCE = 0x10
    LOOKUP = 0x11
    PEERS = 0x12
    DEPLOY = 0x20
    DEPLOY_ACK = 0x21
    OFFER = 0x22
    FETCH = 0x23
    PACKAGE = 0x24
    CHALLENGE = 0x25
    PROOF = 0x26
    INVOKE = 0x30
    RESULT = 0x31
    CANCEL = 0x32
    LOGS = 0x33
    LOG_LINES = 0x34
    NAME = 0x40
    DEPRECATE = 0x41
    REVOKE = 0x42
    SECRET = 0x43
    SEAL = 0x44
    STATEMENT_ACK = 0x45
    RELAY = 0x50
    SYNC = 0x60
    DELTA = 0x61
    VOUCHER_ASK = 0x70
    VOUCHERS = 0x71


# --- wire types, named so the RFC tables can refer to them -----------------

NodeId = FixedBytes(NODE_ID_BYTES)
PublicKey = FixedBytes(PUBLIC_KEY_BYTES)
Signature = FixedBytes(SIGNATURE_BYTES)
Digest = FixedBytes(DIGEST_BYTES)
IpAddress = FixedBytes(16)  # IPv6, or IPv4-mapped IPv6 (::ffff:a.b.c.d)
FidBytes = PrefixedBytes(1)
ShortText = PrefixedText(1)
LongText = PrefixedText(2)
ShortBytes = PrefixedBytes(2)
LongBytes = PrefixedBytes(4)

EndpointStruct = Struct("ip" / IpAddress, "port" / Int16ub)
AddrEntryStruct = Struct(
    "timestamp" / Int64ub,
    "ip" / IpAddress,
    "port" / Int16ub,
    "roles" / Int8ub,
    "node_id" / NodeId,
)
FunctionEntryStruct = Struct("fid" / FidBytes, "version" / Int32ub)
ReplicaStruct = Struct(
    "node_id" / NodeId,
    "ip" / IpAddress,
    "port" / Int16ub,
    "roles" / Int8ub,
    "reachability" / Int8ub,
    "rtt_ms" / Int32ub,
    "load_permille" / Int16ub,
)
SourceStruct = Struct("node_id" / NodeId, "ip" / IpAddress, "port" / Int16ub)
ADDRESS_BYTES = 20  # an Ethereum address
ETH_SIGNATURE_BYTES = 65  # r || s || v, v in {27, 28} (RFC 10.10)
MAX_VOUCHERS = 64  # vouchers in one VOUCHERS answer
VoucherEntryStruct = Struct(
    "fid32" / FixedBytes(32),
    "requests" / Int64ub,
    "bytes" / Int64ub,
    "epochs" / Int64ub,
    "expiry" / Int64ub,
    "signature" / FixedBytes(ETH_SIGNATURE_BYTES),
)
LogEntryStruct = Struct(
    "node_id" / NodeId,
    "time_us" / Int64ub,
    "status" / Int8ub,
    "exec_us" / Int32ub,
    "trace_id" / PrefixedBytes(1),
    "log" / ShortBytes,
)

_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"


def ip_to_wire(host):
    """'127.0.0.1' or '::1' -> 16 bytes (IPv4 as IPv4-mapped IPv6)."""
    try:
        return _V4_MAPPED + socket.inet_pton(socket.AF_INET, host)
    except OSError:
        return socket.inet_pton(socket.AF_INET6, host)


def ip_from_wire(raw):
    if raw[:12] == _V4_MAPPED:
        return socket.inet_ntop(socket.AF_INET, raw[12:])
    return socket.inet_ntop(socket.AF_INET6, raw)


# --- validators -------------------------------------------------------------


def _exact_bytes(size):
    def check(instance, attribute, value):
        if not isinstance(value, bytes) or len(value) != size:
            raise ValueError(f"{attribute.name} must be {size} bytes")

    return check


def _max_bytes(limit, minimum=0):
    def check(instance, attribute, value):
        if not isinstance(value, bytes) or not minimum <= len(value) <= limit:
            raise ValueError(f"{attribute.name} must be {minimum}..{limit} bytes")

    return check


def _max_text(limit):
    def check(instance, attribute, value):
        if not isinstance(value, str) or len(value.encode("utf-8")) > limit:
            raise ValueError(f"{attribute.name} must be text of at most {limit} bytes")

    return check


def _uint(bits):
    top = (1 << bits) - 1

    def check(instance, attribute, value):
        if not isinstance(value, int) or not 0 <= value <= top:
            raise ValueError(f"{attribute.name} must be an unsigned {bits}-bit integer")

    return check


def _max_items(limit, minimum=0):
    def check(instance, attribute, value):
        if not minimum <= len(value) <= limit:
            raise ValueError(f"{attribute.name} has {len(value)} items, {minimum}..{limit} allowed")

    return check


def _one_of(values):
    allowed = frozenset(int(v) for v in values)

    def check(instance, attribute, value):
        if value not in allowed:
            raise ValueError(f"{attribute.name} must be one of {sorted(allowed)}")

    return check


def _clamp(top):
    """Read a larger value as ``top`` (the RFC's "clamp"): both on decode and on encode."""

    def convert(value):
        return min(value, top) if isinstance(value, int) and not isinstance(value, bool) else value

    return convert


def _port(instance, attribute, value):
    if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise ValueError(f"{attribute.name} must be a port number")


def _host(instance, attribute, value):
    try:
        addresses.check_ip(value)
    except addresses.AddressError:
        raise ValueError(f"{attribute.name} must be an IPv4 or IPv6 address") from None


_fid = _max_bytes(MAX_FID_BYTES, minimum=1)
_node_id = _exact_bytes(NODE_ID_BYTES)
_u8, _u16, _u32, _u64 = _uint(8), _uint(16), _uint(32), _uint(64)


def fid_field():
    return attrs.field(validator=_fid, metadata={LIMIT: f"1..{MAX_FID_BYTES} bytes"})


def records_field(limit, minimum=0, unit="records"):
    text = f"at most {limit} {unit}" if not minimum else f"{minimum}..{limit} {unit}"
    return attrs.field(converter=tuple, validator=_max_items(limit, minimum), metadata={LIMIT: text})


def text_field(limit):
    return attrs.field(validator=_max_text(limit), metadata={LIMIT: f"at most {limit} bytes"})


def load_field():
    return attrs.field(
        converter=_clamp(MAX_LOAD_PERMILLE),
        validator=_u16,
        metadata={LIMIT: f"0..{MAX_LOAD_PERMILLE}; larger: clamp to {MAX_LOAD_PERMILLE}"},
    )


def bits_field(bits):
    return attrs.field(validator=_uint(bits), metadata={LIMIT: "unknown bits: ignore"})


def registry_json_field():
    return attrs.field(
        validator=_max_bytes(MAX_REGISTRY_JSON_BYTES), metadata={LIMIT: f"at most {MAX_REGISTRY_JSON_BYTES} bytes"}
    )


def _known_or(enum_cls, fallback):
    """The enum member for ``value``, or ``fallback`` for a value this node does not know."""

    def read(value):
        try:
            return enum_cls(value)
        except ValueError:
            return fallback

    return read


# --- nested records ---------------------------------------------------------


@attrs.frozen
class Endpoint:
    host: str = attrs.field(validator=_host)
    port: int = attrs.field(validator=_port)

    def to_wire(self):
        return {"ip": ip_to_wire(self.host), "port": self.port}

    @classmethod
    def from_wire(cls, c):
        return cls(ip_from_wire(c["ip"]), c["port"])


@attrs.frozen
class AddrEntry:
    timestamp: int = attrs.field(validator=_u64)
    host: str = attrs.field(validator=_host)
    port: int = attrs.field(validator=_port)
    roles: int = bits_field(8)
    node_id: bytes = attrs.field(validator=_node_id)

    def to_wire(self):
        return {
            "timestamp": self.timestamp,
            "ip": ip_to_wire(self.host),
            "port": self.port,
            "roles": self.roles,
            "node_id": self.node_id,
        }

    @classmethod
    def from_wire(cls, c):
        return cls(c["timestamp"], ip_from_wire(c["ip"]), c["port"], c["roles"], c["node_id"])


@attrs.frozen
class FunctionEntry:
    fid: bytes = fid_field()
    version: int = attrs.field(validator=_u32)

    def to_wire(self):
        return {"fid": self.fid, "version": self.version}

    @classmethod
    def from_wire(cls, c):
        return cls(c["fid"], c["version"])


class Reachability(enum.IntEnum):
    UNKNOWN = 0
    DIRECT = 1  # the tracker dialled the peer back
    RELAYED = 2  # behind NAT: reach it through RELAY


@attrs.frozen
class Replica:
    node_id: bytes = attrs.field(validator=_node_id)
    host: str = attrs.field(validator=_host)
    port: int = attrs.field(validator=_port)
    roles: int = bits_field(8)
    reachability: int = attrs.field(validator=_u8, metadata={LIMIT: "0..2; other values: read as 0"})
    rtt_ms: int = attrs.field(validator=_u32)
    load_permille: int = load_field()

    @property
    def reachability_kind(self):
        """``reachability`` as a Reachability; a value this node does not know reads as UNKNOWN."""
        return _known_or(Reachability, Reachability.UNKNOWN)(self.reachability)

    def to_wire(self):
        return {
            "node_id": self.node_id,
            "ip": ip_to_wire(self.host),
            "port": self.port,
            "roles": self.roles,
            "reachability": self.reachability,
            "rtt_ms": self.rtt_ms,
            "load_permille": self.load_permille,
        }

    @classmethod
    def from_wire(cls, c):
        return cls(
            c["node_id"],
            ip_from_wire(c["ip"]),
            c["port"],
            c["roles"],
            c["reachability"],
            c["rtt_ms"],
            c["load_permille"],
        )


@attrs.frozen
class Source:
    node_id: bytes = attrs.field(validator=_node_id)
    host: str = attrs.field(validator=_host)
    port: int = attrs.field(validator=_port)

    def to_wire(self):
        return {"node_id": self.node_id, "ip": ip_to_wire(self.host), "port": self.port}

    @classmethod
    def from_wire(cls, c):
        return cls(c["node_id"], ip_from_wire(c["ip"]), c["port"])


@attrs.frozen
class Tlv:
    type: int = attrs.field(validator=_u16)
    value: bytes = attrs.field(validator=_max_bytes(0xFFFF))

    @property
    def critical(self):
        return bool(self.type & TLV_CRITICAL)


_TLV_HEADER = struct.Struct(">HH")
KNOWN_TLV_TYPES = frozenset(int(t) for t in TlvType)


def encode_tlvs(tlvs):
    return b"".join(_TLV_HEADER.pack(t.type, len(t.value)) + t.value for t in tlvs)


def decode_tlvs(data):
    """Strictly decode an extension area: a partial record is malformed."""
    tlvs = []
    offset, end = 0, len(data)
    while offset < end:
        if end - offset < _TLV_HEADER.size:
            raise DecodeError("truncated TLV header in extension area")
        tlv_type, length = _TLV_HEADER.unpack_from(data, offset)
        offset += _TLV_HEADER.size
        if end - offset < length:
            raise DecodeError(f"TLV 0x{tlv_type:04x} announces {length} bytes, {end - offset} left")
        tlvs.append(Tlv(tlv_type, bytes(data[offset : offset + length])))
        offset += length
    return tuple(tlvs)


# --- messages ---------------------------------------------------------------

MESSAGES = {}  # MessageType -> class


def _tuple_of(item_cls, limit):
    return attrs.field(converter=tuple, validator=_max_items(limit))


def _ext():
    return attrs.field(default=(), converter=tuple, kw_only=True)


class Message:
    """
    Base of every message class.

    Subclasses set TYPE, FIELDS (the construct subcons, in order) and
    optionally NESTED = {field: record class} for lists of records and
    ENDPOINTS = {field names holding a single Endpoint}.
    """

    TYPE: MessageType
    NESTED: dict = {}
    SINGLE: dict = {}

    def to_wire(self):
        out = {}
        for name in self._names:
            value = getattr(self, name)
            if name in self.NESTED:
                value = [item.to_wire() for item in value]
            elif name in self.SINGLE:
                value = value.to_wire()
            out[name] = value
        out["ext"] = encode_tlvs(self.ext)
        return out

    @classmethod
    def from_wire(cls, c):
        kwargs = {}
        for name in cls._names:
            value = c[name]
            if name in cls.NESTED:
                record = cls.NESTED[name]
                value = tuple(record.from_wire(item) for item in value)
            elif name in cls.SINGLE:
                value = cls.SINGLE[name].from_wire(value)
            kwargs[name] = value
        return cls(**kwargs, ext=decode_tlvs(c["ext"]))

    def encode_body(self):
        return self.COMPILED.build(self.to_wire())


def message(type_, *subcons, nested=None, single=None):
    """Declare a message: its type code, its body fields and nested records."""

    def register(cls):
        cls = attrs.frozen(cls)
        cls.TYPE = MessageType(type_)
        cls.NESTED = nested or {}
        cls.SINGLE = single or {}
        cls.BODY = Struct(*subcons, "ext" / GreedyBytes)
        cls.COMPILED = cls.BODY.compile()
        cls._names = tuple(sc.name for sc in subcons)
        assert cls._names == tuple(a.name for a in attrs.fields(cls) if a.name != "ext"), cls
        MESSAGES[cls.TYPE] = cls
        return cls

    return register


@message(
    MessageType.HELLO,
    "node_id" / NodeId,
    "public_key" / PublicKey,
    "roles" / Int8ub,
    "features" / Int64ub,
    "timestamp" / Int64ub,
    "nonce" / Int64ub,
    "observed" / EndpointStruct,
    "versions" / PrefixedArray(Int8ub, Int8ub),
    "listen" / PrefixedArray(Int8ub, EndpointStruct),
    "user_agent" / ShortText,
    nested={"listen": Endpoint},
    single={"observed": Endpoint},
)
class Hello(Message):
    """Opens a session: who I am, what I speak, and where I see you."""

    node_id: bytes = attrs.field(validator=_node_id)
    public_key: bytes = attrs.field(validator=_exact_bytes(PUBLIC_KEY_BYTES))
    roles: int = bits_field(8)
    features: int = bits_field(64)
    timestamp: int = attrs.field(validator=_u64)
    nonce: int = attrs.field(validator=_u64)
    observed: Endpoint
    versions: tuple = records_field(MAX_VERSIONS, minimum=1, unit="items")
    listen: tuple = records_field(MAX_LISTEN_ADDRESSES)
    user_agent: str = text_field(MAX_USER_AGENT_BYTES)
    ext: tuple = _ext()


@message(
    MessageType.HELLO_ACK,
    "version" / Int8ub,
    "node_id" / NodeId,
    "public_key" / PublicKey,
    "roles" / Int8ub,
    "features" / Int64ub,
    "timestamp" / Int64ub,
    "nonce" / Int64ub,
    "observed" / EndpointStruct,
    "listen" / PrefixedArray(Int8ub, EndpointStruct),
    "user_agent" / ShortText,
    nested={"listen": Endpoint},
    single={"observed": Endpoint},
)
class HelloAck(Message):
    """Accepts a session at the chosen version."""

    version: int = attrs.field(validator=_u8)
    node_id: bytes = attrs.field(validator=_node_id)
    public_key: bytes = attrs.field(validator=_exact_bytes(PUBLIC_KEY_BYTES))
    roles: int = bits_field(8)
    features: int = bits_field(64)
    timestamp: int = attrs.field(validator=_u64)
    nonce: int = attrs.field(validator=_u64)
    observed: Endpoint
    listen: tuple = records_field(MAX_LISTEN_ADDRESSES)
    user_agent: str = text_field(MAX_USER_AGENT_BYTES)
    ext: tuple = _ext()


@message(MessageType.PING, "nonce" / Int64ub)
class Ping(Message):
    nonce: int = attrs.field(validator=_u64)
    ext: tuple = _ext()


@message(MessageType.PONG, "nonce" / Int64ub)
class Pong(Message):
    nonce: int = attrs.field(validator=_u64)
    ext: tuple = _ext()


@message(MessageType.GETADDR)
class GetAddr(Message):
    ext: tuple = _ext()


@message(MessageType.ADDR, "entries" / PrefixedArray(Int16ub, AddrEntryStruct), nested={"entries": AddrEntry})
class Addr(Message):
    entries: tuple = records_field(MAX_ADDR_ENTRIES)
    ext: tuple = _ext()


@message(MessageType.ERROR, "code" / Int16ub, "ref_request_id" / Int32ub, "text" / LongText)
class Error(Message):
    code: int = attrs.field(validator=_u16, metadata={LIMIT: "unknown codes: read as unspecified"})
    ref_request_id: int = attrs.field(validator=_u32)
    text: str = text_field(MAX_ERROR_TEXT_BYTES)
    ext: tuple = _ext()

    @property
    def code_kind(self):
        """``code`` as an ErrorCode; a code this node does not know reads as UNSPECIFIED."""
        return _known_or(ErrorCode, ErrorCode.UNSPECIFIED)(self.code)


def _strict_load(instance, attribute, value):
    if not isinstance(value, int) or not 0 <= value <= MAX_LOAD_PERMILLE:
        raise ValueError(f"{attribute.name} must be 0..{MAX_LOAD_PERMILLE}")


def _statement_seq(instance, attribute, value):
    if not isinstance(value, int) or not 1 <= value <= (1 << 63) - 1:
        raise ValueError(f"{attribute.name} must be 1..2^63-1")


@message(
    MessageType.ANNOUNCE,
    "seq" / Int64ub,
    "time" / Int64ub,
    "load_permille" / Int16ub,
    "roles" / Int8ub,
    "listen" / PrefixedArray(Int8ub, EndpointStruct),
    "functions" / PrefixedArray(Int16ub, FunctionEntryStruct),
    "signature" / Signature,
    nested={"listen": Endpoint, "functions": FunctionEntry},
)
class Announce(Message):
    """A peer's signed statement of itself, to its home tracker (RFC 8.6.1)."""

    seq: int = attrs.field(validator=_statement_seq, metadata={LIMIT: "1..2^63-1"})
    time: int = attrs.field(validator=_uint(53), metadata={LIMIT: "0..2^53-1"})
    load_permille: int = attrs.field(validator=_strict_load, metadata={LIMIT: f"0..{MAX_LOAD_PERMILLE}"})
    roles: int = bits_field(8)
    listen: tuple = records_field(MAX_LISTEN_ADDRESSES)
    functions: tuple = records_field(MAX_ANNOUNCE_ENTRIES)
    signature: bytes = attrs.field(validator=_exact_bytes(SIGNATURE_BYTES))
    ext: tuple = _ext()


@message(MessageType.LOOKUP, "fid" / FidBytes, "max_replicas" / Int8ub)
class Lookup(Message):
    fid: bytes = fid_field()
    max_replicas: int = attrs.field(validator=_u8)
    ext: tuple = _ext()


@message(
    MessageType.PEERS,
    "fid" / FidBytes,
    "replicas" / PrefixedArray(Int8ub, ReplicaStruct),
    nested={"replicas": Replica},
)
class Peers(Message):
    fid: bytes = fid_field()
    replicas: tuple = records_field(255)
    ext: tuple = _ext()


@message(
    MessageType.DEPLOY,
    "fid" / FidBytes,
    "owner_key" / PublicKey,
    "manifest" / LongBytes,
    "package_size" / Int64ub,
    "issued_at" / Int64ub,
    "signature" / Signature,
)
class Deploy(Message):
    """The owner's signed deploy statement (RFC 9.8), as a request to a tracker."""

    fid: bytes = fid_field()
    owner_key: bytes = attrs.field(validator=_exact_bytes(PUBLIC_KEY_BYTES))
    manifest: bytes = attrs.field(validator=_max_bytes(0xFFFFFFFF))
    package_size: int = attrs.field(validator=_u64)
    issued_at: int = attrs.field(validator=_u64)
    signature: bytes = attrs.field(validator=_exact_bytes(SIGNATURE_BYTES))
    ext: tuple = _ext()


@message(
    MessageType.DEPLOY_ACK,
    "fid" / FidBytes,
    "status" / Int16ub,
    "replicas" / Int8ub,
    "text" / LongText,
)
class DeployAck(Message):
    fid: bytes = fid_field()
    status: int = attrs.field(validator=_u16, metadata={LIMIT: "unknown codes: read as unspecified"})
    replicas: int = attrs.field(validator=_u8)
    text: str = text_field(MAX_ERROR_TEXT_BYTES)
    ext: tuple = _ext()


@message(
    MessageType.OFFER,
    "fid" / FidBytes,
    "package_size" / Int64ub,
    "manifest" / LongBytes,
    "sources" / PrefixedArray(Int8ub, SourceStruct),
    nested={"sources": Source},
)
class Offer(Message):
    fid: bytes = fid_field()
    package_size: int = attrs.field(validator=_u64)
    manifest: bytes = attrs.field(validator=_max_bytes(0xFFFFFFFF))
    sources: tuple = records_field(255)
    ext: tuple = _ext()


@message(MessageType.FETCH, "fid" / FidBytes, "offset" / Int64ub, "length" / Int32ub)
class Fetch(Message):
    fid: bytes = fid_field()
    offset: int = attrs.field(validator=_u64)
    length: int = attrs.field(validator=_u32)
    ext: tuple = _ext()


@message(
    MessageType.PACKAGE,
    "fid" / FidBytes,
    "offset" / Int64ub,
    "total_size" / Int64ub,
    "data" / LongBytes,
)
class Package(Message):
    fid: bytes = fid_field()
    offset: int = attrs.field(validator=_u64)
    total_size: int = attrs.field(validator=_u64)
    data: bytes = attrs.field(validator=_max_bytes(0xFFFFFFFF))
    ext: tuple = _ext()


@message(MessageType.CHALLENGE, "fid" / FidBytes, "nonce" / Digest)
class Challenge(Message):
    fid: bytes = fid_field()
    nonce: bytes = attrs.field(validator=_exact_bytes(32))
    ext: tuple = _ext()


@message(MessageType.PROOF, "fid" / FidBytes, "digest" / Digest)
class Proof(Message):
    fid: bytes = fid_field()
    digest: bytes = attrs.field(validator=_exact_bytes(32))
    ext: tuple = _ext()


@message(
    MessageType.INVOKE,
    "fid" / FidBytes,
    "deadline_ms" / Int32ub,
    "token" / ShortBytes,
    "input" / LongBytes,
)
class Invoke(Message):
    fid: bytes = fid_field()
    deadline_ms: int = attrs.field(validator=_u32)
    token: bytes = attrs.field(validator=_max_bytes(0xFFFF))
    input: bytes = attrs.field(validator=_max_bytes(0xFFFFFFFF))
    ext: tuple = _ext()


@message(
    MessageType.RESULT,
    "status" / Int8ub,
    "queue_us" / Int32ub,
    "fetch_us" / Int32ub,
    "boot_us" / Int32ub,
    "exec_us" / Int32ub,
    "output" / LongBytes,
    "log" / LongBytes,
)
class Result(Message):
    status: int = attrs.field(validator=_u8, metadata={LIMIT: "unknown values: read as internal"})
    queue_us: int = attrs.field(validator=_u32)
    fetch_us: int = attrs.field(validator=_u32)
    boot_us: int = attrs.field(validator=_u32)
    exec_us: int = attrs.field(validator=_u32)
    output: bytes = attrs.field(validator=_max_bytes(0xFFFFFFFF))
    log: bytes = attrs.field(validator=_max_bytes(0xFFFFFFFF))
    ext: tuple = _ext()

    @property
    def status_kind(self):
        """``status`` as a ResultStatus; a status this node does not know reads as INTERNAL (a failure)."""
        return _known_or(ResultStatus, ResultStatus.INTERNAL)(self.status)


@message(
    MessageType.NAME,
    "owner_key" / PublicKey,
    "name" / ShortText,
    "seq" / Int64ub,
    "fid" / FidBytes,
    "deprecated" / Bool8,
    "successor" / FidBytes,
    "sunset" / Int64ub,
    "signature" / Signature,
)
class Name(Message):
    owner_key: bytes = attrs.field(validator=_exact_bytes(PUBLIC_KEY_BYTES))
    name: str = text_field(MAX_NAME_BYTES)
    seq: int = attrs.field(validator=_u64)
    fid: bytes = fid_field()
    deprecated: int = attrs.field(validator=_uint(1))
    successor: bytes = attrs.field(validator=_max_bytes(MAX_FID_BYTES), metadata={LIMIT: f"0..{MAX_FID_BYTES} bytes"})
    sunset: int = attrs.field(validator=_u64)
    signature: bytes = attrs.field(validator=_exact_bytes(SIGNATURE_BYTES))
    ext: tuple = _ext()

    def signed_bytes(self):
        """What the owner signs: the body up to, not including, the signature."""
        body = self.COMPILED.build({**self.to_wire(), "ext": b""})
        return b"ORB-NAME-v1\x00" + body[: -Signature.sizeof()]


@message(
    MessageType.REVOKE,
    "issuer_key" / PublicKey,
    "token_id" / FixedBytes(16),
    "not_after" / Int64ub,
    "signature" / Signature,
)
class Revoke(Message):
    """A signed revocation of one capability token link (RFC 5.30, 9.11): a request answered by STATEMENT_ACK."""

    issuer_key: bytes = attrs.field(validator=_exact_bytes(PUBLIC_KEY_BYTES))
    token_id: bytes = attrs.field(validator=_exact_bytes(16))
    not_after: int = attrs.field(validator=_u64)
    signature: bytes = attrs.field(validator=_exact_bytes(SIGNATURE_BYTES))
    ext: tuple = _ext()

    def signed_bytes(self):
        """What the issuer signs: the body up to, not including, the signature."""
        return revoke_signed_bytes(self.issuer_key, self.token_id, self.not_after)


def revoke_signed_bytes(issuer_key, token_id, not_after):
    """``ORB-REVOKE-v1\\0`` || issuer_key || token_id || not_after (u64): REVOKE's and a revocation record's."""
    return b"ORB-REVOKE-v1\x00" + bytes(issuer_key) + bytes(token_id) + struct.pack(">Q", not_after)


@message(
    MessageType.DEPRECATE,
    "owner_key" / PublicKey,
    "fid" / FidBytes,
    "seq" / Int64ub,
    "deprecated" / Bool8,
    "successor" / FidBytes,
    "sunset" / Int64ub,
    "signature" / Signature,
)
class Deprecate(Message):
    """The owner's signed statement that a fid is deprecated (or no longer is), with its successor and
    sunset (RFC 5.29, 9.10): to a tracker, and from a tracker to the fid's hosts."""

    owner_key: bytes = attrs.field(validator=_exact_bytes(PUBLIC_KEY_BYTES))
    fid: bytes = fid_field()
    seq: int = attrs.field(validator=_u64)
    deprecated: int = attrs.field(validator=_uint(1))
    successor: bytes = attrs.field(validator=_max_bytes(MAX_FID_BYTES), metadata={LIMIT: f"0..{MAX_FID_BYTES} bytes"})
    sunset: int = attrs.field(validator=_u64)
    signature: bytes = attrs.field(validator=_exact_bytes(SIGNATURE_BYTES))
    ext: tuple = _ext()

    def signed_bytes(self):
        """What the owner signs: a domain tag and the body up to, not including, the signature."""
        body = self.COMPILED.build({**self.to_wire(), "ext": b""})
        return b"ORB-DEPRECATE-v1\x00" + body[: -Signature.sizeof()]


@message(MessageType.STATEMENT_ACK, "status" / Int16ub, "seq" / Int64ub, "text" / LongText)
class StatementAck(Message):
    """Answers an owner statement (NAME and the statements after it in section 5): ``status`` 0 if the
    receiver took it in, else an error code; ``seq`` the sequence number it now holds for that subject."""

    status: int = attrs.field(validator=_u16, metadata={LIMIT: "unknown codes: read as unspecified"})
    seq: int = attrs.field(validator=_u64)
    text: str = text_field(MAX_ERROR_TEXT_BYTES)
    ext: tuple = _ext()


@message(
    MessageType.SECRET,
    "owner_key" / PublicKey,
    "fid" / FidBytes,
    "host" / NodeId,
    "seq" / Int64ub,
    "sealed" / ShortBytes,
    "signature" / Signature,
)
class Secret(Message):
    """A function's secrets sealed to one host, signed by the owner (RFC 5.31, 9.12): owner to tracker,
    tracker to host; answered by STATEMENT_ACK."""

    owner_key: bytes = attrs.field(validator=_exact_bytes(PUBLIC_KEY_BYTES))
    fid: bytes = fid_field()
    host: bytes = attrs.field(validator=_node_id)
    seq: int = attrs.field(validator=_statement_seq, metadata={LIMIT: "1..2^63-1"})
    sealed: bytes = attrs.field(validator=_max_bytes(MAX_SEALED_BYTES, minimum=49),
                                metadata={LIMIT: f"49..{MAX_SEALED_BYTES} bytes"})
    signature: bytes = attrs.field(validator=_exact_bytes(SIGNATURE_BYTES))
    ext: tuple = _ext()


@message(
    MessageType.SEAL,
    "fid" / FidBytes,
    "host" / NodeId,
    "host_key" / PublicKey,
    "owner_copy" / ShortBytes,
)
class Seal(Message):
    """A tracker asks an owner's sealing node to seal a function's secrets to a host waiting for them
    (RFC 5.32, 9.12), sending the owner copy it holds; answered by STATEMENT_ACK once the node sent SECRET."""

    fid: bytes = fid_field()
    host: bytes = attrs.field(validator=_node_id)
    host_key: bytes = attrs.field(validator=_exact_bytes(PUBLIC_KEY_BYTES))
    owner_copy: bytes = attrs.field(validator=_max_bytes(MAX_SEALED_BYTES, minimum=49),
                                    metadata={LIMIT: f"49..{MAX_SEALED_BYTES} bytes"})
    ext: tuple = _ext()


@message(MessageType.CANCEL, "request_id" / Int32ub)
class Cancel(Message):
    """The sender no longer wants the answer to its INVOKE ``request_id`` (RFC 10.5)."""

    request_id: int = attrs.field(validator=_u32)
    ext: tuple = _ext()


@message(
    MessageType.LOGS,
    "fid" / FidBytes,
    "owner_key" / PublicKey,
    "since_us" / Int64ub,
    "max_entries" / Int16ub,
    "issued_at" / Int64ub,
    "nonce" / FixedBytes(16),
    "signature" / Signature,
)
class Logs(Message):
    """The owner's signed request for the logs of a function's recent calls (RFC 10.7)."""

    fid: bytes = fid_field()
    owner_key: bytes = attrs.field(validator=_exact_bytes(PUBLIC_KEY_BYTES))
    since_us: int = attrs.field(validator=_u64)
    max_entries: int = attrs.field(validator=_u16)
    issued_at: int = attrs.field(validator=_u64)
    nonce: bytes = attrs.field(validator=_exact_bytes(16))
    signature: bytes = attrs.field(validator=_exact_bytes(SIGNATURE_BYTES))
    ext: tuple = _ext()

    def signed_bytes(self):
        """What the owner signs: a domain tag and the body up to, not including, the signature."""
        body = self.COMPILED.build({**self.to_wire(), "ext": b""})
        return b"ORB-LOGS-v1\x00" + body[: -Signature.sizeof()]


@attrs.frozen
class LogEntry:
    node_id: bytes = attrs.field(validator=_node_id)
    time_us: int = attrs.field(validator=_u64)
    status: int = attrs.field(validator=_u8)
    exec_us: int = attrs.field(validator=_u32)
    trace_id: bytes = attrs.field(validator=_max_bytes(16), metadata={LIMIT: "0..16 bytes"})
    log: bytes = attrs.field(validator=_max_bytes(MAX_LOG_ENTRY_BYTES),
                             metadata={LIMIT: f"at most {MAX_LOG_ENTRY_BYTES} bytes"})

    def to_wire(self):
        return {"node_id": self.node_id, "time_us": self.time_us, "status": self.status,
                "exec_us": self.exec_us, "trace_id": self.trace_id, "log": self.log}

    @classmethod
    def from_wire(cls, c):
        return cls(c["node_id"], c["time_us"], c["status"], c["exec_us"], c["trace_id"], c["log"])


@message(
    MessageType.LOG_LINES,
    "fid" / FidBytes,
    "entries" / PrefixedArray(Int16ub, LogEntryStruct),
    "more" / Bool8,
    nested={"entries": LogEntry},
)
class LogLines(Message):
    """Answers LOGS: log entries of recent calls, oldest first."""

    fid: bytes = fid_field()
    entries: tuple = records_field(MAX_LOG_ENTRIES)
    more: int = attrs.field(validator=_uint(1))
    ext: tuple = _ext()


@message(MessageType.RELAY, "target" / NodeId, "frame" / LongBytes)
class Relay(Message):
    target: bytes = attrs.field(validator=_node_id)
    frame: bytes = attrs.field(validator=_max_bytes(0xFFFFFFFF))
    ext: tuple = _ext()


class DeltaKind(enum.IntEnum):
    CHANGES = 0  # registry changes, oldest first
    SNAPSHOT = 1  # one part of a full registry snapshot



@message(MessageType.SYNC, "digest" / LongBytes)
class Sync(Message):
    """Anti-entropy between trackers: what I have; answered by DELTA."""

    digest: bytes = registry_json_field()
    ext: tuple = _ext()


@message(MessageType.DELTA, "kind" / Int8ub, "payload" / LongBytes)
class Delta(Message):
    """Registry changes (or a snapshot part) between trackers."""

    kind: int = attrs.field(validator=_one_of(DeltaKind), metadata={LIMIT: "0 or 1"})
    payload: bytes = registry_json_field()
    ext: tuple = _ext()


@attrs.frozen
class VoucherEntry:
    """One signed cumulative voucher of a VOUCHERS answer (RFC 10.10)."""

    fid32: bytes = attrs.field(validator=_exact_bytes(32))
    requests: int = attrs.field(validator=_u64)
    bytes: int = attrs.field(validator=_u64)
    epochs: int = attrs.field(validator=_u64)
    expiry: int = attrs.field(validator=_u64)
    signature: builtins.bytes = attrs.field(validator=_exact_bytes(ETH_SIGNATURE_BYTES))  # `bytes` is a field here

    def to_wire(self):
        return {"fid32": self.fid32, "requests": self.requests, "bytes": self.bytes, "epochs": self.epochs,
                "expiry": self.expiry, "signature": self.signature}

    @classmethod
    def from_wire(cls, c):
        return cls(c["fid32"], c["requests"], c["bytes"], c["epochs"], c["expiry"], c["signature"])


def _empty_or(size):
    def check(instance, attribute, value):
        if not isinstance(value, bytes) or len(value) not in (0, size):
            raise ValueError(f"{attribute.name} must be empty or {size} bytes")

    return check


@message(
    MessageType.VOUCHER_ASK,
    "payout" / FixedBytes(ADDRESS_BYTES),
    "fid" / FidBytes,
    "after" / PrefixedBytes(1),
)
class VoucherAsk(Message):
    """A host asks a tracker for signed vouchers of the calls it served (RFC 10.10)."""

    payout: bytes = attrs.field(validator=_exact_bytes(ADDRESS_BYTES))
    fid: bytes = attrs.field(validator=_max_bytes(MAX_FID_BYTES), metadata={LIMIT: f"0..{MAX_FID_BYTES} bytes"})
    after: bytes = attrs.field(validator=_empty_or(32), metadata={LIMIT: "0 or 32 bytes"})
    ext: tuple = _ext()


@message(
    MessageType.VOUCHERS,
    "chain_id" / Int64ub,
    "contract" / FixedBytes(ADDRESS_BYTES),
    "signer" / FixedBytes(ADDRESS_BYTES),
    "vouchers" / PrefixedArray(Int8ub, VoucherEntryStruct),
    "more" / Bool8,
    nested={"vouchers": VoucherEntry},
)
class Vouchers(Message):
    """Answers VOUCHER_ASK: vouchers paying the asker's payout address, by on-chain fid order."""

    chain_id: int = attrs.field(validator=_u64)
    contract: bytes = attrs.field(validator=_exact_bytes(ADDRESS_BYTES))
    signer: bytes = attrs.field(validator=_exact_bytes(ADDRESS_BYTES))
    vouchers: tuple = records_field(MAX_VOUCHERS)
    more: int = attrs.field(validator=_uint(1))
    ext: tuple = _ext()


TRACE_ID_BYTES = 16


def caller_of(message):
    """The message's 32-byte ``caller`` TLV (RFC 11.5), or None: one of another length is ignored."""
    for tlv in message.ext:
        if tlv.type == TlvType.CALLER and len(tlv.value) == PUBLIC_KEY_BYTES:
            return tlv.value
    return None


def trace_id_of(message):
    """The message's 16-byte ``trace_id`` TLV (RFC 11.5), or b"": one of another length is ignored."""
    for tlv in message.ext:
        if tlv.type == TlvType.TRACE_ID and len(tlv.value) == TRACE_ID_BYTES:
            return tlv.value
    return b""


def decode_body(message_type, body):
    """
    Decode one body of the given type. Raises only ProtocolError:
    UnsupportedMessage for an unknown type or an unknown critical TLV,
    DecodeError for everything else.
    """
    cls = MESSAGES.get(message_type)
    if cls is None:
        raise UnsupportedMessage(f"unknown message type 0x{message_type:02x}")
    try:
        container = cls.COMPILED.parse(body)
        msg = cls.from_wire(container)
    except DecodeError:
        raise
    except Exception as e:  # construct, struct, unicode, attrs validators
        raise DecodeError(f"malformed {cls.TYPE.name} body: {type(e).__name__}: {str(e)[:120]}") from None
    for tlv in msg.ext:
        if tlv.critical and tlv.type & ~TLV_CRITICAL not in KNOWN_TLV_TYPES:
            raise UnsupportedMessage(f"unknown critical TLV 0x{tlv.type:04x} in {cls.TYPE.name}")
    return msg


def dedupe_addr_entries(entries, limit=MAX_ADDR_ENTRIES):
    """
    The entries of an ADDR answer, each (node id, address) pair once (RFC 8.3).

    The address is the IP (an IPv4 address and its IPv4-mapped IPv6 form are
    one address) and the port. Of several entries for one pair the newest
    timestamp wins and takes the place of the first; order is otherwise
    kept. At most ``limit`` entries are returned. Pure: the caller gathers
    the entries from wherever it likes (address book, registry, trackers).
    """
    best = {}
    for entry in entries:
        key = (entry.node_id, ip_to_wire(entry.host), entry.port)
        kept = best.get(key)
        if kept is None or entry.timestamp > kept.timestamp:
            best[key] = entry  # a dict keeps the first key's position
    return tuple(best.values())[:limit]
