# -*- test-case-name: tests.test_token -*-
"""
Capability tokens (RFC 9.11): who may call a private function.

Pure: bytes in, a verdict out; no clock (the caller passes ``now``), no
registry (the caller passes ``revoked`` and ``name_fids`` look-ups).

A token is a version byte and a chain of 1..MAX_LINKS links.  The root link
names its issuer (the function's owner); every later link is issued by the
previous link's holder key, so it does not repeat the key::

    token        = version u8 (1) | root | delegated*
    root         = issuer_key[32] | body
    delegated    = body
    body         = scope_kind u8 (0 fid, 1 name) | scope_len u8 | scope bytes
                   | holder_kind u8 (0 bearer, 1 key) | holder_key[32] (key only)
                   | not_after u64 (unix s) | flags u8 (bit 0 delegable) | signature[64]

A link's signature is its issuer's Ed25519 signature of
``b"ORB-TOKEN-v1\\0" || previous link's signature (absent for the root) ||
version || the link's bytes up to its signature``; its id is the first 16
bytes of SHA-256 of those signed bytes.  The text form (``Authorization:
Bearer``) is unpadded base64url.
"""

import base64
import binascii
import hashlib
import struct

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from orb.protocol import fid as fidmod

VERSION = 1
DOMAIN = b"ORB-TOKEN-v1\x00"
MAX_LINKS = 4
KEY_BYTES = 32
SIG_BYTES = 64
ID_BYTES = 16
MAX_SCOPE_BYTES = 255
MAX_TOKEN_BYTES = 1 + KEY_BYTES + MAX_LINKS * (3 + MAX_SCOPE_BYTES + 1 + KEY_BYTES + 8 + 1 + SIG_BYTES)
MAX_TOKEN_TEXT = (MAX_TOKEN_BYTES * 4 + 2) // 3
SCOPE_FID, SCOPE_NAME = 0, 1
HOLDER_BEARER, HOLDER_KEY = 0, 1
FLAG_DELEGABLE = 0x01
OWNER_DOMAIN = b"ORB-OWNER-v1\x00"
_U64 = struct.Struct(">Q")

# Why a call is refused (the gateway's JSON ``code``, the RESULT ``denied`` log's first word).
REQUIRED = "token_required"  # a private function and no token: HTTP 401
MALFORMED = "token_malformed"  # not a token at all
FORGED = "token_forged"  # a signature does not verify, or the root is not the function's owner
WIDENED = "token_widened"  # a delegation widens its parent (scope, expiry, a bearer or non-delegable parent)
EXPIRED = "token_expired"
SCOPE = "token_scope"  # the token is for another function
REVOKED = "token_revoked"
CALLER = "token_caller"  # bound to another key than the caller's
REASONS = (REQUIRED, MALFORMED, FORGED, WIDENED, EXPIRED, SCOPE, REVOKED, CALLER)


class TokenError(Exception):
    """A call refused for its token: ``code`` is "missing" (HTTP 401) or "denied" (403); ``reason`` one of
    REASONS; ``text`` says what a person can do about it."""

    def __init__(self, reason, text):
        super().__init__(f"{reason}: {text}")
        self.reason = reason
        self.code = "missing" if reason == REQUIRED else "denied"
        self.text = text


def owner_label(owner_key):
    """The DNS label of an owner key (RFC 9.10): base32 of SHA-256(ORB-OWNER-v1\\0 || key)[:20], lowercase."""
    try:
        from orb.protocol.names import owner_label as shared
    except ImportError:  # names.py comes with the NAME work; the rule is the same
        digest = hashlib.sha256(OWNER_DOMAIN + owner_key).digest()[:20]
        return base64.b32encode(digest).decode("ascii").lower().rstrip("=")
    return shared(owner_key)


