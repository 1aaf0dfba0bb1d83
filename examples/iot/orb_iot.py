#!/usr/bin/env python3
# -*- test-case-name: tests.test_iot_client -*-
"""
orb_iot: call an ORB function directly from a small device.

It finds the peers that host a function through DNS (``_orb._tcp.<fid>.orb``
SRV, the targets' A/AAAA records from the additional section), opens TLS 1.3
to the first one with an ephemeral Ed25519 node certificate, runs the ORB
handshake (HELLO / HELLO_ACK), sends one INVOKE and prints the RESULT, falling
back down the SRV list when a peer fails or is busy.

It is written from docs/rfc-orb.md alone, with the Python standard library and
``cryptography`` (for the Ed25519 key and the self-signed certificate): no
Twisted, no ``orb`` package. Section numbers in comments are the RFC's.

    python3 orb_iot.py FID --dns 127.0.0.1:5353 --data '{"a": 1, "b": 2}'
    python3 orb_iot.py FID --peer 127.1.0.1:7401 --network devnet --data ...
"""

import argparse
import base64
import hashlib
import ipaddress
import json
import os
import random
import secrets
import socket
import ssl
import struct
import sys
import tempfile
import time
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

USER_AGENT = "orb-iot/0.1"

# ---------------------------------------------------------------------------------------------
# DNS (RFC 1035, RFC 2782 SRV, RFC 6891 EDNS0): one question, a hand-built message.
# ---------------------------------------------------------------------------------------------

TYPE_A, TYPE_SOA, TYPE_TXT, TYPE_AAAA, TYPE_SRV, TYPE_OPT = 1, 6, 16, 28, 33, 41
CLASS_IN = 1
RCODE_NXDOMAIN = 3
EDNS_PAYLOAD_BYTES = 1232  # the DNS flag day 2020 value: no IP fragmentation
DNS_HEADER = struct.Struct(">HHHHHH")
RR_FIXED = struct.Struct(">HHIH")
MAX_POINTER_HOPS = 32


class DNSError(Exception):
    """The DNS lookup failed (timeout, a bad answer, an error rcode)."""


class NoSuchName(DNSError):
    """NXDOMAIN: the server does not know the name (an unknown fid)."""


@dataclass
class Record:
    name: str
    type: int
    rclass: int
    ttl: int
    data: object  # A/AAAA: address text; SRV: (priority, weight, port, target); TXT: [bytes]; other: raw bytes


@dataclass
class DNSMessage:
    id: int
    flags: int
    questions: list = field(default_factory=list)  # (name, type, class)
    answers: list = field(default_factory=list)
    authority: list = field(default_factory=list)
    additional: list = field(default_factory=list)

    @property
    def rcode(self):
        return self.flags & 0xF

    @property
    def truncated(self):
        return bool(self.flags & 0x0200)

    @property
    def is_response(self):
        return bool(self.flags & 0x8000)


def encode_name(name: str) -> bytes:
    """A domain name as DNS labels (no compression). Raises ValueError for a name DNS cannot carry."""
    out = bytearray()
    for label in name.rstrip(".").split(".") if name.strip(".") else []:
        raw = label.encode("ascii")
        if not 1 <= len(raw) <= 63:
            raise ValueError(f"DNS label of {len(raw)} bytes in {name!r}")
        out += bytes([len(raw)]) + raw
    out += b"\x00"
    if len(out) > 255:
        raise ValueError(f"DNS name longer than 255 bytes: {name!r}")
    return bytes(out)


def build_query(query_id: int, name: str, qtype: int, edns_payload_bytes: int | None = EDNS_PAYLOAD_BYTES) -> bytes:
    """One question, recursion not asked for (the server is the authority), with an EDNS0 OPT record
    announcing ``edns_payload_bytes`` unless it is None."""
    arcount = 1 if edns_payload_bytes else 0
    msg = DNS_HEADER.pack(query_id, 0x0000, 1, 0, 0, arcount) + encode_name(name) + struct.pack(">HH", qtype, CLASS_IN)
    if edns_payload_bytes:
        # root name, TYPE OPT, CLASS = payload size, TTL = ext rcode/version/flags 0, no options
        msg += b"\x00" + RR_FIXED.pack(TYPE_OPT, edns_payload_bytes, 0, 0)
    return msg


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    """The name at ``offset`` (following compression pointers) and the offset after it in place."""
    labels = []
    end = None
    hops = 0
    total = 0
    while True:
        if offset >= len(data):
            raise DNSError("name runs past the end of the message")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data):
                raise DNSError("compression pointer runs past the end of the message")
            hops += 1
            if hops > MAX_POINTER_HOPS:
                raise DNSError("compression pointer loop")
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            continue
        if length & 0xC0:
            raise DNSError(f"unknown label type 0x{length:02x}")
        offset += 1
        if length == 0:
            break
        if offset + length > len(data):
            raise DNSError("label runs past the end of the message")
        total += length + 1
        if total > 255:
            raise DNSError("name longer than 255 bytes")
        labels.append(data[offset:offset + length].decode("ascii", "replace"))
        offset += length
    return ".".join(labels).lower(), (end if end is not None else offset)


