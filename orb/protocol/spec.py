# -*- test-case-name: tests.test_rfc -*-
"""
Generates the parts of docs/rfc-orb.md that must equal the code: the
layout tables (from the construct declarations), the registries (from the
enums), the test vectors and the handshake transcript (from the codec).

    python -m orb.protocol.spec update       rewrite the generated parts of the RFC
                                             and tests/vectors/v1.json
    python -m orb.protocol.spec check        exit 1 if either is stale

tests/test_rfc.py runs ``check``'s comparison, so the RFC and the code
cannot drift apart.
"""

import json
import os
import random
import re
import sys

import attrs
from construct import FocusedSeq, FormatField, GreedyBytes, Renamed, Struct

from orb.protocol import messages as m
from orb.protocol._wiretypes import Bool8Field, FixedBytes, PrefixedBytes, PrefixedText
from orb.protocol.codes import ErrorCode, Feature, ResultStatus, Role, TlvType
from orb.protocol.frame import (
    DEFAULT_MAX_FRAME_BYTES,
    HEADER,
    Flag,
    FrameDecoder,
    encode_frame,
    network_magic,
)
from orb.protocol.session import node_id_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RFC_PATH = os.path.join(ROOT, "docs", "rfc-orb.md")
VECTORS_PATH = os.path.join(ROOT, "tests", "vectors", "v1.json")
VECTOR_NETWORK = "devnet"
RELAYED_REQUEST_ID = 17  # the inner INVOKE of the RELAY vector

RECORDS = {
    "Endpoint": m.EndpointStruct,
    "AddrEntry": m.AddrEntryStruct,
    "FunctionEntry": m.FunctionEntryStruct,
    "Replica": m.ReplicaStruct,
    "Source": m.SourceStruct,
    "LogEntry": m.LogEntryStruct,
    "VoucherEntry": m.VoucherEntryStruct,
}
RECORD_CLASSES = {
    "Endpoint": m.Endpoint,
    "AddrEntry": m.AddrEntry,
    "FunctionEntry": m.FunctionEntry,
    "Replica": m.Replica,
    "Source": m.Source,
    "LogEntry": m.LogEntry,
    "VoucherEntry": m.VoucherEntry,
}

# The meaning of every field; tests fail if a declared field has none.
FIELD_DOCS = {
    "Endpoint": {"ip": "IPv6 address, or IPv4-mapped IPv6 (::ffff:a.b.c.d)", "port": "TCP port"},
    "AddrEntry": {
        "timestamp": "when the address was last known good, Unix seconds",
        "ip": "IPv6 or IPv4-mapped address",
        "port": "ORB wire port",
        "roles": "role bits of the node",
        "node_id": "SHA-256 of the node's public key",
    },
    "FunctionEntry": {"fid": "function id (raw bytes)", "version": "the version the node hosts"},
    "Replica": {
        "node_id": "the hosting peer",
        "ip": "its wire address (or its relaying tracker's, if relayed)",
        "port": "its wire port",
        "roles": "its role bits",
        "reachability": "0 unknown, 1 direct, 2 relayed",
        "rtt_ms": "RTT the tracker measured to it, ms",
        "load_permille": "the load it last reported",
    },
    "Source": {"node_id": "a node that holds the package", "ip": "its address", "port": "its wire port"},
    "LogEntry": {
        "node_id": "the host that ran the call",
        "time_us": "when the call ended, Unix microseconds (host clock)",
        "status": "the call's result status (registry 11.6)",
        "exec_us": "time running the function, microseconds",
        "trace_id": "the call's trace_id TLV, or empty",
        "log": "the tail of the call's stderr",
    },
    "VoucherEntry": {
        "fid32": "the fid's on-chain form: its 32-byte SHA-256 digest (fid bytes 1..32)",
        "requests": "cumulative requests served",
        "bytes": "cumulative bytes transferred (input + output)",
        "epochs": "cumulative uptime epochs",
        "expiry": "Unix seconds after which the escrow refuses the voucher",
        "signature": "the signer's EIP-712 signature r || s || v (section 10.10)",
    },
    "header": {
        "magic": "network magic: SHA-256(\"orb-network:\" + network name)[0:4]",
        "version": "protocol version of this frame",
        "type": "message type (registry 11.1)",
        "flags": "bit 0 RESPONSE; other bits sent as 0, ignored on receipt",
        "request_id": "0 for notifications; else the request this frame is or answers",
        "length": "body length in bytes; checked against the limit before reading the body",
    },
    "HELLO": {
        "versions": "protocol versions the sender speaks",
        "node_id": "SHA-256(public_key)",
        "public_key": "Ed25519 public key; equals the TLS certificate's key",
        "roles": "role bits",
        "features": "feature bits the sender supports",
        "timestamp": "sender's clock, Unix seconds",
        "nonce": "random; detects connections to oneself",
        "observed": "the receiver's address as the sender sees it",
        "listen": "addresses where the sender accepts connections",
        "user_agent": "software name and version",
    },
    "HELLO_ACK": {
        "version": "the version chosen: the highest in common",
        "node_id": "SHA-256(public_key)",
        "public_key": "Ed25519 public key; equals the TLS certificate's key",
        "roles": "role bits",
        "features": "feature bits the sender supports",
        "timestamp": "sender's clock, Unix seconds",
        "nonce": "random",
        "observed": "the initiator's address as the responder sees it",
        "listen": "addresses where the sender accepts connections",
        "user_agent": "software name and version",
    },
    "PING": {"nonce": "echoed in PONG"},
    "PONG": {"nonce": "the PING's nonce"},
    "GETADDR": {},
    "ADDR": {"entries": "gossiped addresses"},
    "ERROR": {
        "code": "error code (registry 11.2)",
        "ref_request_id": "the request refused, or 0",
        "text": "human-readable reason, for logs only",
    },
    "ANNOUNCE": {
        "seq": "the statement's sequence number: above every earlier one of this peer",
        "time": "when the peer signed it, unix seconds",
        "load_permille": "the sender's current load, per mille",
        "roles": "the sender's role bits",
        "listen": "where the sender accepts connections (none: relayed)",
        "functions": "every function the sender hosts (replaces the last ANNOUNCE)",
        "signature": "the peer's Ed25519 signature of its statement (section 8.6.1)",
    },
    "LOOKUP": {"fid": "function id", "max_replicas": "how many replicas to return at most"},
    "PEERS": {"fid": "the fid looked up", "replicas": "replicas ranked best first"},
    "DEPLOY": {
        "fid": "function id of the package",
        "owner_key": "the owner's Ed25519 public key",
        "manifest": "the package's orb-manifest.json, byte for byte (section 9.7)",
        "package_size": "size of the canonical package in bytes",
        "issued_at": "when the owner signed, unix seconds",
        "signature": "the owner's signature of the deploy statement (section 9.8)",
    },
    "DEPLOY_ACK": {
        "fid": "the fid deployed or offered",
        "status": "0 accepted, else an error code",
        "replicas": "replicas placed (DEPLOY) or 1 if the peer will host (OFFER)",
        "text": "detail for humans",
    },
    "OFFER": {
        "fid": "the function the receiver is asked to host",
        "package_size": "package size in bytes",
        "manifest": "the package's orb-manifest.json (canonical JSON), for the hosting policy",
        "sources": "nodes to FETCH the package from",
    },
    "FETCH": {"fid": "the package wanted", "offset": "first byte wanted", "length": "bytes wanted"},
    "PACKAGE": {
        "fid": "the package",
        "offset": "offset of data in the package",
        "total_size": "package size in bytes",
        "data": "the chunk",
    },
    "CHALLENGE": {"fid": "the package to prove", "nonce": "32 fresh random bytes"},
    "PROOF": {"fid": "the package", "digest": "SHA-256(nonce || package)"},
    "INVOKE": {
        "fid": "the function to run",
        "deadline_ms": "time budget from receipt, ms",
        "token": "capability token (section 9.11); may be empty",
        "input": "the event bytes passed to the function",
    },
    "RESULT": {
        "status": "result status (registry 11.6)",
        "queue_us": "time queued, microseconds",
        "fetch_us": "time fetching the package, microseconds",
        "boot_us": "time starting the jail, microseconds",
        "exec_us": "time running the function, microseconds",
        "output": "the function's output",
        "log": "the function's log (stderr), capped",
    },
    "NAME": {
        "owner_key": "the owner's Ed25519 public key",
        "name": "the name under the owner, a DNS label",
        "seq": "sequence number; higher replaces lower",
        "fid": "the function the name points to",
        "deprecated": "the owner deprecated this version",
        "successor": "fid that replaces it, or empty",
        "sunset": "Unix seconds after which it stops, or 0",
        "signature": "owner's signature (section 9.3)",
    },
    "REVOKE": {
        "issuer_key": "the key that revokes: the link's issuer or the token's root owner",
        "token_id": "the id of the link revoked (section 9.11)",
        "not_after": "the token's expiry, Unix seconds; the revocation may be forgotten after it",
        "signature": "issuer's signature (section 5.30)",
    },
    "SECRET": {
        "owner_key": "the function owner's Ed25519 public key",
        "fid": "the function the secrets belong to",
        "host": "node id of the host they are sealed to",
        "seq": "sequence number; higher replaces lower",
        "sealed": "a NaCl sealed box to the host (section 9.12)",
        "signature": "owner's signature (section 9.12)",
    },
    "SEAL": {
        "fid": "the function whose secrets to seal",
        "host": "node id of the host waiting for them",
        "host_key": "that host's Ed25519 node key",
        "owner_copy": "the owner copy the tracker holds (section 9.12)",
    },
    "DEPRECATE": {
        "owner_key": "the owner's Ed25519 public key",
        "fid": "the function deprecated",
        "seq": "sequence number; higher replaces lower",
        "deprecated": "1 deprecated, 0 no longer deprecated",
        "successor": "fid that replaces it, or empty",
        "sunset": "Unix seconds from which it is gone, or 0",
        "signature": "owner's signature (section 5.29)",
    },
    "STATEMENT_ACK": {
        "status": "0 taken in, else an error code (registry 11.2)",
        "seq": "the sequence number the receiver now holds for the statement's subject",
        "text": "human-readable reason, for logs only",
    },
    "CANCEL": {"request_id": "an INVOKE of the sender's that it no longer wants answered"},
    "LOGS": {
        "fid": "the function whose logs are wanted",
        "owner_key": "the function owner's Ed25519 public key",
        "since_us": "only calls that ended after this, Unix microseconds",
        "max_entries": "at most this many entries (capped by the answer's limit)",
        "issued_at": "when the owner signed, Unix seconds",
        "nonce": "16 random bytes",
        "signature": "the owner's signature (section 10.7)",
    },
    "LOG_LINES": {
        "fid": "the function",
        "entries": "log entries, oldest first",
        "more": "1 if entries were left out: ask again from the last time_us",
    },
    "RELAY": {"target": "node id of the peer to deliver to", "frame": "a complete ORB frame"},
    "SYNC": {"digest": "the sender's registry digest, canonical JSON (section 8.6)"},
    "DELTA": {
        "kind": "0 changes, 1 snapshot part",
        "payload": "canonical JSON: a change list or a snapshot part (section 8.6)",
    },
    "VOUCHER_ASK": {
        "payout": "the Ethereum address the vouchers pay; bound to the sender's node id at its first ask",
        "fid": "one fid (its voucher, even if unchanged), or empty: every fid changed since last signed",
        "after": "with an empty fid: only on-chain fids above this one (paging), or empty",
    },
    "VOUCHERS": {
        "chain_id": "EIP-712 domain: the chain id",
        "contract": "EIP-712 domain: the OrbEscrow address (verifyingContract)",
        "signer": "the tracker's Ethereum address, every voucher's signer",
        "vouchers": "signed vouchers paying the asker's payout address, by on-chain fid",
        "more": "1 if vouchers were left out: ask again with after = the last fid32",
    },
}

