# -*- test-case-name: tests.test_secrets_format -*-
"""
Function secrets sealed to chosen hosts (RFC 9.12): the format, no I/O.

An owner attaches secrets (``KEY=value`` pairs) to a function for one host
at a time. The plaintext names the function and the host, so a sealed blob
moved to another function or another host is refused::

    plaintext = "ORB-SECRET-v1" 0x00 || u8 len(fid) || fid || host node id[32] || issued_at u64
                || JCS({"KEY": "value", ...})

It is sealed with a NaCl sealed box (X25519 + XSalsa20-Poly1305, an
ephemeral sender key) to the host's X25519 public key, which is the
birational map of the host's Ed25519 node key (libsodium's
``crypto_sign_ed25519_pk_to_curve25519``); the host opens it with the X25519
private key derived from its Ed25519 seed (``..._sk_to_curve25519``). Only
that host can open it; a tracker that stores and forwards it cannot.

The owner signs the sealed bytes, so no tracker can forge, swap or replay
one onto another (fid, host)::

    signed = "ORB-SECRET-v1" 0x00 || u8 len(fid) || fid || host node id[32] || seq u64 || SHA-256(sealed)

An owner may also seal the map to its own owner key (host = SHA-256 of the
owner key): that *owner copy* is stored like the others, and lets the owner
seal the same secrets to a new host later without keeping them anywhere.

Bounds: at most MAX_SECRETS pairs, and the JCS map at most
MAX_SECRETS_JSON_BYTES; a key is ``[A-Za-z_][A-Za-z0-9_]{0,63}``; a value is
a string.
"""

import hashlib
import re
import struct

from orb.protocol.limits import MAX_FID_BYTES, MAX_SEALED_BYTES, NODE_ID_BYTES, PUBLIC_KEY_BYTES, SIGNATURE_BYTES

DOMAIN = b"ORB-SECRET-v1\x00"
MAX_SECRETS = 32
MAX_SECRETS_JSON_BYTES = 4096
SEAL_OVERHEAD_BYTES = 48  # a sealed box: the 32-byte ephemeral public key and the 16-byte MAC
MAX_PLAINTEXT_BYTES = len(DOMAIN) + 1 + MAX_FID_BYTES + NODE_ID_BYTES + 8 + MAX_SECRETS_JSON_BYTES
assert MAX_SEALED_BYTES == MAX_PLAINTEXT_BYTES + SEAL_OVERHEAD_BYTES  # the wire limit (orb.protocol.limits)
KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_U64 = struct.Struct(">Q")


class SecretError(ValueError):
    """A secret the receiver refuses. ``reason`` names why (one of REASONS)."""

    def __init__(self, reason, text):
        super().__init__(text)
        self.reason = reason
        self.text = text


# Why a secret is refused; the receiver answers with the error code beside it (RFC 9.12).
REASONS = {
    "too_large": "too_large",  # more than MAX_SECRETS pairs, or a map over MAX_SECRETS_JSON_BYTES
    "malformed": "invalid",  # a bad key or value, or a plaintext that does not parse
    "undecryptable": "invalid",  # the sealed box does not open with this host's key
    "wrong_fid": "invalid",  # the plaintext names another function
    "wrong_host": "invalid",  # the plaintext names another host
    "signature": "denied",  # not the owner's signature of these sealed bytes
    "not_owner": "denied",  # signed by a key that is not the function's owner
}


def check_values(values):
    """``values`` (a mapping of str to str) checked against the bounds: its JCS bytes."""
    from orb.protocol.federation import canonical_json

    if not isinstance(values, dict):
        raise SecretError("malformed", "secrets: expected a map of names to values")
    if len(values) > MAX_SECRETS:
        raise SecretError("too_large", f"{len(values)} secrets: at most {MAX_SECRETS} per function and host")
    for key, value in values.items():
        if not isinstance(key, str) or not KEY_RE.match(key):
            raise SecretError("malformed", f"secret name {str(key)[:70]!r}: letters, digits and _, not starting "
                                           "with a digit, at most 64")
        if not isinstance(value, str):
            raise SecretError("malformed", f"secret {key}: the value must be text")
    try:
        data = canonical_json(values)
    except ValueError:
        raise SecretError("malformed", "secrets: a value is not valid Unicode text") from None
    if len(data) > MAX_SECRETS_JSON_BYTES:
        raise SecretError("too_large", f"secrets take {len(data)} bytes as JSON: at most {MAX_SECRETS_JSON_BYTES}")
    return data