def _read_record(data: bytes, offset: int) -> tuple[Record, int]:
    name, offset = _read_name(data, offset)
    if offset + RR_FIXED.size > len(data):
        raise DNSError("record header runs past the end of the message")
    rtype, rclass, ttl, rdlength = RR_FIXED.unpack_from(data, offset)
    offset += RR_FIXED.size
    end = offset + rdlength
    if end > len(data):
        raise DNSError("record data runs past the end of the message")
    rdata = data[offset:end]
    if rtype == TYPE_A:
        if rdlength != 4:
            raise DNSError(f"A record of {rdlength} bytes")
        value = str(ipaddress.IPv4Address(rdata))
    elif rtype == TYPE_AAAA:
        if rdlength != 16:
            raise DNSError(f"AAAA record of {rdlength} bytes")
        value = str(ipaddress.IPv6Address(rdata))
    elif rtype == TYPE_SRV:
        if rdlength < 7:
            raise DNSError(f"SRV record of {rdlength} bytes")
        priority, weight, port = struct.unpack_from(">HHH", data, offset)
        target, after = _read_name(data, offset + 6)
        if after != end:
            raise DNSError("SRV target does not end with its record")
        value = (priority, weight, port, target)
    elif rtype == TYPE_TXT:
        value, at = [], 0
        while at < rdlength:
            n = rdata[at]
            if at + 1 + n > rdlength:
                raise DNSError("TXT string runs past its record")
            value.append(rdata[at + 1:at + 1 + n])
            at += 1 + n
    else:
        value = rdata
    return Record(name, rtype, rclass, ttl, value), end


def parse_message(data: bytes) -> DNSMessage:
    """Decode a whole DNS message; DNSError on anything malformed. A truncated (TC) message is
    decoded only as far as its header and questions: its record sections may be cut."""
    if len(data) < DNS_HEADER.size:
        raise DNSError(f"DNS message of {len(data)} bytes")
    qid, flags, qd, an, ns, ar = DNS_HEADER.unpack_from(data)
    msg = DNSMessage(qid, flags)
    offset = DNS_HEADER.size
    for _ in range(qd):
        name, offset = _read_name(data, offset)
        if offset + 4 > len(data):
            raise DNSError("question runs past the end of the message")
        qtype, qclass = struct.unpack_from(">HH", data, offset)
        offset += 4
        msg.questions.append((name, qtype, qclass))
    if msg.truncated:
        return msg
    for section, count in ((msg.answers, an), (msg.authority, ns), (msg.additional, ar)):
        for _ in range(count):
            record, offset = _read_record(data, offset)
            section.append(record)
    if offset != len(data):
        raise DNSError(f"{len(data) - offset} bytes after the last record")
    return msg


def udp_exchange(server: tuple, query: bytes, timeout_s: float) -> bytes:
    """Send ``query`` over UDP and return the first datagram that comes back from ``server`` with the
    query's id (anything else is dropped, as a stub resolver does against spoofing)."""
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    deadline = time.monotonic() + timeout_s
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect(server)
        s.send(query)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DNSError(f"no DNS answer from {server[0]}:{server[1]} in {timeout_s} s")
            s.settimeout(left)
            try:
                data = s.recv(65535)
            except socket.timeout:
                continue
            except ConnectionRefusedError:
                raise DNSError(f"DNS server {server[0]}:{server[1]} refused (ICMP port unreachable)") from None
            if len(data) >= 2 and data[:2] == query[:2]:
                return data


def tcp_exchange(server: tuple, query: bytes, timeout_s: float) -> bytes:
    """Send ``query`` over TCP with its two-byte length prefix (RFC 1035 4.2.2); return the answer."""
    try:
        with socket.create_connection(server, timeout=timeout_s) as s:
            s.sendall(struct.pack(">H", len(query)) + query)
            (length,) = struct.unpack(">H", _recv_exact(s, 2))
            return _recv_exact(s, length)
    except (OSError, EOFError) as e:
        raise DNSError(f"DNS over TCP to {server[0]}:{server[1]}: {e}") from None