REGISTRY_DOCS = {
    "message-types": (
        m.MessageType,
        {
            "HELLO": "opens a session",
            "HELLO_ACK": "accepts a session",
            "PING": "keepalive and RTT probe (request)",
            "PONG": "answers PING",
            "GETADDR": "asks for addresses (request)",
            "ADDR": "addresses; answers GETADDR or relays fresh ones",
            "ERROR": "refuses a frame or a request",
            "ANNOUNCE": "the functions a node hosts",
            "LOOKUP": "asks for the replicas of a fid (request)",
            "PEERS": "answers LOOKUP",
            "DEPLOY": "asks a tracker to deploy a package (request)",
            "DEPLOY_ACK": "answers DEPLOY and OFFER",
            "OFFER": "asks a peer to host a fid (request)",
            "FETCH": "asks for a chunk of a package (request)",
            "PACKAGE": "answers FETCH with a chunk",
            "CHALLENGE": "asks for proof of a stored package (request)",
            "PROOF": "answers CHALLENGE",
            "INVOKE": "runs a function (request)",
            "RESULT": "answers INVOKE",
            "CANCEL": "withdraws an INVOKE; the host kills the call",
            "LOGS": "the owner's signed request for recent call logs (request)",
            "LOG_LINES": "answers LOGS",
            "NAME": "an owner-signed name record (request)",
            "REVOKE": "a signed revocation of a capability token (request)",
            "SECRET": "a function's secrets sealed to one host, owner-signed (request)",
            "SEAL": "asks an owner's sealing node to seal secrets to a host (request)",
            "DEPRECATE": "an owner-signed deprecation of a fid (request)",
            "STATEMENT_ACK": "answers NAME and the other owner statements",
            "RELAY": "a frame forwarded to a peer behind NAT",
            "SYNC": "tracker anti-entropy: my registry digest (request)",
            "DELTA": "registry changes or a snapshot part; answers SYNC or pushes news",
            "VOUCHER_ASK": "a host asks for payment vouchers (request)",
            "VOUCHERS": "answers VOUCHER_ASK with signed vouchers",
        },
    ),
    "error-codes": (ErrorCode, None),
    "roles": (Role, None),
    "features": (Feature, None),
    "tlv-types": (TlvType, None),
    "result-status": (ResultStatus, None),
}


# --- layout tables -----------------------------------------------------------


def _record_name(sub):
    for name, record in RECORDS.items():
        if sub is record:
            return name
    return None


def type_and_size(sub):
    """(type name, fixed size or None) of a construct field."""
    if isinstance(sub, Renamed):
        sub = sub.subcon
    if isinstance(sub, Bool8Field):
        return "bool", 1
    if isinstance(sub, FormatField):
        size = sub.length
        return f"u{8 * size}", size
    if isinstance(sub, FixedBytes):
        return f"bytes[{sub.length}]", sub.length
    if isinstance(sub, PrefixedText):
        return f"text<u{8 * sub.width}>", None
    if isinstance(sub, PrefixedBytes):
        return f"bytes<u{8 * sub.width}>", None
    if isinstance(sub, FocusedSeq):  # what PrefixedArray(count, item) expands to
        count_field = sub.subcons[0].subcon.subcon  # "count" / Rebuild(<count>, ...)
        item = sub.subcons[1].subcon.subcon  # "items" / Array(count, <item>)
        count_type, _ = type_and_size(count_field)
        return f"array<{count_type}, {_record_name(item) or type_and_size(item)[0]}>", None
    if isinstance(sub, Struct):
        sizes = [type_and_size(s)[1] for s in sub.subcons]
        return _record_name(sub), None if None in sizes else sum(sizes)
    if sub is GreedyBytes:
        return "tlv-area", None
    raise ValueError(f"no RFC type for {sub!r}")


TABLE_HEAD = ["| Offset | Size | Type | Name | Limit | Meaning |", "|---|---|---|---|---|---|"]


def field_limit(cls, name):
    """The Limit column: the text stored next to the field's validator (messages.LIMIT)."""
    field = attrs.fields_dict(cls).get(name)
    if field is None and name == "ip":  # records carry the address as `host` text
        field = attrs.fields_dict(cls).get("host")
    return field.metadata.get(m.LIMIT, "") if field is not None else ""


