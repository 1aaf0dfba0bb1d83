# -*- test-case-name: tests.test_names -*-
"""
Names, updates and deprecation (RFC 9.3, 9.10): pure helpers, no I/O.

- ``owner_label(key)``: the DNS label of an owner key, 32 characters.
- ``check_name(text)``: a name under an owner is one DNS label.
- ``make_name`` / ``make_deprecate``: a NAME or DEPRECATE signed by an owner
  key (anything with ``public_bytes`` and ``sign``: ``orb.identity.NodeKey``).
- ``check_name_record`` / ``check_deprecate``: what every receiver checks of
  a statement before it looks at what it holds (signature, name, successor);
  they raise ``StatementError`` with the error code to answer.
"""

import base64
import functools
import hashlib
import re

import attrs

from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode

OWNER_DOMAIN = b"ORB-OWNER-v1\x00"
OWNER_LABEL_BYTES = 20  # 160 bits of SHA-256: 32 base32 characters
OWNER_LABEL_CHARS = 32
MAX_SEQ = (1 << 63) - 1  # a seq must fit SQLite's signed INTEGER, as every registry seq (RFC 8.6)
MAX_SUNSET = (1 << 53) - 1  # Unix seconds, a JSON number in the registry record (RFC 8.6)
_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
_OWNER_LABEL_RE = re.compile(r"[a-z2-7]{32}\Z")


class StatementError(ValueError):
    """An owner statement that a receiver refuses: ``code`` is the ErrorCode to answer with."""

    def __init__(self, code, text):
        super().__init__(text)
        self.code = ErrorCode(code)
        self.text = text


def owner_label(owner_key: bytes) -> str:
    """The DNS label of an owner key: lowercase unpadded base32 of the first 20 bytes of
    SHA-256("ORB-OWNER-v1" || 0x00 || key), 32 characters (RFC 9.3)."""
    if not isinstance(owner_key, (bytes, bytearray)) or len(owner_key) != m.PUBLIC_KEY_BYTES:
        raise ValueError("an owner key is 32 bytes")
    return _owner_label(bytes(owner_key))


@functools.lru_cache(maxsize=4096)  # bounded; asked on every routed call (is the fid gone?)
def _owner_label(owner_key):
    digest = hashlib.sha256(OWNER_DOMAIN + owner_key).digest()[:OWNER_LABEL_BYTES]
    return base64.b32encode(digest).decode("ascii").lower()


def is_owner_label(text) -> bool:
    """True when ``text`` has the form of an owner label (32 lowercase base32 characters)."""
    return isinstance(text, str) and bool(_OWNER_LABEL_RE.match(text))


def check_name(text) -> str:
    """``text`` when it is a valid name (one lowercase DNS label: a-z, 0-9 and hyphen, 1..63
    characters, no hyphen first or last); else ValueError."""
    if not isinstance(text, str) or not _NAME_RE.match(text):
        raise ValueError(f"{str(text)[:80]!r} is not a name: 1..63 of a-z 0-9 and -, not starting or ending with -")
    return text


def _fid_raw(fid) -> bytes:
    return fidmod.check(fidmod.from_text(fid) if isinstance(fid, str) else bytes(fid))


def _successor_raw(successor) -> bytes:
    return b"" if not successor else _fid_raw(successor)


def make_name(key, name, seq, fid, deprecated=False, successor=b"", sunset=0) -> m.Name:
    """A NAME for ``name`` -> ``fid`` (raw or text), signed by the owner ``key``."""
    record = m.Name(owner_key=key.public_bytes, name=check_name(name), seq=seq, fid=_fid_raw(fid),
                    deprecated=int(bool(deprecated)), successor=_successor_raw(successor), sunset=sunset,
                    signature=b"\0" * 64)
    return attrs.evolve(record, signature=key.sign(record.signed_bytes()))


def make_deprecate(key, fid, seq, deprecated=True, successor=b"", sunset=0) -> m.Deprecate:
    """A DEPRECATE of ``fid`` (raw or text), signed by the owner ``key``; ``deprecated=False``
    undeprecates it."""
    record = m.Deprecate(owner_key=key.public_bytes, fid=_fid_raw(fid), seq=seq, deprecated=int(bool(deprecated)),
                         successor=_successor_raw(successor), sunset=sunset, signature=b"\0" * 64)
    return attrs.evolve(record, signature=key.sign(record.signed_bytes()))


def verify_signature(record) -> bool:
    """True when ``record`` (a NAME or DEPRECATE) is signed by its ``owner_key``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(record.owner_key).verify(record.signature, record.signed_bytes())
    except (InvalidSignature, ValueError):
        return False
    return True


def _check_common(record, what):
    if not verify_signature(record):
        raise StatementError(ErrorCode.DENIED, f"{what}: not signed by its owner_key")
    if not 1 <= record.seq <= MAX_SEQ:
        raise StatementError(ErrorCode.INVALID, f"{what}: seq must be 1..2^63-1")
    try:
        fidmod.check(record.fid)
    except fidmod.FidError:
        raise StatementError(ErrorCode.INVALID, f"{what}: fid is not a fid") from None
    if record.successor:
        try:
            fidmod.check(record.successor)
        except fidmod.FidError:
            raise StatementError(ErrorCode.INVALID, f"{what}: successor is not a fid") from None
        if record.successor == record.fid:
            raise StatementError(ErrorCode.INVALID, f"{what}: a fid cannot succeed itself")
    if record.sunset > MAX_SUNSET:
        raise StatementError(ErrorCode.INVALID, f"{what}: sunset must be 0..2^53-1")
    if not record.deprecated and (record.successor or record.sunset):
        raise StatementError(ErrorCode.INVALID, f"{what}: successor and sunset need deprecated = 1")


def check_name_record(record: m.Name) -> m.Name:
    """Raise StatementError unless the NAME is well formed and signed by its owner_key (RFC 9.10)."""
    _check_common(record, "NAME")
    try:
        check_name(record.name)
    except ValueError as e:
        raise StatementError(ErrorCode.INVALID, str(e)) from None
    return record


def check_deprecate(record: m.Deprecate) -> m.Deprecate:
    """Raise StatementError unless the DEPRECATE is well formed and signed by its owner_key (RFC 9.10)."""
    _check_common(record, "DEPRECATE")
    return record


def is_gone(sunset: int, now: float) -> bool:
    """A deprecated fid is gone once the clock reaches its sunset (0: never)."""
    return 0 < sunset <= now