def _check_fid_host(fid, host):
    if not isinstance(fid, bytes) or not 1 <= len(fid) <= MAX_FID_BYTES:
        raise ValueError(f"fid must be 1..{MAX_FID_BYTES} bytes")
    if not isinstance(host, bytes) or len(host) != NODE_ID_BYTES:
        raise ValueError(f"host must be a {NODE_ID_BYTES}-byte node id")


def plaintext(fid, host, issued_at, values):
    """The bytes sealed: the domain, the fid, the host's node id, issued_at and the JCS map."""
    _check_fid_host(fid, host)
    return DOMAIN + bytes([len(fid)]) + fid + host + _U64.pack(issued_at) + check_values(values)


def parse_plaintext(data):
    """(fid, host, issued_at, values) of opened plaintext; SecretError('malformed') when it is not one."""
    from orb.protocol.federation import RegistryChangeError, parse_json

    head = len(DOMAIN) + 1
    if len(data) < head or not data.startswith(DOMAIN):
        raise SecretError("malformed", "the opened secret does not start with ORB-SECRET-v1")
    n = data[len(DOMAIN)]
    if not 1 <= n <= MAX_FID_BYTES or len(data) < head + n + NODE_ID_BYTES + 8:
        raise SecretError("malformed", "the opened secret is truncated")
    fid = data[head:head + n]
    host = data[head + n:head + n + NODE_ID_BYTES]
    (issued_at,) = _U64.unpack_from(data, head + n + NODE_ID_BYTES)
    body = data[head + n + NODE_ID_BYTES + 8:]
    if len(body) > MAX_SECRETS_JSON_BYTES:
        raise SecretError("too_large", f"the secrets take {len(body)} bytes: at most {MAX_SECRETS_JSON_BYTES}")
    try:
        values = parse_json(body, MAX_SECRETS_JSON_BYTES, "secrets")
    except RegistryChangeError as e:
        raise SecretError("malformed", str(e)[:200]) from None
    if check_values(values) != body:
        raise SecretError("malformed", "secrets: the map is not in canonical form (JCS)")
    return fid, host, issued_at, values


# --- keys --------------------------------------------------------------------------------


def x25519_public(ed25519_public):
    """A host's X25519 public key, from its 32-byte Ed25519 node key; ValueError for a key that is not a
    valid curve point."""
    from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519
    from nacl.exceptions import CryptoError

    if not isinstance(ed25519_public, bytes) or len(ed25519_public) != PUBLIC_KEY_BYTES:
        raise ValueError("an Ed25519 public key is 32 bytes")
    try:
        return crypto_sign_ed25519_pk_to_curve25519(ed25519_public)
    except (CryptoError, RuntimeError, ValueError):
        raise ValueError("not a valid Ed25519 public key") from None


def x25519_private(ed25519_seed):
    """The X25519 private key of a host, from the 32-byte seed of its Ed25519 node key."""
    from nacl.bindings import crypto_sign_ed25519_sk_to_curve25519, crypto_sign_seed_keypair

    _, secret = crypto_sign_seed_keypair(ed25519_seed)
    return crypto_sign_ed25519_sk_to_curve25519(secret)


# --- sealing -----------------------------------------------------------------------------


def seal(host_public_key, fid, host, issued_at, values):
    """The sealed box of the plaintext, to the host whose Ed25519 node key is ``host_public_key``."""
    from nacl.public import PublicKey, SealedBox

    data = plaintext(fid, host, issued_at, values)
    return SealedBox(PublicKey(x25519_public(host_public_key))).encrypt(data)