def _rows(fields, docs, cls):
    lines = list(TABLE_HEAD)
    offset = 0
    for sub in fields:
        type_name, size = type_and_size(sub)
        if sub.name == "ext":
            meaning = "TLV extension area, to the end of the body (section 12)"
            limit = "the rest of the body"
        else:
            meaning = docs[sub.name]
            limit = field_limit(cls, sub.name)
        where = str(offset) if offset is not None else "var"
        lines.append(
            f"| {where} | {size if size is not None else 'var'} | {type_name} | {sub.name} | {limit} | {meaning} |"
        )
        offset = offset + size if (offset is not None and size is not None) else None
    return "\n".join(lines)


HEADER_LIMITS = {
    "magic": "the receiver's network magic, else close",
    "version": "a version the receiver speaks",
    "type": "unknown types: ERROR(unsupported)",
    "flags": "unknown bits: ignore",
    "request_id": "",
    "length": f"at most max_frame_bytes ({DEFAULT_MAX_FRAME_BYTES} by default)",
}


def header_table():
    names = ["magic", "version", "type", "flags", "request_id", "length"]
    sizes = [4, 1, 1, 2, 4, 4]
    types = ["bytes[4]", "u8", "u8", "u16", "u32", "u32"]
    assert sum(sizes) == HEADER.size
    lines = list(TABLE_HEAD)
    offset = 0
    for name, size, type_name in zip(names, sizes, types):
        lines.append(
            f"| {offset} | {size} | {type_name} | {name} | {HEADER_LIMITS[name]} | {FIELD_DOCS['header'][name]} |"
        )
        offset += size
    return "\n".join(lines)


def records_table():
    parts = []
    for name, record in RECORDS.items():
        _, size = type_and_size(record)
        size_text = f"{size} bytes" if size is not None else "variable size"
        parts.append(f"**{name}** ({size_text})\n\n" + _rows(record.subcons, FIELD_DOCS[name], RECORD_CLASSES[name]))
    return "\n\n".join(parts)


def layout(name):
    if name == "header":
        return header_table()
    if name == "records":
        return records_table()
    cls = m.MESSAGES[m.MessageType[name]]
    return _rows(cls.BODY.subcons, FIELD_DOCS[name], cls)


def registry(name):
    enum_cls, docs = REGISTRY_DOCS[name]
    width = 4 if name in ("tlv-types",) else 2
    lines = ["| Value | Name | Meaning |", "|---|---|---|"]
    for member in enum_cls:
        meaning = (docs or {}).get(member.name) or _enum_comment(enum_cls, member.name)
        lines.append(f"| 0x{int(member):0{width}x} | {member.name.lower()} | {meaning} |")
    return "\n".join(lines)


def _enum_comment(enum_cls, member_name):
    """The trailing '# comment' of an enum member's line in its source."""
    import inspect

    source = inspect.getsource(enum_cls)
    match = re.search(rf"^\s*{member_name}\s*=.*?#\s*(.+)$", source, re.M)
    return match.group(1).strip() if match else ""


# --- vectors ------------------------------------------------------------------


def _u64_names(subcons):
    names = set()
    for sub in subcons:
        if sub.name != "ext" and type_and_size(sub)[0] == "u64":
            names.add(sub.name)
    return frozenset(names)


# The fields that are u64 on the wire, per class. In JSON they are decimal
# strings: I-JSON (RFC 7493) keeps numbers within 2^53, and JavaScript's
# JSON.parse silently rounds anything larger (a nonce, a sequence number).
U64_FIELDS = {cls: _u64_names(cls.BODY.subcons) for cls in m.MESSAGES.values()}
U64_FIELDS.update({RECORD_CLASSES[name]: _u64_names(struct.subcons) for name, struct in RECORDS.items()})


def to_json(value):
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (tuple, list)):
        return [to_json(v) for v in value]
    if attrs.has(type(value)):
        u64 = U64_FIELDS.get(type(value), frozenset())
        return {
            a.name: str(getattr(value, a.name)) if a.name in u64 else to_json(getattr(value, a.name))
            for a in attrs.fields(type(value))
        }
    return value


def message_from_json(type_name, fields):
    """Rebuild a message from its JSON form (the inverse of to_json)."""
    cls = m.MESSAGES[m.MessageType[type_name]]
    kwargs = {}
    for a in attrs.fields(cls):
        kwargs[a.name] = _field_from_json(cls, a, fields[a.name])
    return cls(**kwargs)


def _field_from_json(cls, a, value):
    if a.name in U64_FIELDS[cls]:
        return _u64_from_json(value)
    if a.name == "ext":
        return tuple(m.Tlv(t["type"], bytes.fromhex(t["value"])) for t in value)
    if a.name in cls.NESTED:
        record = cls.NESTED[a.name]
        return tuple(_record_from_json(record, v) for v in value)
    if a.name in cls.SINGLE:
        return _record_from_json(cls.SINGLE[a.name], value)
    if a.name == "versions":
        return tuple(value)
    if isinstance(value, str) and a.type is bytes:
        return bytes.fromhex(value)
    return value


def _record_from_json(record, value):
    kwargs = {}
    for a in attrs.fields(record):
        v = value[a.name]
        if a.name in U64_FIELDS[record]:
            v = _u64_from_json(v)
        kwargs[a.name] = bytes.fromhex(v) if a.type is bytes else v
    return record(**kwargs)


def _u64_from_json(value):
    if not isinstance(value, str) or not value.isdigit() or (len(value) > 1 and value[0] == "0"):
        raise ValueError(f"a u64 is written as a decimal string without leading zeros, not {value!r}")
    return int(value)


def _det_bytes(label, n):
    import hashlib

    out = b""
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{label}:{counter}".encode()).digest()
        counter += 1
    return out[:n]


class _VectorKey:
    """An Ed25519 key for the vectors: what a node key offers (the spec knows no daemon's identity module)."""

    def __init__(self, seed):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_bytes = self._key.public_key().public_bytes(serialization.Encoding.Raw,
                                                                serialization.PublicFormat.Raw)
        self.node_id = node_id_for(self.public_bytes)

    def sign(self, data):
        return self._key.sign(data)


def sample_keys():
    """Two fixed Ed25519 keys for the vectors (seeds are SHA-256 of a label)."""
    return _VectorKey(_det_bytes("orb-vector-tracker", 32)), _VectorKey(_det_bytes("orb-vector-peer", 32))