def dns_query(server: tuple, name: str, qtype: int, timeout_s: float = 3.0, udp=udp_exchange, tcp=tcp_exchange):
    """Ask ``server`` one question over UDP, again over TCP if the answer is truncated.
    Returns (DNSMessage, "udp" or "tcp"). NoSuchName on NXDOMAIN, DNSError on other failures."""
    query_id = secrets.randbelow(0x10000)
    query = build_query(query_id, name, qtype)
    transport = "udp"
    response = parse_message(udp(server, query, timeout_s))
    if response.truncated:
        transport = "tcp"
        response = parse_message(tcp(server, query, timeout_s))
    if response.id != query_id or not response.is_response:
        raise DNSError("the answer does not match the query (id or QR bit)")
    if response.questions and response.questions[0][:2] != (name.rstrip(".").lower(), qtype):
        raise DNSError(f"the answer is for another question: {response.questions[0]}")
    if response.rcode == RCODE_NXDOMAIN:
        raise NoSuchName(f"{name}: NXDOMAIN")
    if response.rcode:
        raise DNSError(f"{name}: rcode {response.rcode}")
    return response, transport


@dataclass
class Target:
    host: str  # an IP address
    port: int
    name: str  # the SRV target name, or "HOST:PORT" for --peer
    priority: int = 0
    weight: int = 0
    node_id: bytes | None = None  # the expected node id, when known (RFC 7.5)


def order_srv(records: list, rng=random) -> list:
    """RFC 2782: lowest priority first; within a priority, a weighted random order (weight 0 records
    first in the running sum, so they are picked rarely). Records with target "." are dropped."""
    out = []
    srv = [r.data for r in records if r.type == TYPE_SRV and r.data[3] not in ("", ".")]
    for priority in sorted({s[0] for s in srv}):
        group = sorted((s for s in srv if s[0] == priority), key=lambda s: s[1])
        while group:
            total = sum(s[1] for s in group)
            pick = rng.randint(0, total)
            running = 0
            for i, s in enumerate(group):
                running += s[1]
                if running >= pick:
                    out.append(group.pop(i))
                    break
    return out


def node_id_of_target(target: str) -> bytes | None:
    """The node id an SRV target ``<node>.peer.orb`` names (the .orb zone section of the RFC: ``<node>``
    is the 32-byte node id in lowercase unpadded base32), so that the peer is dialled as that node id
    (7.5) and a hijacked address cannot answer for it. None for any other target name."""
    labels = target.split(".")
    if len(labels) != 3 or labels[1:] != ["peer", "orb"] or len(labels[0]) != 52:
        return None
    try:
        raw = base64.b32decode(labels[0].upper() + "====")
    except ValueError:
        return None
    return raw if len(raw) == 32 else None


def resolve_service(server: tuple, fid_text: str, timeout_s: float = 3.0, query=dns_query, rng=random):
    """The peers that host ``fid_text``, in the order to try them: SRV ``_orb._tcp.<fid>.orb``, each
    target's addresses from the additional section, or from its own A/AAAA query when the server
    sent none. Returns (targets, info) where info says how the lookup went."""
    started = time.perf_counter()
    name = f"_orb._tcp.{fid_text}.orb"
    response, transport = query(server, name, TYPE_SRV, timeout_s)
    addresses: dict[str, list] = {}
    for r in response.additional + response.answers:
        if r.type in (TYPE_A, TYPE_AAAA):
            addresses.setdefault(r.name, []).append(r.data)
    targets = []
    extra_queries = 0
    for priority, weight, port, target in order_srv(response.answers, rng):
        found = addresses.get(target)
        if found is None:
            found = []
            for qtype in (TYPE_A, TYPE_AAAA):
                extra_queries += 1
                try:
                    more, _ = query(server, target, qtype, timeout_s)
                except DNSError:
                    continue
                found += [r.data for r in more.answers if r.type == qtype and r.name == target]
            addresses[target] = found
        node_id = node_id_of_target(target)
        targets += [Target(ip, port, target, priority, weight, node_id) for ip in found]
    info = {"name": name, "transport": transport, "srv_records": sum(1 for r in response.answers if r.type == TYPE_SRV),
            "extra_queries": extra_queries, "ms": (time.perf_counter() - started) * 1000}
    return targets, info


# ---------------------------------------------------------------------------------------------
# Identity and TLS (RFC section 7)
# ---------------------------------------------------------------------------------------------


class NodeKey:
    """An ephemeral Ed25519 node key and its self-signed certificate (7.1, 7.2)."""

    def __init__(self, private_key=None):
        self.private_key = private_key or ed25519.Ed25519PrivateKey.generate()
        self.public_bytes = self.private_key.public_key().public_bytes(serialization.Encoding.Raw,
                                                                       serialization.PublicFormat.Raw)
        self.node_id = hashlib.sha256(self.public_bytes).digest()

    def certificate_pem(self, now=None) -> bytes:
        now = now or time.time()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "orb-" + self.node_id.hex()[:32])])
        from datetime import datetime, timedelta, timezone

        created = datetime.fromtimestamp(now, timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.private_key.public_key())
            .serial_number(int.from_bytes(self.node_id[:16], "big") >> 1 or 1)
            .not_valid_before(created - timedelta(days=1))
            .not_valid_after(created + timedelta(days=3650))
            .sign(self.private_key, None)
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())