def seal_deterministic(recipient_x25519, data, ephemeral_secret):
    """A sealed box made with a given ephemeral key, for the test vector only (RFC 9.12): the bytes
    libsodium's ``crypto_box_seal`` makes, ``epk || crypto_box(data, blake2b(epk || pk, 24), pk, esk)``."""
    from nacl.bindings import crypto_box, crypto_generichash_blake2b_salt_personal, crypto_scalarmult_base

    ephemeral_public = crypto_scalarmult_base(ephemeral_secret)
    nonce = crypto_generichash_blake2b_salt_personal(ephemeral_public + recipient_x25519, digest_size=24)
    return ephemeral_public + crypto_box(data, nonce, recipient_x25519, ephemeral_secret)


def open_sealed(x25519_secret, sealed):
    """The plaintext of ``sealed``; SecretError('undecryptable') when this key does not open it."""
    from nacl.exceptions import CryptoError
    from nacl.public import PrivateKey, SealedBox

    if not isinstance(sealed, bytes) or not SEAL_OVERHEAD_BYTES < len(sealed) <= MAX_SEALED_BYTES:
        raise SecretError("too_large" if isinstance(sealed, bytes) and len(sealed) > MAX_SEALED_BYTES
                          else "malformed", f"a sealed secret is {SEAL_OVERHEAD_BYTES + 1}..{MAX_SEALED_BYTES} "
                                            "bytes")
    try:
        return SealedBox(PrivateKey(x25519_secret)).decrypt(sealed)
    except CryptoError:
        raise SecretError("undecryptable", "the sealed secret does not open with this host's key: it was sealed "
                                           "to another host") from None


def open_for(x25519_secret, sealed, fid, host):
    """The secrets of ``sealed`` for ``fid`` on ``host`` (its node id): the map, or SecretError naming
    what is wrong (another host's box, another fid, another host named, a malformed map)."""
    got_fid, got_host, _, values = parse_plaintext(open_sealed(x25519_secret, sealed))
    if got_fid != fid:
        raise SecretError("wrong_fid", "the sealed secret names another function: secrets are bound to one fid")
    if got_host != host:
        raise SecretError("wrong_host", "the sealed secret names another host")
    return values


def owner_copy_host(owner_key):
    """The ``host`` of an owner's own copy: SHA-256 of its owner key, as if the owner key were a node key."""
    return hashlib.sha256(owner_key).digest()


SEALER_DOMAIN = b"ORB-SEALER-v1\x00"


def sealer_proof(owner, node_id):
    """The SEALER TLV value a peer that holds ``owner`` (its key) puts in ANNOUNCE: the owner key and its
    signature of the peer's node id, so a tracker may ask that peer to seal the owner's secrets (RFC 9.12)."""
    return owner.public_bytes + owner.sign(SEALER_DOMAIN + node_id)


def check_sealer_proof(value, node_id):
    """The owner key a SEALER TLV names for ``node_id``, or None when it is malformed or not signed by it."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not isinstance(value, bytes) or len(value) != PUBLIC_KEY_BYTES + SIGNATURE_BYTES:
        return None
    owner, signature = value[:PUBLIC_KEY_BYTES], value[PUBLIC_KEY_BYTES:]
    try:
        Ed25519PublicKey.from_public_bytes(owner).verify(signature, SEALER_DOMAIN + node_id)
    except (InvalidSignature, ValueError):
        return None
    return owner


# --- the owner's signature ---------------------------------------------------------------


def signed_bytes(fid, host, seq, sealed):
    """What the owner signs (RFC 9.12)."""
    _check_fid_host(fid, host)
    return DOMAIN + bytes([len(fid)]) + fid + host + _U64.pack(seq) + hashlib.sha256(sealed).digest()


def sign(key, fid, host, seq, sealed):
    """``key`` (anything with ``sign(bytes)``): the owner's signature of a sealed secret."""
    return key.sign(signed_bytes(fid, host, seq, sealed))


def verify(owner_key, signature, fid, host, seq, sealed):
    """True when ``signature`` is ``owner_key``'s signature of this sealed secret."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if len(signature) != SIGNATURE_BYTES or len(owner_key) != PUBLIC_KEY_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(owner_key).verify(signature, signed_bytes(fid, host, seq, sealed))
    except (InvalidSignature, ValueError):
        return False
    return True