def sample_messages():
    """One message of every type, deterministic, with (request_id, flags)."""
    tracker, peer = sample_keys()
    fid = b"\x01" + _det_bytes("orb-vector-package", 32)
    fid2 = b"\x01" + _det_bytes("orb-vector-package-2", 32)
    ts = 1_764_000_000
    here = m.Endpoint("127.0.0.1", 7400)
    there = m.Endpoint("127.0.0.1", 50123)
    v6 = m.Endpoint("::1", 7400)
    name = m.Name(
        owner_key=peer.public_bytes,
        name="adder",
        seq=3,
        fid=fid,
        deprecated=1,
        successor=fid2,
        sunset=ts + 86400,
        signature=b"\x00" * 64,
    )
    name = attrs.evolve(name, signature=peer.sign(name.signed_bytes()))
    deprecate = m.Deprecate(owner_key=peer.public_bytes, fid=fid, seq=2, deprecated=1, successor=fid2,
                            sunset=ts + 86400, signature=b"\x00" * 64)
    deprecate = attrs.evolve(deprecate, signature=peer.sign(deprecate.signed_bytes()))
    logs = m.Logs(fid=fid, owner_key=peer.public_bytes, since_us=(ts - 60) * 1_000_000, max_entries=100,
                  issued_at=ts, nonce=_det_bytes("orb-vector-logs-nonce", 16), signature=b"\x00" * 64)
    logs = attrs.evolve(logs, signature=peer.sign(logs.signed_bytes()))
    # The relayed request is an INVOKE with its own, end-to-end request id (Section 10.3):
    # a request is never sent with request id 0 (Section 4.7).
    inner = encode_frame(
        network_magic(VECTOR_NETWORK),
        m.Invoke(fid=fid, deadline_ms=5000, token=b"", input=b'{"a":2,"b":3}'),
        RELAYED_REQUEST_ID,
        0,
        1,
    )
    return [
        ("hello", m.Hello(
            versions=(1,), node_id=peer.node_id, public_key=peer.public_bytes, roles=int(Role.PEER),
            features=int(Feature.RELAY | Feature.CHUNKED_PACKAGE), timestamp=ts, nonce=0x0123456789ABCDEF,
            observed=here, listen=(m.Endpoint("127.0.0.1", 7401),), user_agent="orb/0.1",
        ), 0, 0),
        ("hello_ack", m.HelloAck(
            version=1, node_id=tracker.node_id, public_key=tracker.public_bytes,
            roles=int(Role.TRACKER | Role.RELAY), features=int(Feature.RELAY | Feature.FEDERATION),
            timestamp=ts, nonce=0xFEDCBA9876543210, observed=there, listen=(here, v6), user_agent="orb/0.1",
        ), 0, 0),
        ("ping", m.Ping(nonce=7), 1, 0),
        ("pong", m.Pong(nonce=7), 1, int(Flag.RESPONSE)),
        ("getaddr", m.GetAddr(), 2, 0),
        ("addr", m.Addr(entries=(
            m.AddrEntry(ts, "127.0.0.1", 7400, int(Role.TRACKER), tracker.node_id),
            m.AddrEntry(ts - 60, "::1", 7401, int(Role.PEER), peer.node_id),
        )), 2, int(Flag.RESPONSE)),
        ("error", m.Error(code=int(ErrorCode.UNSUPPORTED), ref_request_id=9, text="unknown message type 0x99"),
         9, int(Flag.RESPONSE)),
        ("announce", sample_announce(peer, tracker.node_id, ts, ((fid, 1), (fid2, 2))), 0, 0),
        ("lookup", m.Lookup(fid=fid, max_replicas=3), 3, 0),
        ("peers", m.Peers(fid=fid, replicas=(
            m.Replica(peer.node_id, "127.0.0.1", 7401, int(Role.PEER), 1, 3, 125),
        )), 3, int(Flag.RESPONSE)),
        ("deploy", sample_deploy(), 4, 0),
        ("deploy_ack", m.DeployAck(fid=fid, status=0, replicas=3, text="placed"), 4, int(Flag.RESPONSE)),
        ("offer", m.Offer(fid=sample_deploy().fid, package_size=sample_deploy().package_size,
                          manifest=sample_deploy().manifest,
                          sources=(m.Source(tracker.node_id, "127.0.0.1", 7400),)), 5, 0),
        ("fetch", m.Fetch(fid=fid, offset=0, length=65536), 6, 0),
        ("package", m.Package(fid=fid, offset=0, total_size=5, data=b"hello"), 6, int(Flag.RESPONSE)),
        ("challenge", m.Challenge(fid=fid, nonce=_det_bytes("orb-vector-nonce", 32)), 7, 0),
        ("proof", m.Proof(fid=fid, digest=_det_bytes("orb-vector-digest", 32)), 7, int(Flag.RESPONSE)),
        ("invoke", m.Invoke(fid=fid, deadline_ms=5000, token=b"", input=b'{"a":2,"b":3}',
                            ext=(m.Tlv(int(TlvType.TRACE_ID), _det_bytes("trace", 16)),)), 8, 0),
        ("result", m.Result(status=int(ResultStatus.OK), queue_us=120, fetch_us=0, boot_us=2100, exec_us=350,
                            output=b"5", log=b""), 8, int(Flag.RESPONSE)),
        ("result_cached", m.Result(status=int(ResultStatus.OK), queue_us=0, fetch_us=0, boot_us=0, exec_us=0,
                                   output=b"5", log=b"", ext=(m.Tlv(int(TlvType.CACHED), (1500).to_bytes(4, "big")),)),
         12, int(Flag.RESPONSE)),
        ("cancel", m.Cancel(request_id=8), 0, 0),
        ("logs", logs, 11, 0),
        ("log_lines", m.LogLines(fid=fid, entries=(
            m.LogEntry(peer.node_id, ts * 1_000_000 + 250_000, int(ResultStatus.ERROR), 350,
                       _det_bytes("trace", 16), b"ValueError: b must be a number"),
        ), more=0), 11, int(Flag.RESPONSE)),
        ("name", name, 13, 0),
        ("revoke", sample_revoke(), 14, 0),
        ("statement_ack", m.StatementAck(status=0, seq=3, text=""), 13, int(Flag.RESPONSE)),
        ("secret", sample_secret(), 14, 0),
        ("seal", m.Seal(fid=sample_secret().fid, host=tracker.node_id, host_key=tracker.public_bytes,
                        owner_copy=sample_secret().sealed), 15, 0),
        ("deprecate", deprecate, 16, 0),
        ("statement_ack_stale", m.StatementAck(status=int(ErrorCode.STALE), seq=2, text="seq 2 is not above 2"), 16,
         int(Flag.RESPONSE)),
        ("relay", m.Relay(target=peer.node_id, frame=inner), 0, 0),
        ("sync", m.Sync(digest=_sample_digest(tracker)), 10, 0),
        ("delta", m.Delta(kind=int(m.DeltaKind.CHANGES), payload=_sample_delta(tracker, peer)), 10,
         int(Flag.RESPONSE)),
        ("voucher_ask", m.VoucherAsk(payout=bytes.fromhex(VOUCHER_VECTOR["host"]), fid=b"", after=b""), 14, 0),
        ("vouchers", m.Vouchers(
            chain_id=VOUCHER_VECTOR["chain_id"], contract=bytes.fromhex(VOUCHER_VECTOR["contract"]),
            signer=bytes.fromhex(VOUCHER_VECTOR["signer"]), more=0,
            vouchers=(m.VoucherEntry(bytes.fromhex(VOUCHER_VECTOR["fid32"]), VOUCHER_VECTOR["requests"],
                                     VOUCHER_VECTOR["bytes"], VOUCHER_VECTOR["epochs"], VOUCHER_VECTOR["expiry"],
                                     bytes.fromhex(VOUCHER_VECTOR["signature"])),)), 14, int(Flag.RESPONSE)),
    ]


# The EIP-712 voucher of RFC 10.10: signer key 0x11 x 32, host key 0x22 x 32, fid_for(b"orb test vector").
# Computed by orb.pay.voucher (which the protocol package does not import); tests/test_pay_tracker.py checks
# that the signature verifies and that these are the RFC's numbers.
VOUCHER_VECTOR = {
    "chain_id": 31337,
    "contract": "cccccccccccccccccccccccccccccccccccccccc",
    "signer": "19e7e376e7c213b7e7e7e46cc70a5dd086daff2a",
    "host": "1563915e194d8cfba1943570603f7606a3115508",
    "fid32": "49c7d707cbd03f3737e11f1c1f527bec3698d90a96f5044170717c74b66ccba0",
    "requests": 10000,
    "bytes": 5242880,
    "epochs": 3,
    "expiry": 2000000000,
    "signature": "f008ac1f0ac9e13c2c0367ae4734cc0dca50c76fac7848f888db1a0bf1059b01"
                 "4c2161c155715948d7f5a7a6250f5da8368455acf2ca21a4a8f24f33e92056421b",
}


TOKEN_TIME = 1_764_000_000


def sample_tokens():
    """The capability token vectors (RFC 9.11): (root, delegated). The owner is the peer key of Appendix A,
    the root's holder the tracker key, which delegates a shorter bearer token."""
    from orb.protocol import token as tokenmod

    tracker, owner = sample_keys()
    fid = b"\x01" + _det_bytes("orb-vector-package", 32)
    root = tokenmod.issue(owner, owner.public_bytes, tokenmod.SCOPE_FID, fid, tracker.public_bytes,
                          TOKEN_TIME + 86400, delegable=True)
    child = tokenmod.delegate(root, tracker, tokenmod.SCOPE_FID, fid, None, TOKEN_TIME + 3600)
    return root, child


def sample_revoke():
    """REVOKE of the delegated vector token's last link, by the owner."""
    _, owner = sample_keys()
    _, child = sample_tokens()
    revoke = m.Revoke(issuer_key=owner.public_bytes, token_id=child.id, not_after=TOKEN_TIME + 3600,
                      signature=b"\x00" * 64)
    return attrs.evolve(revoke, signature=owner.sign(revoke.signed_bytes()))