@attrs.frozen
class Link:
    """One link of a chain. ``issuer`` is explicit on the root, the parent's holder otherwise."""

    issuer: bytes
    scope_kind: int
    scope: bytes
    holder: bytes | None  # None: bearer
    not_after: int
    delegable: bool
    signature: bytes = b""
    root: bool = True

    def body(self):
        """The link's bytes up to its signature."""
        head = self.issuer if self.root else b""
        holder = b"\x00" if self.holder is None else b"\x01" + self.holder
        return b"".join([head, bytes([self.scope_kind, len(self.scope)]), self.scope, holder,
                         _U64.pack(self.not_after), bytes([FLAG_DELEGABLE if self.delegable else 0])])

    def encode(self):
        return self.body() + self.signature

    def signed_bytes(self, previous_sig=b""):
        return DOMAIN + previous_sig + bytes([VERSION]) + self.body()

    @property
    def scope_text(self):
        """The scope as a person writes it: the fid text, or ``name.owner_label``."""
        if self.scope_kind == SCOPE_FID:
            try:
                return fidmod.to_text(self.scope)
            except fidmod.FidError:
                return self.scope.hex()
        return self.scope.decode("utf-8", "replace")


@attrs.frozen
class Token:
    links: tuple

    def encode(self):
        return bytes([VERSION]) + b"".join(link.encode() for link in self.links)

    def text(self):
        return to_text(self.encode())

    def link_ids(self):
        """The id of every link, root first."""
        ids, previous = [], b""
        for link in self.links:
            ids.append(hashlib.sha256(link.signed_bytes(previous)).digest()[:ID_BYTES])
            previous = link.signature
        return ids

    @property
    def id(self):
        """The token's id: its last link's (what ``orb revoke`` names)."""
        return self.link_ids()[-1]

    @property
    def root_issuer(self):
        return self.links[0].issuer

    @property
    def last(self):
        return self.links[-1]

    def issuers(self):
        """Each link's issuer key: the root's own, then each parent's holder."""
        out = [self.links[0].issuer]
        for parent in self.links[:-1]:
            out.append(parent.holder)
        return out


# --- text form ------------------------------------------------------------------------------------


