# -*- test-case-name: tests.test_dns -*-
"""
The names of the ``.orb`` zone (RFC 9.9), parsed without I/O.

    orb                       the apex: SOA, NS
    seed.orb                  live trackers (A/AAAA, SRV)
    _orb._tcp.seed.orb        the same SRV, in RFC 2782 form
    <fid>.orb                 a function: A/AAAA of gateways, TXT
    _orb._tcp.<fid>.orb       a function's direct replicas (SRV)
    <node>.peer.orb           a peer's addresses (an SRV target)
    <node>.tracker.orb        a tracker's addresses (an SRV target)
    <name>.<owner>.orb        a named function: CNAME to the <fid>.orb it serves (RFC 9.3)
    _orb._tcp.<name>.<owner>.orb   CNAME to _orb._tcp.<fid>.orb
    <owner>.orb               exists only because names exist below it (NODATA)

``<fid>`` is the fid's text (RFC 9.1); ``<node>`` is the 32-byte node id in
lowercase unpadded base32 (52 characters, one label); ``<owner>`` is the
owner label of RFC 9.3 (the same base32 of 20 bytes of a hash of the owner
key: 32 characters).  Names are matched case-insensitively (RFC 4343).
"""

import base64
import enum
import functools
import re

import attrs

from orb.protocol import fid as fidmod
from orb.protocol.names import is_owner_label  # noqa: F401 (part of this module's interface: the gateway uses it)

ZONE = "orb"
SERVICE_LABELS = ("_orb", "_tcp")
KEY_B32_CHARS = 52  # 32 bytes in unpadded base32
_B32_RE = re.compile(r"[a-z2-7]+\Z")
_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")


class Kind(enum.Enum):
    APEX = "apex"
    SEED = "seed"
    SEED_SRV = "seed-srv"
    FUNCTION = "function"
    FUNCTION_SRV = "function-srv"
    PEER = "peer"
    TRACKER = "tracker"
    NAMED = "named"
    NAMED_SRV = "named-srv"
    EMPTY = "empty"  # a name that exists only because names exist below it (peer.orb, _tcp.<fid>.orb)
    MALFORMED = "malformed"  # in the zone, but no name of ours: NXDOMAIN
    OUTSIDE = "outside"  # not in .orb: REFUSED, or forwarded


@attrs.frozen
class Name:
    kind: Kind
    fid: str | None = None  # FUNCTION, FUNCTION_SRV, and EMPTY under a fid
    node_id: bytes | None = None  # PEER, TRACKER
    owner: str | None = None  # NAMED, NAMED_SRV: the owner label (RFC 9.3)
    label: str | None = None  # NAMED, NAMED_SRV: the function's name


def key_label(raw: bytes) -> str:
    """A node id or owner key as one DNS label."""
    return base64.b32encode(raw).decode("ascii").lower().rstrip("=")


def key_from_label(label: str) -> bytes | None:
    """The 32 bytes a label names, or None when it is not a canonical key label."""
    if len(label) != KEY_B32_CHARS or not _B32_RE.match(label):
        return None
    try:
        raw = base64.b32decode(label.upper() + "====")
    except ValueError:
        return None
    return raw if key_label(raw) == label else None


def named_name(name: str, owner_label: str) -> str:
    return f"{name}.{owner_label}.{ZONE}"


def _fid(label: str) -> str | None:
    try:
        fidmod.check(fidmod.from_text(label))
    except fidmod.FidError:
        return None
    return label


def peer_name(node_id: bytes) -> str:
    return f"{key_label(node_id)}.peer.{ZONE}"


def tracker_name(node_id: bytes) -> str:
    return f"{key_label(node_id)}.tracker.{ZONE}"


def function_name(fid: str) -> str:
    return f"{fid}.{ZONE}"


def srv_name(fid: str) -> str:
    return f"_orb._tcp.{fid}.{ZONE}"


@functools.lru_cache(maxsize=4096)  # bounded; a fid label costs a base32 round trip to check
def classify(name) -> Name:
    """What ``name`` (bytes or str, any case, with or without the final dot) is in the zone."""
    if isinstance(name, bytes):
        try:
            name = name.decode("ascii")
        except UnicodeDecodeError:
            return Name(Kind.MALFORMED) if name.lower().rstrip(b".").endswith(b".orb") else Name(Kind.OUTSIDE)
    labels = name.lower().rstrip(".").split(".") if name.strip(".") else []
    if not labels or labels[-1] != ZONE:
        return Name(Kind.OUTSIDE)
    inner = labels[:-1]
    if not inner:
        return Name(Kind.APEX)
    if inner == ["seed"]:
        return Name(Kind.SEED)
    if inner == ["_orb", "_tcp", "seed"]:
        return Name(Kind.SEED_SRV)
    if inner in (["peer"], ["tracker"], ["_tcp", "seed"]):
        return Name(Kind.EMPTY)
    if len(inner) == 1:
        if is_owner_label(inner[0]):
            return Name(Kind.EMPTY)  # names exist below it
        fid = _fid(inner[0])
        return Name(Kind.FUNCTION, fid=fid) if fid else Name(Kind.MALFORMED)
    if len(inner) == 3 and inner[:2] == list(SERVICE_LABELS):
        fid = _fid(inner[2])
        return Name(Kind.FUNCTION_SRV, fid=fid) if fid else Name(Kind.MALFORMED)
    if len(inner) == 2 and inner[0] == "_tcp":
        fid = _fid(inner[1])
        return Name(Kind.EMPTY, fid=fid) if fid else Name(Kind.MALFORMED)
    if len(inner) == 2 and inner[1] in ("peer", "tracker"):
        node_id = key_from_label(inner[0])
        if node_id is None:
            return Name(Kind.MALFORMED)
        return Name(Kind.PEER if inner[1] == "peer" else Kind.TRACKER, node_id=node_id)
    if len(inner) == 2:
        if is_owner_label(inner[1]) and _LABEL_RE.match(inner[0]):
            return Name(Kind.NAMED, owner=inner[1], label=inner[0])
    if len(inner) == 3 and inner[0] == "_tcp" and is_owner_label(inner[2]) and _LABEL_RE.match(inner[1]):
        return Name(Kind.EMPTY, owner=inner[2], label=inner[1])
    if len(inner) == 4 and inner[:2] == list(SERVICE_LABELS) and is_owner_label(inner[3]) and _LABEL_RE.match(inner[2]):
        return Name(Kind.NAMED_SRV, owner=inner[3], label=inner[2])
    return Name(Kind.MALFORMED)