def tokens_vector():
    root, child = sample_tokens()
    out = {}
    for label, token in (("root", root), ("delegated", child)):
        data = token.encode()
        previous = b""
        signed = []
        for link in token.links:
            signed.append(link.signed_bytes(previous).hex())
            previous = link.signature
        out[label] = {"hex": data.hex(), "text": token.text(), "bytes": len(data), "text_chars": len(token.text()),
                      "link_ids": [i.hex() for i in token.link_ids()], "signed_bytes": signed}
    return out


def tokens_markdown(doc):
    v = doc["tokens"]
    root, child = v["root"], v["delegated"]
    lines = [
        f"The owner is the peer key of Appendix A, the function the fid of the sample INVOKE, `not_after` "
        f"{TOKEN_TIME} + 86400 for the root (key-bound to the tracker key, delegable) and {TOKEN_TIME} + 3600 "
        f"for the delegated link (bearer, signed by the tracker key).",
        "",
        f"**Root token** ({root['bytes']} bytes, {root['text_chars']} characters of text; link id "
        f"`{root['link_ids'][0]}`):",
        "",
        "```",
        _hexdump(root["hex"]),
        "```",
        "",
        "Its link's signed bytes:",
        "",
        "```",
        _hexdump(root["signed_bytes"][0]),
        "```",
        "",
        "Text form:",
        "",
        "```",
        "\n".join(root["text"][i : i + WRAP] for i in range(0, len(root["text"]), WRAP)),
        "```",
        "",
        f"**Delegated token** ({child['bytes']} bytes, {child['text_chars']} characters; link ids "
        f"`{child['link_ids'][0]}`, `{child['link_ids'][1]}`; the token's id is the last):",
        "",
        "```",
        _hexdump(child["hex"]),
        "```",
        "",
        "The second link's signed bytes (the prefix, the root link's signature, the version, the link):",
        "",
        "```",
        _hexdump(child["signed_bytes"][1]),
        "```",
    ]
    return "\n".join(lines)


def _sample_digest(tracker):
    from orb.protocol.federation import Digest

    return Digest(known={tracker.node_id: 3}, state_hash=_det_bytes("orb-vector-state", 32)).to_bytes()


def _sample_delta(tracker, peer):
    from orb.protocol.federation import PEER, Change, Delta

    record = sample_peer_record(tracker, peer)
    change = Change(tracker.node_id, 1, PEER, record)  # a new tracker's first change
    return Delta(changes=(change,), more=False).to_bytes()


STATEMENT_TIME = 1_764_000_000


def sample_statement(peer, home, time=STATEMENT_TIME, functions=()):
    """The peer statement of the vectors: what the sample peer signs for ``home``."""
    from orb.protocol import federation as fed
    from orb.protocol import fid as fidmod

    return fed.make_peer_statement(peer, 1_764_000_000_000_000, time, home, (PEER_LISTEN,), 125,
                                   {fidmod.to_text(f): v for f, v in functions}, int(Role.PEER))


def sample_announce(peer, home, time=STATEMENT_TIME, functions=()):
    st = sample_statement(peer, home, time, functions)
    return m.Announce(seq=st.seq, time=st.time, load_permille=st.load_permille, roles=st.roles,
                      listen=tuple(m.Endpoint(h, p) for h, p in st.addresses),
                      functions=tuple(m.FunctionEntry(f, v) for f, v in functions), signature=st.sig)


def sample_peer_record(tracker, peer):
    """The vectors' peer record: the sample peer's statement and the sample tracker's observation of it."""
    from orb.protocol import federation as fed

    st = sample_statement(peer, tracker.node_id)
    obs = fed.Observation(peer=st.node_id, statement_seq=st.seq, tracker=tracker.node_id, key=tracker.public_bytes,
                          seq=1_764_000_000_500_000, time=STATEMENT_TIME, reachability="reachable", rtt_ms=3,
                          connected=True).signed(tracker.sign)
    return fed.PeerRecord(st, obs)


class _FixedClock:
    def __init__(self, now):
        self.now = now

    def seconds(self):
        return self.now


TRANSCRIPT_TIME = 1_764_000_000
TRACKER_LISTEN = ("127.0.0.1", 7400)
PEER_LISTEN = ("127.0.0.1", 7401)


def handshake_transcript():
    """
    A session opening as a client really sees it, frame by frame: the
    handshake, then what a tracker sends at once on its own (a PING and an
    unsolicited ADDR), the peer's own first frames, and the answer to its
    GETADDR. Returns [(direction, frame bytes)].
    """
    from orb.protocol.session import LocalIdentity, Session, SessionConfig

    tracker, peer = sample_keys()
    clock = _FixedClock(TRANSCRIPT_TIME)
    config = SessionConfig(network=VECTOR_NETWORK)
    client = Session(
        LocalIdentity(peer.public_bytes, int(Role.PEER), listen=(m.Endpoint(*PEER_LISTEN),), user_agent="orb/0.1"),
        clock, initiator=True, remote_address=m.Endpoint(*TRACKER_LISTEN), config=config,
        rng=random.Random(1),
    )
    server = Session(
        LocalIdentity(tracker.public_bytes, int(Role.TRACKER | Role.RELAY), listen=(m.Endpoint(*TRACKER_LISTEN),),
                      user_agent="orb/0.1"),
        clock, initiator=False, remote_address=m.Endpoint("127.0.0.1", 50123), config=config,
        rng=random.Random(2),
    )
    to_tracker, to_peer = "peer -> tracker", "tracker -> peer"
    steps = []
    client.connection_made()
    server.connection_made()

    def carry(label, data):
        steps.append((label, data))
        (client if label == to_peer else server).feed(data)

    now = int(clock.now)
    tracker_entry = m.AddrEntry(now, *TRACKER_LISTEN, int(Role.TRACKER | Role.RELAY), tracker.node_id)
    carry(to_tracker, client.data_to_send())  # HELLO
    carry(to_peer, server.data_to_send())  # HELLO_ACK
    # What a tracker does on READY, before it has heard anything more:
    carry(to_peer, server.ping())  # a first RTT measurement for its registry
    carry(to_peer, server.send(m.Addr(entries=(tracker_entry,))))  # itself and the trackers it knows
    # The peer, READY since HELLO_ACK, sends its own first frames; the session
    # answered the tracker's PING by itself (the PONG is queued).
    pong = client.data_to_send()
    getaddr_id, getaddr = client.request(m.GetAddr())
    carry(to_tracker, getaddr)
    carry(to_tracker, client.send(sample_announce(peer, tracker.node_id, now)))
    carry(to_tracker, pong)
    other_peer = m.AddrEntry(now - 60, "192.0.2.7", 7401, int(Role.PEER), _det_bytes("other-peer", 32))
    answer = m.dedupe_addr_entries([tracker_entry, other_peer, tracker_entry])
    carry(to_peer, server.send(m.Addr(entries=answer), response_to=getaddr_id))
    return steps


def _frame_json(label, data):
    decoder = FrameDecoder(network_magic(VECTOR_NETWORK))
    (frame,) = decoder.feed(data)
    msg = frame.message
    return {
        "direction": label,
        "type": msg.TYPE.name,
        "request_id": frame.request_id,
        "flags": frame.flags,
        "hex": data.hex(),
        "fields": to_json(msg),
    }


PACKAGE_MANIFEST = {"entry": "main.py", "name": "adder", "runtime": "python", "description": "adds a and b — ünïcode"}
PACKAGE_LONG_DIR = "data/" + "tables-of-constants-for-the-adder-function-" * 2 + "v1"


def sample_package_files():
    """The small directory of the package vector: one long path, to show the name/prefix split."""
    from orb.protocol.package import PackageFile

    return [
        PackageFile("main.py", b"import json, sys\nargs = json.load(sys.stdin)\nprint(args['a'] + args['b'])\n",
                    executable=True),
        PackageFile(f"{PACKAGE_LONG_DIR}/zero.txt", b"0\n"),
    ]


