# -*- test-case-name: tests.test_deploy_statement -*-
"""
The owner's signed deploy statement (RFC Section 9.8).

An owner deploys a function by signing, with its Ed25519 owner key, a
statement that binds the fid, the manifest, the package size and the time
of issue to that key:

    signed-bytes = "ORB-DEPLOY-v1" || 0x00
                   || u8 len(fid) || fid            raw fid-bytes (33 in v1)
                   || owner_key                     32 bytes, raw Ed25519 public key
                   || SHA-256(manifest)             32 bytes, over the canonical JSON bytes
                   || u64 package_size              big-endian
                   || u64 issued_at                 big-endian Unix seconds

The 14-byte prefix separates deploy signatures from NAME signatures
(``ORB-NAME-v1\\0``) and any other use of the key, as Section 9.3 does for
NAME. Pure: no I/O, no reactor.

    sig = sign_deploy(key, fid, manifest_bytes, package_size, issued_at)
    verify_deploy(owner_key, sig, fid, manifest_bytes, package_size, issued_at)  # -> bool
"""

import hashlib
import struct

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from orb.protocol import fid as _fid
from orb.protocol.limits import PUBLIC_KEY_BYTES, SIGNATURE_BYTES

DEPLOY_PREFIX = b"ORB-DEPLOY-v1\x00"
_U64 = struct.Struct(">Q")
_MAX_U64 = 2**64 - 1


class DeployStatementError(ValueError):
    """A field of a deploy statement cannot be encoded (our caller's bug, or a peer's bad field)."""


@attrs.frozen
class DeployStatement:
    """What an owner signs to deploy one package."""

    fid: bytes  # raw fid-bytes
    owner_key: bytes  # raw 32-byte Ed25519 public key
    manifest: bytes  # the canonical JSON bytes of orb-manifest.json
    package_size: int
    issued_at: int  # Unix seconds

    def signed_bytes(self):
        """The exact bytes the owner key signs (RFC 9.8)."""
        try:
            _fid.check(self.fid)
        except _fid.FidError as e:
            raise DeployStatementError(str(e)) from None
        if not isinstance(self.owner_key, bytes) or len(self.owner_key) != PUBLIC_KEY_BYTES:
            raise DeployStatementError(f"owner_key is {PUBLIC_KEY_BYTES} raw bytes")
        if not isinstance(self.manifest, bytes):
            raise DeployStatementError("manifest is the canonical JSON bytes")
        for name in ("package_size", "issued_at"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_U64:
                raise DeployStatementError(f"{name} is a u64, not {value!r}")
        return b"".join([
            DEPLOY_PREFIX,
            bytes([len(self.fid)]), self.fid,
            self.owner_key,
            hashlib.sha256(self.manifest).digest(),
            _U64.pack(self.package_size),
            _U64.pack(self.issued_at),
        ])


def public_key_of(key):
    """The raw public key of an Ed25519 private key, or of an object with ``public_bytes`` (NodeKey)."""
    if isinstance(key, Ed25519PrivateKey):
        return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return key.public_bytes


def sign_deploy(key, fid, manifest, package_size, issued_at):
    """The owner's 64-byte signature of a deploy statement; ``key`` is anything with ``sign(bytes)``."""
    statement = DeployStatement(fid, public_key_of(key), manifest, package_size, issued_at)
    return key.sign(statement.signed_bytes())


def verify_deploy(owner_key, signature, fid, manifest, package_size, issued_at):
    """True when ``signature`` is ``owner_key``'s signature of that deploy statement; never raises on bad input."""
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        data = DeployStatement(fid, owner_key, manifest, package_size, issued_at).signed_bytes()
        Ed25519PublicKey.from_public_bytes(owner_key).verify(signature, data)
    except (DeployStatementError, InvalidSignature, ValueError, TypeError):
        return False
    return True