def to_text(data):
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def from_text(text):
    """The bytes of a token's text form; TokenError(token_malformed) for anything else."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise TokenError(MALFORMED, "a token is unpadded base64url text") from None
    text = text.strip()
    if not text or len(text) > MAX_TOKEN_TEXT or text.strip("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                                             "0123456789-_"):
        raise TokenError(MALFORMED, "a token is unpadded base64url text")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError(MALFORMED, "a token is unpadded base64url text") from None


# --- decoding -------------------------------------------------------------------------------------


def decode(data):
    """A Token from its bytes; TokenError(token_malformed) on anything else (no signature is checked)."""
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise TokenError(MALFORMED, "empty token")
    if len(data) > MAX_TOKEN_BYTES:
        raise TokenError(MALFORMED, f"a token has at most {MAX_TOKEN_BYTES} bytes")
    if data[0] != VERSION:
        raise TokenError(MALFORMED, f"token version {data[0]} is not {VERSION}")
    view = memoryview(bytes(data))
    offset = 1
    links = []
    while offset < len(view):
        if len(links) == MAX_LINKS:
            raise TokenError(MALFORMED, f"a chain has at most {MAX_LINKS} links")
        root = not links
        link, offset = _decode_link(view, offset, root, links[-1].holder if links else None)
        links.append(link)
    if not links:
        raise TokenError(MALFORMED, "a token has at least one link")
    return Token(tuple(links))


def _take(view, offset, n):
    if len(view) - offset < n:
        raise TokenError(MALFORMED, "truncated token")
    return bytes(view[offset : offset + n]), offset + n


def _decode_link(view, offset, root, parent_holder):
    issuer = parent_holder
    if root:
        issuer, offset = _take(view, offset, KEY_BYTES)
    head, offset = _take(view, offset, 2)
    scope_kind, scope_len = head
    if scope_kind not in (SCOPE_FID, SCOPE_NAME):
        raise TokenError(MALFORMED, f"unknown scope kind {scope_kind}")
    scope, offset = _take(view, offset, scope_len)
    if scope_kind == SCOPE_FID:
        try:
            fidmod.check(scope)
        except fidmod.FidError:
            raise TokenError(MALFORMED, "the scope is not a fid") from None
    else:
        try:
            check_name_scope(scope.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise TokenError(MALFORMED, "the scope is not name.owner") from None
    kind, offset = _take(view, offset, 1)
    holder = None
    if kind[0] == HOLDER_KEY:
        holder, offset = _take(view, offset, KEY_BYTES)
    elif kind[0] != HOLDER_BEARER:
        raise TokenError(MALFORMED, f"unknown holder kind {kind[0]}")
    raw, offset = _take(view, offset, 8)
    (not_after,) = _U64.unpack(raw)
    flags, offset = _take(view, offset, 1)
    if flags[0] & ~FLAG_DELEGABLE:
        raise TokenError(MALFORMED, f"unknown flags 0x{flags[0]:02x}")
    signature, offset = _take(view, offset, SIG_BYTES)
    if issuer is None:
        # the parent is a bearer link: nothing can sign under it (a widening; signatures cannot be checked)
        raise TokenError(WIDENED, "a bearer link cannot be delegated (only the last link may be bearer)")
    return Link(issuer, scope_kind, scope, holder, not_after, bool(flags[0] & FLAG_DELEGABLE), signature,
                root), offset


def check_name_scope(text):
    """``name.owner_label``: a name label, a dot, a 32-character owner label; ValueError otherwise."""
    name, dot, label = text.rpartition(".")
    if not dot or len(label) != 32 or not all(c in "abcdefghijklmnopqrstuvwxyz234567" for c in label):
        raise ValueError("a name scope is <name>.<owner label>")
    if not name or len(name) > 63 or not all(c.isascii() and (c.isalnum() or c == "-") for c in name) \
            or name != name.lower() or name.startswith("-") or name.endswith("-"):
        raise ValueError("a name is 1..63 lowercase letters, digits and hyphens")
    return text


def name_scope(name, owner_key):
    return check_name_scope(f"{name}.{owner_label(owner_key)}").encode("ascii")


# --- issuing ---------------------------------------------------------------------------------------


def issue(signer, issuer_key, scope_kind, scope, holder, not_after, delegable=False):
    """A root token signed by ``signer`` (anything with ``sign(bytes)``) as ``issuer_key``."""
    link = Link(issuer_key, scope_kind, bytes(scope), holder, int(not_after), delegable)
    link = attrs.evolve(link, signature=signer.sign(link.signed_bytes()))
    return Token((link,))


def delegate(parent, signer, scope_kind, scope, holder, not_after, delegable=False):
    """``parent`` with one more link, signed by ``signer`` (the parent's holder); refuses a widening
    (TokenError token_widened) as any checker would."""
    token = Token((*parent.links, Link(parent.last.holder or b"", scope_kind, bytes(scope), holder,
                                       int(not_after), delegable, root=False)))
    _check_shape(token)
    link = token.last
    link = attrs.evolve(link, signature=signer.sign(link.signed_bytes(parent.last.signature)))
    return Token((*parent.links, link))


# --- checking --------------------------------------------------------------------------------------


def _check_shape(token):
    """The chain rules that need no key: each link no wider than its parent."""
    for parent, child in zip(token.links, token.links[1:]):
        if parent.holder is None:
            raise TokenError(WIDENED, "a bearer link cannot be delegated (only the last link may be bearer)")
        if not parent.delegable:
            raise TokenError(WIDENED, "the parent token is not delegable")
        if child.not_after > parent.not_after:
            raise TokenError(WIDENED, "a delegated token cannot outlive its parent")
        same = (child.scope_kind, child.scope) == (parent.scope_kind, parent.scope)
        narrowed = parent.scope_kind == SCOPE_NAME and child.scope_kind == SCOPE_FID
        if not (same or narrowed):
            raise TokenError(WIDENED, f"a delegated token's scope ({child.scope_text}) is not its parent's "
                                      f"({parent.scope_text}) or a fid under it")
    if len(token.links) > MAX_LINKS:
        raise TokenError(WIDENED, f"a chain has at most {MAX_LINKS} links")


def _verify(key, signature, data):
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_signatures(token):
    """TokenError(token_forged) unless every link is signed by its issuer."""
    previous = b""
    for link in token.links:
        if not _verify(link.issuer, link.signature, link.signed_bytes(previous)):
            raise TokenError(FORGED, "a link's signature is not its issuer's")
        previous = link.signature


def check(token, fid_raw, owner_key, caller_key, now, *, revoked=None, name_fids=None):
    """
    Raise TokenError unless ``token`` (bytes or a Token) lets ``caller_key`` call ``fid_raw``, a function
    of ``owner_key``, at unix second ``now``.  ``revoked(link_id, issuer_key) -> bool``: a revocation by
    that key of that link is held.  ``name_fids(scope_text) -> iterable of fid bytes | None``: every fid
    the name has pointed at (None: this node cannot resolve names; then a name scope covers any function
    of the owner whose label it carries).  Returns the Token.
    """
    if not token:
        raise TokenError(REQUIRED, "this function is private: send a capability token (orb grant)")
    if not isinstance(token, Token):
        token = decode(token)
    verify_signatures(token)
    if token.root_issuer != owner_key:
        raise TokenError(FORGED, "the token was not issued by the function's owner")
    _check_shape(token)
    for link in token.links:
        if link.not_after < now:
            raise TokenError(EXPIRED, f"the token expired at {link.not_after} (unix s)")
    for link in token.links:
        if not _covers(link, fid_raw, owner_key, name_fids):
            raise TokenError(SCOPE, f"the token is for {link.scope_text}, not for {_fid_text(fid_raw)}")
    if revoked is not None:
        for link_id, issuer in zip(token.link_ids(), token.issuers()):
            if revoked(link_id, issuer) or (issuer != owner_key and revoked(link_id, owner_key)):
                raise TokenError(REVOKED, f"token {link_id.hex()} is revoked")
    holder = token.last.holder
    if holder is not None and holder != caller_key:
        raise TokenError(CALLER, "the token is bound to another key than the caller's")
    return token


def _fid_text(fid_raw):
    try:
        return fidmod.to_text(fid_raw)
    except fidmod.FidError:
        return "that function"


def _covers(link, fid_raw, owner_key, name_fids):
    if link.scope_kind == SCOPE_FID:
        return link.scope == fid_raw
    text = link.scope.decode("utf-8")
    if text.rpartition(".")[2] != owner_label(owner_key):
        return False
    fids = name_fids(text) if name_fids is not None else None
    if fids is None:
        return True  # no name resolution here: the owner's own name scope covers the owner's functions
    return fid_raw in set(fids)


def describe(token):
    """A JSON-able view of a token (no secrets in it: a token is not one)."""
    if not isinstance(token, Token):
        token = decode(token)
    return {
        "id": token.id.hex(),
        "links": [{"id": link_id.hex(), "issuer": issuer.hex(), "scope": link.scope_text,
                   "holder": link.holder.hex() if link.holder else "bearer", "not_after": link.not_after,
                   "delegable": link.delegable}
                  for link, link_id, issuer in zip(token.links, token.link_ids(), token.issuers())],
        "owner": token.root_issuer.hex(),
        "scope": token.last.scope_text,
        "holder": token.last.holder.hex() if token.last.holder else "bearer",
        "not_after": min(link.not_after for link in token.links),
        "bytes": len(token.encode()),
    }