def package_vector():
    import hashlib

    from orb.protocol import fid as fid_text
    from orb.protocol.package import MANIFEST_NAME, manifest_bytes, pack, split_path

    files = sample_package_files()
    data = pack(files, PACKAGE_MANIFEST)
    entries = [{"path": MANIFEST_NAME, "mode": "0644", "data": manifest_bytes(PACKAGE_MANIFEST).hex()}]
    for f in files:
        entries.append({"path": f.path, "mode": "0755" if f.executable else "0644", "data": f.data.hex()})
    entries.sort(key=lambda e: e["path"].encode("utf-8"))
    for e in entries:
        prefix, name = split_path(e["path"].encode("utf-8"))
        e["ustar_prefix"], e["ustar_name"] = prefix.decode(), name.decode()
    raw = fid_of(data)
    return {
        "manifest": PACKAGE_MANIFEST,
        "entries": entries,
        "hex": data.hex(),
        "sha256": hashlib.sha256(data).hexdigest(),
        "fid_bytes": raw.hex(),
        "fid": fid_text.to_text(raw),
    }


# The canonical JSON vector of Section 2.7: non-ASCII text, a key order that
# differs between UTF-16 and code points, escapes, integers and a u64 string.
JCS_INPUT = (
    '{\n  "z": 1,\n  "\\ufb01le": "caf\\u00e9 — ünïcode",\n  "\\ud83d\\ude00": [true, false, null],\n'
    '  "a": {"nonce": "18364758544493064720", "n": -0, "big": 9007199254740991, "e": 1E3},\n'
    '  "ctl": "tab\\there \\"quoted\\" back\\\\slash \\u001f end"\n}'
)


def jcs_vector():
    import hashlib

    import rfc8785

    value = json.loads(JCS_INPUT)
    canonical = rfc8785.dumps(value)
    return {
        "input": JCS_INPUT,
        "canonical": canonical.decode("utf-8"),
        "canonical_hex": canonical.hex(),
        "sha256": hashlib.sha256(canonical).hexdigest(),
    }


def jcs_markdown(doc):
    v = doc["canonical_json"]
    return "\n".join([
        "Input (any JSON text with this value; here with whitespace, escapes and a non-canonical "
        "number form):",
        "",
        "```",
        v["input"],
        "```",
        "",
        "Its canonical form as text, then as UTF-8 bytes in hex, and the SHA-256 of those bytes:",
        "",
        "```",
        v["canonical"],
        "```",
        "",
        "```",
        _hexdump(v["canonical_hex"]),
        "",
        f"SHA-256 = {v['sha256']}",
        "```",
    ])


def statements_vector():
    """One signed record of each kind (Section 8.6.1): the statement, its
    signed bytes and the signature, with the vector keys; then the change
    that carries the peer record, as a tracker replicates it."""
    import hashlib

    from orb.protocol import federation as fed

    tracker, peer = sample_keys()
    peer_record = sample_peer_record(tracker, peer)
    tracker_record = fed.TrackerRecord(tracker.node_id, tracker.public_bytes, 1_764_000_000_000_000, STATEMENT_TIME,
                                       (TRACKER_LISTEN,)).signed(tracker.sign)
    out = []
    for name, domain, obj in (
        ("peer statement", fed.PEER_DOMAIN, peer_record.statement),
        ("observation", fed.OBSERVATION_DOMAIN, peer_record.observation),
        ("tracker", fed.TRACKER_DOMAIN, tracker_record),
    ):
        signed = fed.signed_bytes(domain, obj.statement())
        out.append({"name": name, "domain": domain.decode("ascii").rstrip("\x00"),
                    "signed_hex": signed.hex(), "sha256": hashlib.sha256(signed).hexdigest(),
                    "sig": obj.sig.hex(), "record": obj.to_dict()})
    change = fed.Change(tracker.node_id, 1, fed.PEER, peer_record).to_bytes()
    return {"statements": out, "change": change.decode("utf-8"), "change_sha256": hashlib.sha256(change).hexdigest()}


def names_vector():
    """Section 9.3 and 9.10: the owner label of each vector key, and the signed bytes of the
    NAME and DEPRECATE of Appendix A.2."""
    import hashlib

    from orb.protocol import federation as fed
    from orb.protocol.names import owner_label

    tracker, peer = sample_keys()
    labels = [{"key": k.public_bytes.hex(), "label": owner_label(k.public_bytes)} for k in (tracker, peer)]
    signed = []
    for name, msg, _, _ in sample_messages():
        if name in ("name", "deprecate"):
            data = msg.signed_bytes()
            record = (fed.NameRecord if name == "name" else fed.DeprecationRecord).from_message(msg)
            spec = fed.KINDS.of_record(record)
            signed.append({"type": msg.TYPE.name, "signed_hex": data.hex(), "sha256": hashlib.sha256(data).hexdigest(),
                           "signature": msg.signature.hex(), "key": spec.key(record.ident), "kind": spec.name,
                           "record": record.to_dict()})
    return {"owner_labels": labels, "signed": signed}


def names_markdown(doc):
    v = doc["names"]
    lines = ["Owner labels of the two keys of Appendix A:", "", "```"]
    lines += [f"key   = {item['key']}\nlabel = {item['label']}" for item in v["owner_labels"]]
    lines += ["```", "", "The signed bytes of the NAME and DEPRECATE vectors of Appendix A.2 (the domain prefix, "
              "a zero byte, then the body without `signature` and with an empty TLV area), signed by the "
              "second key:", ""]
    for st in v["signed"]:
        lines += [f"**{st['type']}** ({len(st['signed_hex']) // 2} signed bytes)", "", "```", _hexdump(st["signed_hex"]),
                  "", f"SHA-256   = {st['sha256']}", f"signature = {st['signature']}", "```", "",
                  f"As a registry record of kind `{st['kind']}` (Section 9.10), key `{st['key']}`:", "", "```",
                  canonical_json(st["record"]).decode("utf-8"), "```", ""]
    return "\n".join(lines).rstrip("\n")


def fid_text(raw):
    from orb.protocol import fid as fidmod

    return fidmod.to_text(raw)


def canonical_json(value):
    from orb.protocol.federation import canonical_json as jcs

    return jcs(value)


def statements_markdown(doc):
    v = doc["statements"]
    lines = ["With the keys of Appendix A. For each kind: the "
             "domain prefix, the signed bytes (the prefix, a zero byte, then the JCS of the statement "
             "without `sig`) in hex, their SHA-256, and the record as JSON, `sig` included.", ""]
    for st in v["statements"]:
        lines += [f"**{st['name']}** (`{st['domain']}\\0`, {len(st['signed_hex']) // 2} signed bytes)", "", "```",
                  _hexdump(st["signed_hex"]), "", f"SHA-256 = {st['sha256']}", "```", "", "```",
                  canonical_json(st["record"]).decode("utf-8"), "```", ""]
    lines += [f"The change by which the tracker replicates the peer record, as its first change "
              f"({len(v['change'].encode('utf-8'))} bytes, SHA-256 `{v['change_sha256']}`):", "",
              "<!-- example:federation-change -->", "```", v["change"], "```", "<!-- /example -->"]
    return "\n".join(lines)


# The signed deploy statement of Section 9.8: an owner key from a fixed seed, a
# complete manifest (Section 9.7) and the package holding it.
DEPLOY_TOML = """\
name = "adder"
version = "1.0.0"
runtime = "python"
description = "adds a and b"
idempotent = true
pure = true

[[sample]]
name = "two plus three"
input_json = { a = 2, b = 3 }
output_json = 5
"""
DEPLOY_MAIN = b"import json\n\n\ndef handler(event, context):\n    args = json.loads(event)\n    return args['a'] + args['b']\n"


def deploy_vector():
    import hashlib

    from orb.protocol import fid as fid_text
    from orb.protocol import manifest as manifest_mod
    from orb.protocol.deploy import DEPLOY_PREFIX, DeployStatement, sign_deploy
    from orb.protocol.package import PackageFile, pack

    key = _VectorKey(_det_bytes("orb-vector-owner", 32))
    manifest = manifest_mod.from_toml(DEPLOY_TOML)
    manifest_bytes = manifest_mod.canonical_bytes(manifest)
    data = pack([PackageFile("main.py", DEPLOY_MAIN)], manifest.to_json())
    raw = fid_of(data)
    statement = DeployStatement(raw, key.public_bytes, manifest_bytes, len(data), TRANSCRIPT_TIME)
    return {
        "owner_seed_label": "orb-vector-owner:0",
        "owner_key": key.public_bytes.hex(),
        "orb_toml": DEPLOY_TOML,
        "manifest": manifest_bytes.decode("utf-8"),
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "main_py": DEPLOY_MAIN.decode("ascii"),
        "fid_bytes": raw.hex(),
        "fid": fid_text.to_text(raw),
        "package_size": str(len(data)),
        "issued_at": str(TRANSCRIPT_TIME),
        "prefix": DEPLOY_PREFIX.hex(),
        "signed_bytes": statement.signed_bytes().hex(),
        "signature": sign_deploy(key, raw, manifest_bytes, len(data), TRANSCRIPT_TIME).hex(),
    }