def tls_context(key: NodeKey) -> ssl.SSLContext:
    """TLS 1.3 only, no tickets, no compression; present our certificate; accept any server
    certificate at the TLS layer: identity is the binding of 7.3, checked after HELLO_ACK."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.options |= ssl.OP_NO_TICKET | ssl.OP_NO_COMPRESSION
    # ssl loads a key only from a file: write both to a private temporary directory, then remove it.
    with tempfile.TemporaryDirectory(prefix="orb-iot-") as tmp:
        path = os.path.join(tmp, "node.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.key_pem() + key.certificate_pem())
        ctx.load_cert_chain(path)
    return ctx


def certificate_key(der: bytes) -> bytes | None:
    """The raw Ed25519 public key of a DER certificate, or None if it carries another kind of key."""
    try:
        public = x509.load_der_x509_certificate(der).public_key()
    except ValueError:
        return None
    if not isinstance(public, ed25519.Ed25519PublicKey):
        return None
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# ---------------------------------------------------------------------------------------------
# Framing and messages (RFC sections 4, 5, 11)
# ---------------------------------------------------------------------------------------------

HEADER = struct.Struct(">4sBBHII")  # magic, version, type, flags, request_id, length (4.1)
HELLO_FIXED = struct.Struct(">32s32sBQQQ16sH")  # node_id .. observed (5.2)
ACK_FIXED = struct.Struct(">B32s32sBQQQ16sH")  # version .. observed (5.3)
RESULT_FIXED = struct.Struct(">BIIII")  # status, queue_us, fetch_us, boot_us, exec_us (5.20)
FLAG_RESPONSE = 0x0001
PROTOCOL_VERSION = 1
PRE_READY_MAX_BYTES = 16_384  # 4.4
MAX_FRAME_BYTES = 4 * 1024 * 1024

HELLO, HELLO_ACK, PING, PONG, ERROR = 0x01, 0x02, 0x03, 0x04, 0x07
INVOKE, RESULT, CANCEL = 0x30, 0x31, 0x32

ERROR_CODES = {0x00: "unspecified", 0x01: "malformed", 0x02: "frame_too_large", 0x03: "unexpected",
               0x04: "unsupported", 0x05: "version", 0x06: "identity", 0x07: "self_connection", 0x08: "timeout",
               0x09: "rate_limited", 0x0a: "network", 0x0b: "not_found", 0x0c: "denied", 0x0d: "busy",
               0x0e: "internal", 0x0f: "shutdown", 0x10: "out_of_range", 0x11: "declined", 0x12: "too_large",
               0x13: "invalid"}
CODE = {v: k for k, v in ERROR_CODES.items()}
RESULT_STATUS = ["ok", "error", "timeout", "memory", "killed_by_policy", "output_too_large", "busy", "not_found",
                 "denied", "refused", "internal"]
# ERROR codes after which the remote closes the session (11.2 "closed", and the refusals of 6.3)
SESSION_ENDING = {"malformed", "frame_too_large", "version", "identity", "self_connection", "timeout", "shutdown",
                  "busy", "denied"}
# ERRORs answering the INVOKE that every replica would give alike (10.2: the deadline over the host's
# maximum, the input over its cap): not sent elsewhere.
FINAL_ERRORS = {"out_of_range", "too_large"}
# RESULT statuses that say the call did not start, so another replica may take it (10.1). `internal`
# and `timeout` are not among them: the function may have run, and may not be idempotent.
RETRY_ELSEWHERE = {"busy", "not_found", "refused"}
TLV_NAMES = {0x0001: "padding", 0x0002: "trace_id", 0x0003: "cached", 0x0004: "owner_key", 0x0005: "replica"}


class ProtocolFailure(Exception):
    """The remote broke the protocol; ``code`` is the ERROR code to send it (None: close silently)."""

    def __init__(self, text, code="malformed"):
        super().__init__(text)
        self.code = code


class NoAnswer(Exception):
    """The INVOKE got no answer within its deadline: the call may have run, so it is not retried elsewhere."""


class Refused(Exception):
    """The remote refused the call or the session with an ERROR."""

    def __init__(self, code, text):
        super().__init__(f"ERROR {code}: {text}")
        self.code = code


def network_magic(network: str) -> bytes:
    return hashlib.sha256(b"orb-network:" + network.encode()).digest()[:4]


def ip16(host: str) -> bytes:
    """An address as bytes[16], IPv4 as IPv4-mapped IPv6 (2.4)."""
    ip = ipaddress.ip_address(host)
    if ip.version == 4:
        return b"\x00" * 10 + b"\xff\xff" + ip.packed
    return ip.packed


class Body:
    """Bounded reads from a message body: every read past the end is malformed (2.3, rule 3)."""

    def __init__(self, data: bytes):
        self.data = data
        self.at = 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise ProtocolFailure(f"a field runs past the end of the body ({self.at}+{n} > {len(self.data)})")
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def fixed(self, st: struct.Struct):
        return st.unpack(self.take(st.size))

    def prefixed(self, prefix: str) -> bytes:
        (n,) = struct.unpack(prefix, self.take(struct.calcsize(prefix)))
        return self.take(n)

    def tlvs(self) -> list:
        """The TLV area (12.1): the rest of the body as (type, critical, value) records."""
        out = []
        while self.at < len(self.data):
            t, n = struct.unpack(">HH", self.take(4))
            out.append((t & 0x7FFF, bool(t & 0x8000), self.take(n)))
        return out


def encode_hello(key: NodeKey, observed: tuple, nonce: int, now: int) -> bytes:
    return (HELLO_FIXED.pack(key.node_id, key.public_bytes, 0, 0, now, nonce, ip16(observed[0]), observed[1])
            + bytes([1, PROTOCOL_VERSION])  # versions: array<u8, u8> = [1]
            + bytes([0])  # listen: array<u8, Endpoint> = [] (a device accepts no connections)
            + bytes([len(USER_AGENT)]) + USER_AGENT.encode())


def decode_hello_ack(body: bytes) -> dict:
    b = Body(body)
    version, node_id, public_key, roles, features, timestamp, nonce, ip, port = b.fixed(ACK_FIXED)
    listen = []
    for _ in range(b.take(1)[0]):
        lip, lport = struct.unpack(">16sH", b.take(18))
        listen.append((str(ipaddress.IPv6Address(lip).ipv4_mapped or ipaddress.IPv6Address(lip)), lport))
    if len(listen) > 8:
        raise ProtocolFailure("HELLO_ACK lists more than 8 endpoints")
    agent = b.prefixed(">B")
    if len(agent) > 128:
        raise ProtocolFailure("HELLO_ACK user_agent over 128 bytes")
    try:
        agent_text = agent.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolFailure("HELLO_ACK user_agent is not UTF-8") from None
    return {"version": version, "node_id": node_id, "public_key": public_key, "roles": roles, "features": features,
            "timestamp": timestamp, "listen": listen, "user_agent": agent_text, "ext": b.tlvs()}


def encode_tlvs(ext) -> bytes:
    return b"".join(struct.pack(">HH", t, len(v)) + v for t, v in ext)


def encode_invoke(fid: bytes, deadline_ms: int, data: bytes, token: bytes = b"", ext=()) -> bytes:
    if not 1 <= len(fid) <= 39:
        raise ValueError("a fid is 1..39 bytes")
    return (bytes([len(fid)]) + fid + struct.pack(">I", deadline_ms) + struct.pack(">H", len(token)) + token
            + struct.pack(">I", len(data)) + data + encode_tlvs(ext))


def decode_result(body: bytes) -> dict:
    b = Body(body)
    status, queue_us, fetch_us, boot_us, exec_us = b.fixed(RESULT_FIXED)
    output = b.prefixed(">I")
    log = b.prefixed(">I")
    return {"status": RESULT_STATUS[status] if status < len(RESULT_STATUS) else "internal",
            "queue_us": queue_us, "fetch_us": fetch_us, "boot_us": boot_us, "exec_us": exec_us,
            "output": output, "log": log, "ext": b.tlvs()}


def decode_error(body: bytes) -> tuple:
    b = Body(body)
    code, ref = struct.unpack(">HI", b.take(6))
    text = b.prefixed(">H")
    if len(text) > 1024:
        raise ProtocolFailure("ERROR text over 1024 bytes")
    b.tlvs()
    return ERROR_CODES.get(code, "unspecified"), ref, text.decode("utf-8", "replace")


def encode_error(code: str, ref_request_id: int, text: str) -> bytes:
    raw = text.encode()[:200]
    return struct.pack(">HIH", CODE[code], ref_request_id, len(raw)) + raw


# ---------------------------------------------------------------------------------------------
# One session: connect, handshake, INVOKE, RESULT (RFC sections 6, 7.3, 10.2)
# ---------------------------------------------------------------------------------------------


def _recv_exact(sock, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError(f"connection closed after {len(out)} of {n} bytes")
        out += chunk
    return bytes(out)


class Session:
    """A blocking ORB session as the initiator, over an ``ssl.SSLSocket``."""

    def __init__(self, sock, magic: bytes):
        self.sock = sock
        self.magic = magic
        self.version = PROTOCOL_VERSION
        self.ready = False
        self.closing_sent = False

    def send(self, msg_type: int, body: bytes, request_id: int = 0, flags: int = 0, version=None):
        header = HEADER.pack(self.magic, version or self.version, msg_type, flags, request_id, len(body))
        self.sock.sendall(header + body)

    def read_frame(self):
        """(type, flags, request_id, body) of the next frame; ProtocolFailure on bad framing (4.8)."""
        magic, version, msg_type, flags, request_id, length = HEADER.unpack(_recv_exact(self.sock, HEADER.size))
        if magic != self.magic:
            raise ProtocolFailure(f"wrong network magic {magic.hex()}", code=None)
        limit = MAX_FRAME_BYTES if self.ready else PRE_READY_MAX_BYTES
        if length > limit:
            raise ProtocolFailure(f"frame of {length} bytes over the limit {limit}",
                                  code=None if msg_type == ERROR else "frame_too_large")
        if version != (self.version if self.ready else PROTOCOL_VERSION):
            raise ProtocolFailure(f"frame version {version}", code=None if msg_type == ERROR else "version")
        return msg_type, flags, request_id, _recv_exact(self.sock, length)

    def close(self, code="shutdown", ref_request_id=0, text="done"):
        """Say why (5.8 rule 6), once, then close."""
        if code is not None and not self.closing_sent:
            self.closing_sent = True
            try:
                self.send(ERROR, encode_error(code, ref_request_id, text), version=self.version)
            except OSError:
                pass
        try:
            self.sock.close()
        except OSError:
            pass


def call_peer(target: Target, fid: bytes, data: bytes, deadline_ms: int, network: str, key: NodeKey,
              ctx: ssl.SSLContext, connect_timeout_s: float = 5.0, log=None) -> dict:
    """Call ``fid`` once at ``target``. Returns the RESULT as a dict with the timings of each step;
    raises OSError, EOFError, ProtocolFailure or Refused when this peer did not run the call, NoAnswer
    when it may have."""
    log = log or (lambda *a: None)
    timings = {}
    t0 = time.perf_counter()
    raw = socket.create_connection((target.host, target.port), timeout=connect_timeout_s)
    timings["tcp_ms"] = (time.perf_counter() - t0) * 1000
    try:
        t1 = time.perf_counter()
        sock = ctx.wrap_socket(raw, server_hostname=None)
    except BaseException:
        raw.close()
        raise
    timings["tls_ms"] = (time.perf_counter() - t1) * 1000
    session = Session(sock, network_magic(network))
    try:
        return _run_session(session, target, fid, data, deadline_ms, key, timings, log)
    except ProtocolFailure as e:
        session.close(e.code, 0, str(e))
        raise
    except Refused:
        session.close(None)  # the remote already said why; it is closing or refused the call
        raise
    except NoAnswer:
        session.close("shutdown", 0, "no answer in time")
        raise
    except BaseException:
        session.close("shutdown", 0, "giving up")
        raise


def _run_session(session: Session, target: Target, fid: bytes, data: bytes, deadline_ms: int, key: NodeKey,
                 timings: dict, log) -> dict:
    # 6.3 step 1: HELLO in a version-1 frame, request id 0.
    t2 = time.perf_counter()
    nonce = secrets.randbits(64)
    session.send(HELLO, encode_hello(key, (target.host, target.port), nonce, int(time.time())))
    # 6.3 step 5: HELLO_ACK, or an ERROR refusing the session; anything else is fatal `unexpected`.
    msg_type, flags, request_id, body = session.read_frame()
    if msg_type == ERROR:
        code, _, text = decode_error(body)
        raise Refused(code, text)
    if msg_type != HELLO_ACK:
        raise ProtocolFailure(f"message type 0x{msg_type:02x} before HELLO_ACK", code="unexpected")
    ack = decode_hello_ack(body)
    if ack["version"] != PROTOCOL_VERSION:
        raise ProtocolFailure(f"HELLO_ACK chose version {ack['version']}", code="version")
    if hashlib.sha256(ack["public_key"]).digest() != ack["node_id"]:
        raise ProtocolFailure("HELLO_ACK node_id is not SHA-256(public_key)", code="identity")
    if certificate_key(session.sock.getpeercert(binary_form=True)) != ack["public_key"]:
        raise ProtocolFailure("the TLS certificate key is not HELLO_ACK's public_key", code="identity")
    if ack["node_id"] == key.node_id:
        raise ProtocolFailure("connected to ourselves", code="self_connection")
    if target.node_id is not None and ack["node_id"] != target.node_id:
        raise ProtocolFailure(f"node id {ack['node_id'].hex()} is not the one dialled", code="identity")
    for t, critical, _ in ack["ext"]:
        if critical and t not in TLV_NAMES:
            raise ProtocolFailure(f"unknown critical TLV 0x{t:04x} in HELLO_ACK", code="unsupported")
    session.ready = True
    session.version = ack["version"]
    timings["hello_ms"] = (time.perf_counter() - t2) * 1000
    log(f"session with {ack['node_id'].hex()[:16]} ({ack['user_agent']}) at {target.host}:{target.port}")

    # 10.2: INVOKE as a request; match its RESULT (or an ERROR naming it) by request id (4.6).
    rid = secrets.randbelow(0xFFFFFFFE) + 1
    t3 = time.perf_counter()
    session.send(INVOKE, encode_invoke(fid, deadline_ms, data), request_id=rid)
    # The wait is the call's deadline (0: the host's default; 30 s, the RFC's request timer) plus a margin.
    wait_s = (deadline_ms / 1000 if deadline_ms else 30.0) + 5.0
    session.sock.settimeout(wait_s)
    try:
        while True:
            msg_type, flags, request_id, body = session.read_frame()
            is_response = bool(flags & FLAG_RESPONSE)
            if msg_type == RESULT and is_response and request_id == rid:
                result = decode_result(body)
                unknown = [t for t, critical, _ in result["ext"] if critical and t not in TLV_NAMES]
                if unknown:
                    # 12.1: do not act on it; ERROR about a response is a notification (5.8 rule 3)
                    session.send(ERROR, encode_error("unsupported", 0, f"critical TLV 0x{unknown[0]:04x}"))
                    raise NoAnswer(f"RESULT with an unknown critical TLV 0x{unknown[0]:04x}")
                break
            if msg_type == ERROR:
                code, ref, text = decode_error(body)
                if ref == rid or (not is_response and code in SESSION_ENDING):
                    raise Refused(code, text)
                continue  # about something else: logged nowhere, ignored (5.8 rule 5)
            if msg_type == PING and not is_response and request_id:
                session.send(PONG, body[:8], request_id=request_id, flags=FLAG_RESPONSE)  # same nonce (5.5)
            elif not is_response and request_id:
                # A request of a type this client does not serve (GETADDR, LOOKUP, ...): 6.8.
                session.send(ERROR, encode_error("unsupported", request_id, "a client"), request_id=request_id,
                             flags=FLAG_RESPONSE)
            # notifications (ADDR, ANNOUNCE, ...) and stray responses: ignored
    except socket.timeout:
        session.send(CANCEL, struct.pack(">I", rid))  # 10.5: we no longer want the answer
        raise NoAnswer(f"no RESULT within {wait_s:.0f} s; CANCEL sent") from None
    timings["invoke_ms"] = (time.perf_counter() - t3) * 1000
    result.update(timings)
    result["node_id"] = ack["node_id"].hex()
    result["peer"] = f"{target.host}:{target.port}"
    result["srv_target"] = target.name
    session.close("shutdown", 0, "done")
    return result


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

EXIT_OK, EXIT_USAGE, EXIT_FAILED, EXIT_NO_PEER, EXIT_NO_NAME = 0, 2, 3, 4, 5


def fid_from_text(text: str) -> bytes:
    """A text fid (9.1: lowercase base32 without padding) as its raw bytes."""
    if not 1 <= len(text) <= 63 or text != text.lower() or not set(text) <= set("abcdefghijklmnopqrstuvwxyz234567"):
        raise ValueError(f"not a fid (lowercase base32, 1..63 characters): {text!r}")
    raw = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    if not 1 <= len(raw) <= 39:
        raise ValueError(f"a fid is 1..39 bytes, this is {len(raw)}")
    return raw


def host_port(text: str, default_port: int | None = None) -> tuple:
    """HOST:PORT, [V6]:PORT, or HOST alone with a default port."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    if not port and default_port is None:
        raise ValueError(f"{text!r}: HOST:PORT expected")
    return host, int(port or default_port)


