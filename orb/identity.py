# -*- test-case-name: tests.test_identity -*-
"""
Node identity: an Ed25519 key kept in ``<data dir>/private/node.key``
(mode 0600), and a self-signed X.509 certificate that carries it.

node id = SHA-256(raw 32-byte public key). The certificate binds the TLS
session to that key; the handshake checks that HELLO's key equals it.
"""

import datetime
import os

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from orb.protocol.session import node_id_for

KEY_FILE = "node.key"


class IdentityError(Exception):
    """The key file exists but cannot be used."""


def private_dir(data_dir):
    path = os.path.join(data_dir, "private")
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_secret(path, data):
    """Write ``data`` to ``path`` with mode 0600 from the first byte on."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def create_secret(path, data):
    """Write ``data`` to a new file ``path``, mode 0600 whatever the umask; FileExistsError if anything is
    there (a key or a wallet is never overwritten), and a symlink there is not followed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


@attrs.frozen(repr=False)
class NodeKey:
    private_key: Ed25519PrivateKey
    # Derived once: a daemon asks for its node id on every handshake and every record it writes.
    public_bytes: bytes = attrs.field(init=False, eq=False)
    node_id: bytes = attrs.field(init=False, eq=False)

    def __attrs_post_init__(self):
        public = self.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        object.__setattr__(self, "public_bytes", public)
        object.__setattr__(self, "node_id", node_id_for(public))

    def __repr__(self):
        return f"<NodeKey {self.node_id.hex()[:16]}>"

    @classmethod
    def generate(cls):
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, data_dir):
        """The node's key: read from the data dir, or made and saved on first start."""
        path = os.path.join(private_dir(data_dir), KEY_FILE)
        if os.path.exists(path):
            with open(path, "rb") as f:
                raw = f.read()
            try:
                key = serialization.load_pem_private_key(raw, password=None)
            except ValueError as e:
                raise IdentityError(f"{path} is not a PEM private key: {e}") from None
            if not isinstance(key, Ed25519PrivateKey):
                raise IdentityError(f"{path} does not hold an Ed25519 key")
            if os.stat(path).st_mode & 0o077:
                os.chmod(path, 0o600)
            return cls(key)
        node_key = cls.generate()
        pem = node_key.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_secret(path, pem)
        return node_key

    def sign(self, data):
        return self.private_key.sign(data)

    def self_signed_certificate(self, now=None, days=3650):
        """A self-signed X.509 certificate whose subject key is the node key."""
        now = now or datetime.datetime.now(datetime.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "orb-" + self.node_id.hex()[:32])])
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.private_key.public_key())
            .serial_number(int.from_bytes(self.node_id[:16], "big") >> 1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .sign(self.private_key, None)
        )


def verify_signature(public_key_bytes, signature, data):
    """True when ``signature`` is a valid Ed25519 signature of ``data``."""
    from cryptography.exceptions import InvalidSignature

    try:
        Ed25519PublicKey.from_public_bytes(public_key_bytes).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True