def sample_deploy():
    """The DEPLOY of the vectors: the deploy statement of Section 9.8's vector."""
    v = deploy_vector()
    return m.Deploy(fid=bytes.fromhex(v["fid_bytes"]), owner_key=bytes.fromhex(v["owner_key"]),
                    manifest=v["manifest"].encode("utf-8"), package_size=int(v["package_size"]),
                    issued_at=int(v["issued_at"]), signature=bytes.fromhex(v["signature"]))


def deploy_markdown(doc):
    v = doc["deploy_statement"]
    signed = v["signed_bytes"]
    n = len(v["fid_bytes"]) // 2
    parts = [
        ("prefix", signed[:28], "`ORB-DEPLOY-v1` and 0x00"),
        ("fid length", signed[28:30], f"u8 {n}"),
        ("fid", signed[30:30 + 2 * n], v["fid"]),
        ("owner_key", signed[30 + 2 * n:94 + 2 * n], "raw Ed25519 public key"),
        ("SHA-256(manifest)", signed[94 + 2 * n:158 + 2 * n], "of the bytes of orb-manifest.json"),
        ("package_size", signed[158 + 2 * n:174 + 2 * n], f"u64 {v['package_size']}"),
        ("issued_at", signed[174 + 2 * n:190 + 2 * n], f"u64 {v['issued_at']}"),
    ]
    assert "".join(p[1] for p in parts) == signed
    lines = [
        "The owner key's seed is SHA-256 of the label `" + v["owner_seed_label"] + "`. The function "
        "directory holds this `orb.toml`:",
        "",
        "```",
        v["orb_toml"].rstrip("\n"),
        "```",
        "",
        "and `main.py` (mode 0644, hex `" + v["main_py"].encode("ascii").hex() + "`). The manifest, the "
        "bytes of the package's `orb-manifest.json` (" + str(len(v["manifest"].encode("utf-8"))) + " bytes):",
        "",
        "```",
        v["manifest"],
        "```",
        "",
        "The signed bytes, field by field (hex):",
        "",
        "| Field | Bytes (hex) | Value |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | `{hex_}` | {value} |" for name, hex_, value in parts]
    lines += [
        "",
        "```",
        f"owner_key        = {v['owner_key']}",
        f"SHA-256(manifest)= {v['manifest_sha256']}",
        f"fid              = {v['fid']}",
        f"package_size     = {v['package_size']}",
        f"issued_at        = {v['issued_at']}",
        "signature        =",
        _hexdump(v["signature"]),
        "```",
    ]
    return "\n".join(lines)


SECRET_VALUES = {"API_KEY": "vector-key-0123", "REGION": "eu-west"}
SECRET_SEQ = TRANSCRIPT_TIME * 1_000_000


def secret_vector():
    """Section 9.12: the deploy vector's function, its secrets sealed to a fixed host, owner-signed. The sealed
    box uses a fixed ephemeral key (a real one is random) so that the bytes are reproducible; it opens with
    libsodium's crypto_box_seal_open like any other."""
    from orb.protocol import secrets as sec

    owner = _VectorKey(_det_bytes("orb-vector-owner", 32))
    host_seed = _det_bytes("orb-vector-host", 32)
    host = _VectorKey(host_seed)
    fid = bytes.fromhex(deploy_vector()["fid_bytes"])
    host_x_public = sec.x25519_public(host.public_bytes)
    host_x_secret = sec.x25519_private(host_seed)
    ephemeral = _det_bytes("orb-vector-secret-ephemeral", 32)
    plain = sec.plaintext(fid, host.node_id, TRANSCRIPT_TIME, SECRET_VALUES)
    sealed = sec.seal_deterministic(host_x_public, plain, ephemeral)
    return {
        "owner_seed_label": "orb-vector-owner:0",
        "owner_key": owner.public_bytes.hex(),
        "host_seed_label": "orb-vector-host:0",
        "host_ed25519_public": host.public_bytes.hex(),
        "host_node_id": host.node_id.hex(),
        "host_x25519_public": host_x_public.hex(),
        "host_x25519_secret": host_x_secret.hex(),
        "fid_bytes": fid.hex(),
        "issued_at": str(TRANSCRIPT_TIME),
        "values_jcs": canonical_json(SECRET_VALUES).decode("utf-8"),
        "plaintext": plain.hex(),
        "ephemeral_secret_label": "orb-vector-secret-ephemeral:0",
        "sealed": sealed.hex(),
        "seq": str(SECRET_SEQ),
        "signed_bytes": sec.signed_bytes(fid, host.node_id, SECRET_SEQ, sealed).hex(),
        "signature": sec.sign(owner, fid, host.node_id, SECRET_SEQ, sealed).hex(),
    }


def sample_secret():
    """The SECRET of the vectors: Section 9.12's sealed secret."""
    v = secret_vector()
    return m.Secret(owner_key=bytes.fromhex(v["owner_key"]), fid=bytes.fromhex(v["fid_bytes"]),
                    host=bytes.fromhex(v["host_node_id"]), seq=int(v["seq"]), sealed=bytes.fromhex(v["sealed"]),
                    signature=bytes.fromhex(v["signature"]))


def secret_markdown(doc):
    v = doc["secret"]
    plain = v["plaintext"]
    n = len(v["fid_bytes"]) // 2
    parts = [
        ("prefix", plain[:28], "`ORB-SECRET-v1` and 0x00"),
        ("fid length", plain[28:30], f"u8 {n}"),
        ("fid", plain[30:30 + 2 * n], "the deploy vector's fid (Section 9.8)"),
        ("host node id", plain[30 + 2 * n:94 + 2 * n], "SHA-256 of the host's Ed25519 key"),
        ("issued_at", plain[94 + 2 * n:110 + 2 * n], f"u64 {v['issued_at']}"),
        ("secrets", plain[110 + 2 * n:], f"JCS `{v['values_jcs']}`"),
    ]
    assert "".join(p[1] for p in parts) == plain
    signed = v["signed_bytes"]
    sparts = [
        ("prefix", signed[:28], "`ORB-SECRET-v1` and 0x00"),
        ("fid length", signed[28:30], f"u8 {n}"),
        ("fid", signed[30:30 + 2 * n], ""),
        ("host node id", signed[30 + 2 * n:94 + 2 * n], ""),
        ("seq", signed[94 + 2 * n:110 + 2 * n], f"u64 {v['seq']}"),
        ("SHA-256(sealed)", signed[110 + 2 * n:], ""),
    ]
    assert "".join(p[1] for p in sparts) == signed
    lines = [
        "The owner key is the one of Section 9.8's vector; the host's Ed25519 seed is SHA-256 of the label `"
        + v["host_seed_label"] + "`, and the sealed box's ephemeral X25519 secret is SHA-256 of `"
        + v["ephemeral_secret_label"] + "` (a sender MUST use a fresh random one; it is fixed here only so that "
        "the bytes can be reproduced).",
        "",
        "```",
        f"host Ed25519 public = {v['host_ed25519_public']}",
        f"host node id        = {v['host_node_id']}",
        f"host X25519 public  = {v['host_x25519_public']}",
        f"host X25519 secret  = {v['host_x25519_secret']}",
        "```",
        "",
        "The plaintext, field by field (hex):",
        "",
        "| Field | Bytes (hex) | Value |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | `{hex_}` | {value} |" for name, hex_, value in parts]
    lines += [
        "",
        f"The sealed box, {len(v['sealed']) // 2} bytes (the ephemeral public key, then the ciphertext with its "
        "16-byte MAC); `crypto_box_seal_open(sealed, host X25519 public, host X25519 secret)` gives the "
        "plaintext back:",
        "",
        "```",
        _hexdump(v["sealed"]),
        "```",
        "",
        "The owner's signed bytes, field by field (hex):",
        "",
        "| Field | Bytes (hex) | Value |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | `{hex_}` | {value} |" for name, hex_, value in sparts]
    lines += ["", "```", "signature =", _hexdump(v["signature"]), "```"]
    return "\n".join(lines)