def parse_peer(text: str) -> Target:
    """[NODEID@]HOST:PORT, NODEID being 64 hex digits (then the peer must prove that id, 7.5)."""
    node_id = None
    if "@" in text:
        hex_id, text = text.split("@", 1)
        node_id = bytes.fromhex(hex_id)
        if len(node_id) != 32:
            raise ValueError("a node id is 64 hex digits")
    host, port = host_port(text)
    host = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0]
    return Target(host, port, f"{host}:{port}", node_id=node_id)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="orb_iot.py", description="Call an ORB function directly: DNS SRV, TLS, INVOKE.")
    p.add_argument("fid", help="the function's fid (its DNS label, <fid>.orb)")
    p.add_argument("--dns", metavar="HOST[:PORT]", help="DNS server that serves .orb (a tracker's --dns)")
    p.add_argument("--peer", metavar="[NODEID@]HOST:PORT", action="append", default=[],
                   help="call this peer, skipping DNS (repeatable: tried in order)")
    p.add_argument("--network", default=os.environ.get("ORB_NETWORK", "main"), help="ORB network name (frame magic)")
    p.add_argument("--data", help="input bytes, as text")
    p.add_argument("--input", metavar="FILE", help="read the input from FILE ('-': stdin)")
    p.add_argument("--deadline-ms", type=int, default=10_000, help="the call's time budget (0: the host's default)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds for each DNS query and each TCP connect")
    p.add_argument("--json", action="store_true", help="print one JSON object (output as text) instead")
    p.add_argument("-q", "--quiet", action="store_true", help="no timings on stderr")
    args = p.parse_args(argv)

    def log(line):
        if not args.quiet and not args.json:
            print(line, file=sys.stderr)

    try:
        fid = fid_from_text(args.fid)
        if args.input is not None:
            data = sys.stdin.buffer.read() if args.input == "-" else open(args.input, "rb").read()
        else:
            data = (args.data or "").encode()
        peers = [parse_peer(t) for t in args.peer]
        dns_server = host_port(args.dns, 53) if args.dns else None
    except (ValueError, OSError) as e:
        print(f"orb_iot: {e}", file=sys.stderr)
        return EXIT_USAGE
    if not peers and dns_server is None:
        print("orb_iot: give --dns HOST[:PORT] or --peer HOST:PORT", file=sys.stderr)
        return EXIT_USAGE

    report = {"fid": args.fid, "attempts": []}
    if not peers:
        try:
            peers, info = resolve_service(dns_server, args.fid, args.timeout)
        except NoSuchName as e:
            print(f"orb_iot: no such function: {e}", file=sys.stderr)
            return EXIT_NO_NAME
        except DNSError as e:
            print(f"orb_iot: DNS: {e}", file=sys.stderr)
            return EXIT_NO_PEER
        report["dns"] = info
        log(f"dns     {info['ms']:7.2f} ms  {info['name']} SRV over {info['transport']}: "
            f"{len(peers)} address(es) from {info['srv_records']} record(s)")
        for t in peers:
            log(f"          {t.priority:5d} {t.weight:5d} {t.host}:{t.port} ({t.name})")

    key = NodeKey()
    ctx = tls_context(key)
    result = None
    for target in peers:
        try:
            result = call_peer(target, fid, data, args.deadline_ms, args.network, key, ctx, args.timeout, log)
        except Refused as e:
            report["attempts"].append({"peer": f"{target.host}:{target.port}", "error": str(e)})
            if e.code in FINAL_ERRORS:
                if args.json:
                    print(json.dumps(report))
                print(f"orb_iot: {target.host}:{target.port} refused the call: {e}", file=sys.stderr)
                return EXIT_FAILED
            log(f"peer    {target.host}:{target.port} refused: {e}; next")
            continue
        except (OSError, EOFError, ProtocolFailure) as e:
            why = type(e).__name__
            report["attempts"].append({"peer": f"{target.host}:{target.port}", "error": str(e) or why})
            log(f"peer    {target.host}:{target.port} failed: {str(e) or why}; next")
            continue
        except NoAnswer as e:
            report["attempts"].append({"peer": f"{target.host}:{target.port}", "error": str(e)})
            if args.json:
                print(json.dumps(report))
            print(f"orb_iot: {target.host}:{target.port}: {e} (not retried elsewhere: it may have run)",
                  file=sys.stderr)
            return EXIT_FAILED
        report["attempts"].append({"peer": result["peer"], "status": result["status"]})
        if result["status"] in RETRY_ELSEWHERE:
            log(f"peer    {result['peer']} answered {result['status']}; next")
            result = None
            continue
        break
    if result is None:
        if args.json:
            print(json.dumps(report))
        print(f"orb_iot: no peer could run the call ({len(peers)} tried)", file=sys.stderr)
        return EXIT_NO_PEER

    log(f"peer    {result['peer']}  node {result['node_id'][:16]}  target {result['srv_target']}")
    log(f"timing  tcp {result['tcp_ms']:.2f} ms  tls {result['tls_ms']:.2f} ms  hello {result['hello_ms']:.2f} ms  "
        f"invoke {result['invoke_ms']:.2f} ms")
    log(f"host    queue {result['queue_us'] / 1000:.2f} ms  fetch {result['fetch_us'] / 1000:.2f} ms  "
        f"boot {result['boot_us'] / 1000:.2f} ms  exec {result['exec_us'] / 1000:.2f} ms")
    log(f"status  {result['status']}")
    if args.json:
        doc = {k: v for k, v in result.items() if k not in ("output", "log", "ext")}
        doc.update(report, output=result["output"].decode("utf-8", "replace"),
                   log=result["log"].decode("utf-8", "replace"))
        print(json.dumps(doc))
    else:
        sys.stdout.buffer.write(result["output"])
        if result["output"] and not result["output"].endswith(b"\n"):
            sys.stdout.buffer.write(b"\n")
        sys.stdout.flush()
        if result["status"] != "ok" and result["log"]:
            sys.stderr.buffer.write(result["log"])
    return EXIT_OK if result["status"] == "ok" else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