def fid_of(data):
    from orb.protocol.package import fid_of_package

    return fid_of_package(data)


def vectors_document():
    magic = network_magic(VECTOR_NETWORK)
    vectors = []
    for name, msg, request_id, flags in sample_messages():
        data = encode_frame(magic, msg, request_id, flags, 1)
        vectors.append({
            "name": name, "type": msg.TYPE.name, "request_id": request_id, "flags": flags,
            "hex": data.hex(), "fields": to_json(msg),
        })
    return {
        "network": VECTOR_NETWORK,
        "magic": magic.hex(),
        "vectors": vectors,
        "transcript": [_frame_json(label, data) for label, data in handshake_transcript()],
        "package": package_vector(),
        "canonical_json": jcs_vector(),
        "statements": statements_vector(),
        "deploy_statement": deploy_vector(),
        "tokens": tokens_vector(),
        "secret": secret_vector(),
        "names": names_vector(),
    }


def _hexdump(hex_string, width=32):
    return "\n".join(hex_string[i : i + width * 2] for i in range(0, len(hex_string), width * 2))


WRAP = 64


def _fields_text(fields):
    """Every field in full: long strings wrapped at 64 characters, list items one per line."""
    out = []
    for key, value in fields.items():
        if isinstance(value, list) and value and not all(isinstance(v, int) for v in value):
            out.append(f"    {key} = [")
            for item in value:
                out.append(f"      {json.dumps(item, separators=(',', ':'))}")
            out.append("    ]")
            continue
        text = json.dumps(value, separators=(",", ":"))
        if isinstance(value, str) and len(text) > WRAP + 2:
            out.append(f"    {key} =")
            for i in range(0, len(value), WRAP):
                out.append(f"      {value[i : i + WRAP]}")
            continue
        out.append(f"    {key} = {text}")
    return "\n".join(out)


def vectors_markdown(doc):
    parts = [
        f"Network `{doc['network']}`, magic `{doc['magic']}`. Each frame is given in hex "
        "(header and body), followed by every decoded field in full, in the JSON form of "
        "Appendix A.1 (bytes in hex, u64 values as decimal strings). A string value longer than "
        "64 characters is printed unquoted on the lines that follow its name, 64 characters a "
        "line: join those lines, without spaces, to get the value. Items of a list of records "
        "are printed one per line.",
    ]
    for v in doc["vectors"]:
        parts.append(
            f"**{v['type']}** (request_id {v['request_id']}, flags 0x{v['flags']:04x}, "
            f"{len(v['hex']) // 2} bytes)\n\n```\n{_hexdump(v['hex'])}\n\n{_fields_text(v['fields'])}\n```"
        )
    return "\n\n".join(parts)


def transcript_markdown(doc):
    parts = [
        "A peer (initiator) opens a session to a tracker on network "
        f"`{doc['network']}`. Keys are those of Appendix A; nonces and request ids come from a "
        "seeded generator; fields are printed as in Appendix A.2. The frames are listed in the order "
        "each side sends them. The two directions run concurrently: the peer's frames 5 and 6 may "
        "leave before frames 3 and 4 arrive, and frame 7 follows whenever the PING arrives.",
    ]
    for i, step in enumerate(doc["transcript"], 1):
        parts.append(
            f"{i}. {step['direction']}: **{step['type']}** (request_id {step['request_id']}, "
            f"flags 0x{step['flags']:04x})\n\n```\n{_hexdump(step['hex'])}\n\n{_fields_text(step['fields'])}\n```"
        )
    return "\n\n".join(parts)


def _code_or_empty(text):
    return f"`{text}`" if text else "(empty)"


def package_markdown(doc):
    pkg = doc["package"]
    lines = [
        "A directory holding `main.py` (executable) and `" + PACKAGE_LONG_DIR + "/zero.txt` (a path "
        "of more than 100 bytes), and a manifest whose canonical JSON (Section 2.7), the bytes of the "
        "`orb-manifest.json` entry, is this UTF-8 text (JCS leaves the non-ASCII characters unescaped):",
        "",
        "```",
        next(bytes.fromhex(e["data"]) for e in pkg["entries"] if e["path"] == "orb-manifest.json").decode("utf-8"),
        "```",
        "",
        "The entries in archive order (sorted by the UTF-8 bytes of their paths), with the ustar "
        "`prefix`/`name` split and the data in hex:",
        "",
        "| Path | Mode | prefix | name | Data (hex) |",
        "|---|---|---|---|---|",
    ]
    for e in pkg["entries"]:
        lines.append(
            f"| `{e['path']}` | {e['mode']} | {_code_or_empty(e['ustar_prefix'])} | `{e['ustar_name']}` | `{e['data']}` |"
        )
    lines += [
        "",
        f"The canonical package, {len(pkg['hex']) // 2} bytes (three header-and-data pairs and the two "
        "zero blocks), in hex, 32 bytes a line:",
        "",
        "```",
        _hexdump(pkg["hex"]),
        "```",
        "",
        "```",
        f"SHA-256(package) = {pkg['sha256']}",
        f"fid-bytes        = {pkg['fid_bytes']}",
        f"fid              = {pkg['fid']}",
        "```",
    ]
    return "\n".join(lines)


# --- the RFC file ------------------------------------------------------------------

_BLOCK = re.compile(r"(<!-- (layout|registry):([A-Za-z_-]+) -->\n)(.*?)(<!-- /\2 -->)", re.S)
_SINGLE = re.compile(r"(<!-- (vectors|transcript|package|jcs|statements|deploy|tokens|secret|names) -->\n)(.*?)(<!-- /\2 -->)", re.S)
_SINGLE_RENDER = {"vectors": lambda doc: vectors_markdown(doc), "transcript": lambda doc: transcript_markdown(doc),
                  "package": lambda doc: package_markdown(doc), "jcs": lambda doc: jcs_markdown(doc),
                  "statements": lambda doc: statements_markdown(doc), "deploy": lambda doc: deploy_markdown(doc),
                  "tokens": lambda doc: tokens_markdown(doc), "secret": lambda doc: secret_markdown(doc),
                  "names": lambda doc: names_markdown(doc)}


def render(text, doc):
    """The RFC text with every generated block replaced by its current content."""

    def block(match):
        kind, name = match.group(2), match.group(3)
        body = layout(name) if kind == "layout" else registry(name)
        return f"{match.group(1)}{body}\n{match.group(5)}"

    def single(match):
        body = _SINGLE_RENDER[match.group(2)](doc)
        return f"{match.group(1)}{body}\n{match.group(4)}"

    return _SINGLE.sub(single, _BLOCK.sub(block, text))


def markers(text):
    """The set of generated blocks present in the RFC, e.g. {('layout', 'HELLO'), ...}."""
    found = {(mt.group(2), mt.group(3)) for mt in _BLOCK.finditer(text)}
    found |= {(mt.group(2), None) for mt in _SINGLE.finditer(text)}
    return found


def main(argv):
    if len(argv) != 2 or argv[1] not in ("update", "check"):
        print(__doc__, file=sys.stderr)
        return 2
    doc = vectors_document()
    vectors_text = json.dumps(doc, indent=1) + "\n"
    with open(RFC_PATH) as f:
        rfc = f.read()
    new_rfc = render(rfc, doc)
    if argv[1] == "update":
        with open(RFC_PATH, "w") as f:
            f.write(new_rfc)
        os.makedirs(os.path.dirname(VECTORS_PATH), exist_ok=True)
        with open(VECTORS_PATH, "w") as f:
            f.write(vectors_text)
        return 0
    stale = []
    if new_rfc != rfc:
        stale.append(RFC_PATH)
    if not os.path.exists(VECTORS_PATH) or open(VECTORS_PATH).read() != vectors_text:
        stale.append(VECTORS_PATH)
    for path in stale:
        print(f"stale: {path} (run python -m orb.protocol.spec update)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
